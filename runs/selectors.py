"""Reads for the run pages, each bound to one tenant through tenants.access.scoped()."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

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
from swrly.audit.events import event_types, key_life_events
from swrly.audit.models import AuditEvent
from swrly.audit.writer import chain_for
from swrly.providers import PROVIDER_NAMES
from tenants.access import scoped
from tenants.models import ProviderKey, Tenant

PAGE_SIZE = 50

# A run carries a key's fingerprint only if it was created while that key was in use, so a
# fingerprint's runs lie between its ProviderKey's first_seen_at and last_seen_at. Both are
# stamped in the run_create transaction a little after the run's created_at, and concurrent
# transactions (on hosts whose clocks differ slightly) may store them out of order: the slack
# absorbs that. Bounding the scan by time lets the (tenant, -created_at, -id) index narrow a
# fingerprint filter to the key's lifetime instead of the tenant's whole history.
FINGERPRINT_WINDOW_SLACK = timedelta(hours=1)
# The same idea for a run's audit events: all are written between its creation and its end.
RUN_EVENTS_SLACK = timedelta(hours=1)

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
    runs: list[Run]
    next_cursor: str | None


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _with_fingerprint(tenant: Tenant, runs: QuerySet[Run], fingerprint: str) -> QuerySet[Run]:
    """Runs that used a key whose fingerprint starts with `fingerprint`.

    The tenant's ProviderKey rows (one indexed lookup) name the provider, which is the JSON
    path to compare, and the key's lifetime, which bounds the scan (FINGERPRINT_WINDOW_SLACK).
    A fingerprint the tenant never used matches nothing without touching the runs table.
    """
    keys = (
        scoped(ProviderKey, tenant)
        .filter(fingerprint__startswith=fingerprint)
        .values_list("provider", "fingerprint", "first_seen_at", "last_seen_at")
    )
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


@dataclass(frozen=True)
class Detail:
    """One fact of a timeline entry; `kind` tells the page how to show the value."""

    name: str
    value: Any
    kind: str = ""  # "", "seconds", "time" or "fingerprint"


@dataclass(frozen=True)
class TimelineEntry:
    kind: str  # deposited, consumed, discarded, expired, missing, rejected, released, ended
    label: str
    at: datetime
    actor: str
    seq: int
    details: list[Detail] = field(default_factory=list)


@dataclass
class KeyTimeline:
    """What happened to one provider key of a run, in order."""

    provider: str
    hint: str = ""
    fingerprint: str = ""
    entries: list[TimelineEntry] = field(default_factory=list)


@dataclass
class RunHistory:
    """A run's audit events: per provider key, and the run's own (created, started, ended)."""

    keys: list[KeyTimeline]
    run_events: list[TimelineEntry]


_KEY_LABELS = {event.action: (event.kind, event.label) for event in key_life_events()}
_RUN_END = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled"}
_RUN_LABELS = {
    event.action: event.label
    for event in event_types()
    if event.label and not event.key_life and event.target == "run:<uuid>"
}


def _token_found(meta: dict) -> str:
    value = meta.get("token_found")
    if value is True:
        return "yes: the token was deleted from the key store"
    if value is False:
        return "no: no token was left to delete"
    return "unknown: the key store did not answer; the token expires at its TTL"


def _key_entry(event: AuditEvent) -> TimelineEntry:
    kind, label = _KEY_LABELS[event.action]
    meta = event.metadata
    details: list[Detail] = []
    if kind == "deposited":
        details += [Detail("By", event.actor), Detail("TTL", meta.get("ttl"), "seconds")]
        if isinstance(meta.get("ttl"), int):
            expires = event.created_at + timedelta(seconds=meta["ttl"])
            details.append(Detail("Token expires", expires, "time"))
        details += [
            Detail("Hint", meta.get("hint")),
            Detail("Fingerprint", meta.get("fingerprint"), "fingerprint"),
            Detail("Encryption key id", meta.get("encryption_key_id")),
        ]
    elif kind == "consumed":
        details += [
            Detail("Worker", meta.get("worker")),
            Detail("Encryption key id", meta.get("encryption_key_id")),
        ]
    elif kind == "discarded":
        details += [Detail("By", event.actor), Detail("Token found", _token_found(meta))]
    elif kind == "rejected":
        details += [Detail("Reason", meta.get("reason")), Detail("Worker", meta.get("worker"))]
    else:  # expired, missing
        details.append(Detail("Noticed by", event.actor))
    return TimelineEntry(
        kind=kind,
        label=label,
        at=event.created_at,
        actor=event.actor,
        seq=event.seq,
        details=[detail for detail in details if detail.value not in (None, "")],
    )


def _end_entry(event: AuditEvent, provider: str, taken: bool) -> TimelineEntry:
    status = _RUN_END[event.action]
    released = event.metadata.get("keys_released") or []
    details = [Detail("Run", status)]
    if event.metadata.get("error_code"):
        details.append(Detail("Error", event.metadata["error_code"]))
    if provider in released:
        kind, label = "released", "Released from the worker's memory"
    elif not taken:
        kind, label = "ended", "Run ended; the key never reached a worker"
    else:
        kind, label = "ended", "Run ended; not in the run's keys_released list"
    return TimelineEntry(
        kind=kind,
        label=label,
        at=event.created_at,
        actor=event.actor,
        seq=event.seq,
        details=details,
    )


def run_history(*, tenant: Tenant, run: Run, step_providers: list[str]) -> RunHistory:
    """The run's key lifecycle timeline, one list per provider, from its audit events: one query.

    Events are found by target (`run:<id>`) within the run's lifetime (RUN_EVENTS_SLACK), so
    the (tenant, -created_at) index bounds the scan.
    """
    events = scoped(AuditEvent, tenant).filter(
        chain=chain_for(tenant),
        target=f"run:{run.pk}",
        created_at__gte=run.created_at - RUN_EVENTS_SLACK,
    )
    if run.finished_at is not None:
        events = events.filter(created_at__lte=run.finished_at + RUN_EVENTS_SLACK)
    events = list(events.order_by("seq"))

    providers = set(step_providers) | set(run.key_fingerprints)
    providers |= {e.metadata.get("provider") for e in events if e.action in _KEY_LABELS}
    keys = {
        provider: KeyTimeline(
            provider=provider,
            hint=run.key_fingerprints.get(provider, {}).get("hint", ""),
            fingerprint=run.key_fingerprints.get(provider, {}).get("fingerprint", ""),
        )
        for provider in sorted(p for p in providers if isinstance(p, str) and p)
    }
    taken: set[str] = set()
    run_events: list[TimelineEntry] = []
    for event in events:
        meta = event.metadata
        if event.action in _KEY_LABELS and meta.get("provider") in keys:
            entry = _key_entry(event)
            if entry.kind == "consumed":
                taken.add(meta["provider"])
            keys[meta["provider"]].entries.append(entry)
        elif event.action in _RUN_END:
            for provider, timeline in keys.items():
                timeline.entries.append(_end_entry(event, provider, provider in taken))
            run_events.append(
                TimelineEntry(
                    kind="ended",
                    label=f"Run {_RUN_END[event.action]}",
                    at=event.created_at,
                    actor=event.actor,
                    seq=event.seq,
                    details=[Detail("Error", meta["error_code"])] if meta.get("error_code") else [],
                )
            )
        elif event.action in _RUN_LABELS:
            details = [Detail("Worker", meta["worker"])] if meta.get("worker") else []
            run_events.append(
                TimelineEntry(
                    kind=event.action.removeprefix("run."),
                    label=_RUN_LABELS[event.action],
                    at=event.created_at,
                    actor=event.actor,
                    seq=event.seq,
                    details=details,
                )
            )
    return RunHistory(keys=list(keys.values()), run_events=run_events)


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


@dataclass
class ProviderKeyRow:
    key: ProviderKey
    run_count: int
    replaced_by: ProviderKey | None = None

    @property
    def used_after_replacement(self) -> bool:
        """True when this key still ran runs after its replacement first appeared."""
        return (
            self.replaced_by is not None and self.key.last_seen_at > self.replaced_by.first_seen_at
        )


def provider_key_history(*, tenant: Tenant) -> dict[str, list[ProviderKeyRow]]:
    """The tenant's provider keys per provider, oldest first, each with its successor: one query.

    `run_count` counts the runs whose key_fingerprints hold the key. It is a correlated
    subquery per key, bounded by the key's lifetime (FINGERPRINT_WINDOW_SLACK) on the
    (tenant, -created_at, -id) index; the JSON value itself is not indexed, so its cost grows
    with the number of runs made while the key was in use (about 0.4 s for a million runs on
    PostgreSQL). `use_count` is the counter kept at deposit time; the two differ only if runs
    were deleted.
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
    keys = (
        scoped(ProviderKey, tenant)
        .annotate(run_count=Coalesce(Subquery(runs.values("n")), 0))
        .order_by("provider", "first_seen_at", "fingerprint")
    )
    grouped: dict[str, list[ProviderKeyRow]] = defaultdict(list)
    for key in keys:
        rows = grouped[key.provider]
        if rows:
            rows[-1].replaced_by = key
        rows.append(ProviderKeyRow(key=key, run_count=key.run_count))
    return dict(grouped)
