"""Reads for the run pages, each bound to one tenant through tenants.access.scoped()."""

from __future__ import annotations

import re
from datetime import UTC, date, timedelta

from django.db.models import (
    Count,
    DateTimeField,
    ExpressionWrapper,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from runs.models import Run, RunStatus, StepRun, Workflow
from swrly import metrics
from swrly.audit.models import AuditEvent
from swrly.audit.writer import chain_for
from swrly.custody.selectors import FINGERPRINT_WINDOW_SLACK, provider_key_windows
from swrly.providers import PROVIDER_NAMES
from swrly.web.filters import day_start
from swrly.web.pagination import Cursor, Keyset, KeysetPage, keyset_page
from tenants.access import scoped
from tenants.models import Tenant

PAGE_SIZE = 50
# The runs list's order, newest first: the (tenant, -created_at, -id) index.
RUN_KEYSET = Keyset("created_at", "pk")

_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_]*")


# --- The runs list ---------------------------------------------------------------------------


def runs_with_fingerprint(
    *, tenant: Tenant, runs: QuerySet[Run], fingerprint: str
) -> QuerySet[Run]:
    """Runs that used a key whose fingerprint starts with `fingerprint`.

    The tenant's ProviderKey rows (one indexed lookup) name the provider, which is the JSON
    path to compare, and the key's lifetime, which bounds the scan (FINGERPRINT_WINDOW_SLACK).
    A fingerprint the tenant never used matches nothing without touching the runs table.
    """
    keys = provider_key_windows(tenant=tenant, fingerprint_prefix=fingerprint)
    match = Q()
    for provider, value, first_seen, last_seen in keys:
        if not _PROVIDER_NAME.fullmatch(provider):
            continue
        match |= Q(
            **{f"key_fingerprints__{provider}__fingerprint": value},
            created_at__gte=first_seen - FINGERPRINT_WINDOW_SLACK,
            created_at__lte=last_seen + FINGERPRINT_WINDOW_SLACK,
        )
    return runs.filter(match) if match else runs.none()


def run_page(
    *, tenant: Tenant, runs: QuerySet[Run], cursor: Cursor | None, size: int = PAGE_SIZE
) -> KeysetPage[Run]:
    """One page of `runs` (the tenant's, filtered), newest first, past `cursor`: one query.

    Step counts and token sums are correlated subqueries on StepRun's (run, position) index,
    computed only for the rows of the page; prompts, inputs and outputs are not loaded.
    """
    steps = scoped(StepRun, tenant).filter(run=OuterRef("pk")).order_by().values("run")
    rows = runs.only(
        "id",
        "tenant_id",
        "workflow_name",
        "status",
        "error_code",
        "triggered_by",
        "key_fingerprints",
        "created_at",
        "started_at",
        "finished_at",
    ).annotate(
        step_count=Coalesce(Subquery(steps.annotate(n=Count("pk")).values("n")), 0),
        token_total=Subquery(
            steps.annotate(
                t=Sum(Coalesce("input_tokens", 0) + Coalesce("output_tokens", 0))
            ).values("t")
        ),
    )
    return keyset_page(rows, RUN_KEYSET, cursor, size)


def workflows_for_filter(*, tenant: Tenant) -> list[Workflow]:
    """The tenant's workflows by name, id and name only (the runs filter's choices)."""
    return list(scoped(Workflow, tenant).only("id", "name").order_by("name", "id"))


# --- Workflows ---------------------------------------------------------------------------------

# The workflows list's order, newest first: the (tenant, -created_at) index.
WORKFLOW_KEYSET = Keyset("created_at", "pk")
WORKFLOW_HISTORY_LIMIT = 100


def workflow_page(
    *, tenant: Tenant, cursor: Cursor | None, size: int = PAGE_SIZE
) -> KeysetPage[Workflow]:
    """One page of the tenant's workflows, newest first, each with its latest run: one query.

    The latest run (`last_run_id`, `last_run_at`) is a correlated subquery per row of the page.
    """
    latest = scoped(Run, tenant).filter(workflow=OuterRef("pk")).order_by("-created_at", "-id")[:1]
    rows = scoped(Workflow, tenant).annotate(
        last_run_id=Subquery(latest.values("id")),
        last_run_at=Subquery(latest.values("created_at")),
    )
    return keyset_page(rows, WORKFLOW_KEYSET, cursor, size)


def workflow_history(*, tenant: Tenant, workflow: Workflow) -> list[AuditEvent]:
    """The workflow's own audit events (`workflow.*`), newest first, at most the latest 100.

    Found by target within the workflow's lifetime, so the (tenant, -created_at) index bounds
    the scan.
    """
    return list(
        scoped(AuditEvent, tenant)
        .filter(
            chain=chain_for(tenant),
            target=f"workflow:{workflow.pk}",
            action__startswith="workflow.",
            created_at__gte=workflow.created_at - timedelta(minutes=1),
        )
        .order_by("-seq")[:WORKFLOW_HISTORY_LIMIT]
    )


# --- One run ---------------------------------------------------------------------------------


def run_for_detail_queryset(*, tenant: Tenant, include_content: bool) -> QuerySet[Run]:
    """The tenant's runs as the detail page loads them.

    Without `include_content` the run's input and its frozen steps (which hold the prompts)
    are never read from the database.
    """
    runs = scoped(Run, tenant)
    return runs if include_content else runs.defer("input", "steps")


def run_steps(*, tenant: Tenant, run: Run, include_content: bool) -> list[StepRun]:
    """The run's steps in order; their outputs only with `include_content`."""
    steps = scoped(StepRun, tenant).filter(run=run).order_by("position")
    return list(steps if include_content else steps.defer("output_text"))


# --- Dashboard -------------------------------------------------------------------------------


def runs_per_day(*, tenant: Tenant, since: date) -> dict[tuple[date, str], int]:
    """Runs created per UTC day and status since `since`: one grouped query."""
    rows = (
        scoped(Run, tenant)
        .filter(created_at__gte=day_start(since))
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "status")
        .annotate(n=Count("pk"))
        .order_by("day", "status")
    )
    return {(row["day"], row["status"]): row["n"] for row in rows}


def runs_needing_attention(*, tenant: Tenant, limit: int = 10) -> list[Run]:
    """The newest failed runs with their error codes (the (tenant, status, time) index)."""
    return list(
        scoped(Run, tenant)
        .filter(status=RunStatus.FAILED)
        .only(
            "id", "tenant_id", "workflow_name", "error_code", "created_at", "finished_at", "status"
        )
        .order_by("-created_at", "-id")[:limit]
    )


# --- Provider keys ---------------------------------------------------------------------------


def key_run_count(tenant: Tenant) -> Coalesce:
    """How many of the tenant's runs used a ProviderKey row (OuterRef): for the key history.

    Registered with swrly.custody (runs.apps), which lists the keys. It is a correlated
    subquery per key, bounded by the key's lifetime (FINGERPRINT_WINDOW_SLACK) on the
    (tenant, -created_at, -id) index; the JSON value itself is not indexed, so its cost grows
    with the number of runs made while the key was in use (about 0.4 s for a million runs on
    PostgreSQL).
    """
    in_lifetime = scoped(Run, tenant).filter(
        created_at__gte=ExpressionWrapper(
            OuterRef("first_seen_at") - Value(FINGERPRINT_WINDOW_SLACK),
            output_field=DateTimeField(),
        ),
        created_at__lte=ExpressionWrapper(
            OuterRef("last_seen_at") + Value(FINGERPRINT_WINDOW_SLACK),
            output_field=DateTimeField(),
        ),
    )
    uses_key = Q()
    for provider in PROVIDER_NAMES:
        in_lifetime = in_lifetime.annotate(
            **{f"fp_{provider}": KT(f"key_fingerprints__{provider}__fingerprint")}
        )
        uses_key |= Q(**{f"fp_{provider}": OuterRef("fingerprint")})
    runs = in_lifetime.filter(uses_key).order_by().values("tenant").annotate(n=Count("pk"))
    return Coalesce(Subquery(runs.values("n")), 0)


def queue_gauges() -> dict[str, tuple[str, float | None]]:
    """The queue as /metrics reports it: queued runs and the oldest one's wait (one query).

    From the database, whatever the broker: a queued run is one no worker has claimed, and the
    oldest one's age against BYOK_TOKEN_TTL is what says whether runs are about to expire in
    the queue (the broker's own length is its exporter's to report).
    """
    queued = Run.objects.filter(status=RunStatus.QUEUED).aggregate(
        count=Count("pk"), oldest=Min("created_at")
    )
    oldest = queued["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
    return {
        "swrly_runs_queued": ("Runs queued, not yet claimed by a worker.", queued["count"]),
        "swrly_runs_queued_oldest_age_seconds": (
            "How long the oldest queued run has waited (0 when none is queued).",
            max(age, 0.0),
        ),
    }


def register_queue_gauges() -> None:
    """Let /metrics report queue_gauges() at each scrape."""
    metrics.register_scrape_gauges(queue_gauges)
