import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from swrly.audit.writer import Actor
from tenants.models import Tenant
from tenants.policy import key_ttl, queue_wait_problem
from tenants.services import RUN_LIMITS, tenant_limits_set


def _limit(value: str) -> int | None:
    """A limit argument: a count of runs (0 or more), or `default` (the platform's setting)."""
    if value == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Show or set a tenant's run limits (docs/operations.md, 'Fairness and backpressure'): "
        "runs queued and running at once. A number, or `default` for the platform's setting. "
        "Audited as tenant.limits_changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--max-queued-runs",
            type=_limit,
            default=argparse.SUPPRESS,
            metavar="N|default",
            help="Runs waiting for a worker (RUN_MAX_QUEUED_PER_TENANT by default).",
        )
        parser.add_argument(
            "--max-running-runs",
            type=_limit,
            default=argparse.SUPPRESS,
            metavar="N|default",
            help="Runs running at once (RUN_MAX_RUNNING_PER_TENANT by default).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['slug']!r}")
        # An option not given is absent (argparse.SUPPRESS); `default` is None.
        given = {name: options[name] for name in RUN_LIMITS if name in options}
        if given:
            try:
                changed = tenant_limits_set(
                    tenant=tenant, actor=Actor.system("tenant-limits"), **given
                )
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            self.stdout.write(f"Changed: {', '.join(sorted(changed)) or 'nothing'}.")
        for name, own, effective in (
            ("max_queued_runs", tenant.max_queued_runs, tenant.queued_runs_limit),
            ("max_running_runs", tenant.max_running_runs, tenant.running_runs_limit),
        ):
            source = "the tenant's own" if own is not None else "the platform default"
            self.stdout.write(f"{name}: {effective} ({source})")
        # The queue-wait budget against the key TTL the tenant's runs get (its policy may lower
        # it below BYOK_TOKEN_TTL, which swrly.W030 checks the platform's limits against).
        ttl = key_ttl(tenant)
        if problem := queue_wait_problem(tenant, ttl):
            self.stderr.write(
                f"Warning: {problem}; lower the queued limit or raise the running one."
            )
