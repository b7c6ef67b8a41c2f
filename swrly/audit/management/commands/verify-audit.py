from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from swrly.audit.models import PLATFORM_CHAIN, tenant_model
from swrly.audit.verifier import ChainReport, audit_chains, audit_verify_chain


def describe(report: ChainReport) -> str:
    """What a verification covered, in one line."""
    events = (
        f"events #{report.from_seq}-#{report.to_seq} ({report.checked})"
        if report.checked
        else "no events"
    )
    if report.checkpoint is None:
        return f"{events}; no signed checkpoint yet"
    cp = report.checkpoint
    return (
        f"{events}; {report.checkpoints_verified} checkpoint signature(s), newest at "
        f"#{cp.seq} signed by key {cp.key_id} at {cp.created_at.isoformat()}"
    )


class Command(BaseCommand):
    help = (
        "Verify the audit chains from their newest signed checkpoint (or every event with "
        "--full); exit non-zero naming the first broken event or checkpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG")
        parser.add_argument(
            "--full",
            action="store_true",
            help="Recompute every event from #1, not only those after the newest checkpoint.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = tenant_model().objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
        names = {str(pk): slug for pk, slug in tenant_model().objects.values_list("pk", "slug")}
        names[PLATFORM_CHAIN] = PLATFORM_CHAIN
        broken = []
        for chain in audit_chains(tenant):
            report = audit_verify_chain(chain, full=options["full"])
            label = names.get(chain, chain)
            if report.ok:
                self.stdout.write(f"ok      {label}: {describe(report)} [{report.mode}]")
                continue
            if report.broken_checkpoint_id is not None:
                line = f"BROKEN  {label}: {report.reason}"
            else:
                where = f"event id {report.broken_event_id}" if report.broken_event_id else "end"
                line = f"BROKEN  {label}: at #{report.broken_seq} ({where}): {report.reason}"
            self.stdout.write(line)
            broken.append(line)
        if broken:
            raise CommandError(f"{len(broken)} audit chain(s) broken; first: {broken[0]}")
