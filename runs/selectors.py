"""Reads for the run pages, each bound to one tenant through tenants.access.scoped()."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import (
    Count,
    DateTimeField,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, TruncDate

from runs.models import Run, RunStatus, StepRun, Workflow
from swrly.custody.selectors import FINGERPRINT_WINDOW_SLACK, provider_key_windows
from swrly.providers import PROVIDER_NAMES
from tenants.access import scoped
from tenants.models import Tenant

PAGE_SIZE = 50

_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_]*")


# --- The runs list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCursor:
    """A keyset position in the runs list: the (created_at, id) of the last run shown."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.astimezone(UTC).isoformat()}|{self.id.hex}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> RunCursor | None:
        """The cursor in `value`, or None when it is missing or malformed."""
        if not value or len(value) > 200:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            when, _, pk = raw.partition("|")
            created_at = datetime.fromisoformat(when)
            if created_at.tzinfo is None:
                return None
            return cls(created_at=created_at, id=uuid.UUID(hex=pk))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None


@dataclass(frozen=True)
class RunFilters:
    status: str = ""
    workflow_id: uuid.UUID | None = None
    created_from: date | None = None
    created_to: date | None = None  # inclusive
    fingerprint: str = ""  # lowercase hex: a whole fingerprint or its first characters

    @property
    def active(self) -> bool:
        return any(
            (self.status, self.workflow_id, self.created_from, self.created_to, self.fingerprint)
        )


@dataclass
class RunPage:
    runs: Sequence[Run]
    next_cursor: str | None


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _with_fingerprint(tenant: Tenant, runs: QuerySet[Run], fingerprint: str) -> QuerySet[Run]:
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


def runs_filtered(*, tenant: Tenant, filters: RunFilters) -> QuerySet[Run]:
    """The tenant's runs that match the list filters (not yet ordered or paged)."""
    runs = scoped(Run, tenant)
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.workflow_id:
        runs = runs.filter(workflow_id=filters.workflow_id)
    if filters.created_from:
        runs = runs.filter(created_at__gte=_day_start(filters.created_from))
    if filters.created_to:
        runs = runs.filter(created_at__lt=_day_start(filters.created_to + timedelta(days=1)))
    if filters.fingerprint:
        runs = _with_fingerprint(tenant, runs, filters.fingerprint)
    return runs


def run_page(
    *, tenant: Tenant, filters: RunFilters, before: RunCursor | None, size: int = PAGE_SIZE
) -> RunPage:
    """One page of runs, newest first, after the keyset cursor `before`: one query.

    Step counts and token sums are correlated subqueries on StepRun's (run, position) index,
    computed only for the rows of the page; prompts, inputs and outputs are not loaded.
    """
    runs = runs_filtered(tenant=tenant, filters=filters)
    if before is not None:
        runs = runs.filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.id)
        )
    steps = scoped(StepRun, tenant).filter(run=OuterRef("pk")).order_by().values("run")
    rows = list(
        runs.only(
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
        )
        .annotate(
            step_count=Coalesce(Subquery(steps.annotate(n=Count("pk")).values("n")), 0),
            token_total=Subquery(
                steps.annotate(
                    t=Sum(Coalesce("input_tokens", 0) + Coalesce("output_tokens", 0))
                ).values("t")
            ),
        )
        .order_by("-created_at", "-id")[: size + 1]
    )
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = RunCursor(created_at=last.created_at, id=last.pk).encode()
    return RunPage(runs=rows, next_cursor=next_cursor)


def workflows_for_filter(*, tenant: Tenant) -> list[Workflow]:
    """The tenant's workflows by name, id and name only (the runs filter's choices)."""
    return list(scoped(Workflow, tenant).only("id", "name").order_by("name", "id"))


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
        .filter(created_at__gte=_day_start(since))
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
