from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.audit import audit_chains, audit_verify_chain
from tenants.models import PLATFORM_CHAIN, Tenant


class Command(BaseCommand):
    help = "Verify the audit hash chains; exit non-zero naming the first broken event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
        names = {str(pk): slug for pk, slug in Tenant.objects.values_list("pk", "slug")}
        names[PLATFORM_CHAIN] = PLATFORM_CHAIN
        broken = []
        for chain in audit_chains(tenant):
            report = audit_verify_chain(chain)
            label = names.get(chain, chain)
            if report.ok:
                self.stdout.write(f"ok      {label}: {report.checked} events")
            else:
                where = f"event id {report.broken_event_id}" if report.broken_event_id else "end"
                line = f"BROKEN  {label}: at #{report.broken_seq} ({where}): {report.reason}"
                self.stdout.write(line)
                broken.append(line)
        if broken:
            raise CommandError(f"{len(broken)} audit chain(s) broken; first: {broken[0]}")
