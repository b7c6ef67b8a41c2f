"""Reads of key custody, each bound to one tenant through tenants.access.scoped().

The tenant's provider keys (with the one successor rule), the platform's encryption-key
rotations as a tenant sees them, and the key lifecycle timeline of one run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Expression, F, OuterRef, Q, QuerySet, Subquery, Window
from django.db.models.functions import Coalesce, Lead

from swrly.audit.events import event_types, key_life_events
from swrly.audit.models import AuditEvent
from swrly.audit.writer import chain_for
from swrly.custody.models import BlockedKey, KeyRotation, KeyRotationTenant, ProviderKey
from swrly.keys.fingerprint import V2_PREFIX
from tenants.access import scoped
from tenants.models import Tenant

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

# A run carries a key's fingerprint only if it was created while that key was in use, so a
# fingerprint's runs lie between its ProviderKey's first_seen_at and last_seen_at. Both are
# stamped in the run_create transaction a little after the run's created_at, and concurrent
# transactions (on hosts whose clocks differ slightly) may store them out of order: the slack
# absorbs that. Bounding the scan by time lets the runs' (tenant, -created_at, -id) index
# narrow a fingerprint filter to the key's lifetime instead of the tenant's whole history.
FINGERPRINT_WINDOW_SLACK = timedelta(hours=1)
# The same idea for a run's audit events: all are written between its creation and its end.
RUN_EVENTS_SLACK = timedelta(hours=1)


# --- Encryption-key rotations ----------------------------------------------------------------


def key_rotations(*, tenant: Tenant, limit: int | None = None) -> list[KeyRotation]:
    """The platform's encryption-key rotations, newest first, as `tenant` sees them.

    Every rotation is listed (each one changed the key new tokens are sealed with), with
    `tenant_rewrapped`: how many of this tenant's tokens it rewrapped, 0 when none. The
    platform-wide counts of a rotation describe other tenants too and are not shown to tenants.
    One query.
    """
    mine = scoped(KeyRotationTenant, tenant).filter(rotation=OuterRef("pk")).values("rewrapped")
    rotations = KeyRotation.objects.annotate(
        tenant_rewrapped=Coalesce(Subquery(mine[:1]), 0)
    ).order_by("-started_at", "-id")
    return list(rotations[:limit] if limit else rotations)


# --- Provider keys ---------------------------------------------------------------------------


class Successor(TypedDict):
    """The annotations provider_keys_with_successor() adds (None for a provider's current key)."""

    successor_fingerprint: str | None
    successor_hint: str | None
    successor_first_seen_at: datetime | None


def provider_keys_with_successor(
    keys: QuerySet[ProviderKey],
) -> QuerySet[WithAnnotations[ProviderKey, Successor]]:
    """`keys` oldest first per provider, each annotated with its successor: the rule, once.

    A key's successor is the next key of the same provider by first use (ties by fingerprint):
    `successor_fingerprint`, `successor_hint` and `successor_first_seen_at`, None for the
    current key. Window functions, so it stays one query.
    """

    def successor(name: str) -> Window:
        return Window(
            Lead(name),
            partition_by=[F("provider")],
            order_by=[F("first_seen_at").asc(), F("fingerprint").asc()],
        )

    return keys.annotate(
        successor_fingerprint=successor("fingerprint"),
        successor_hint=successor("hint"),
        successor_first_seen_at=successor("first_seen_at"),
    ).order_by("provider", "first_seen_at", "fingerprint")


def provider_key_windows(
    *, tenant: Tenant, fingerprint_prefix: str
) -> list[tuple[str, str, datetime, datetime]]:
    """(provider, fingerprint, first_seen_at, last_seen_at) of the tenant's keys whose
    fingerprint starts with `fingerprint_prefix`: one indexed query. Bare hex matches both
    versions (a legacy fingerprint, or a v2 one without its `v2:`)."""
    match = Q(fingerprint__startswith=fingerprint_prefix)
    if not fingerprint_prefix.startswith(V2_PREFIX):
        match |= Q(fingerprint__startswith=V2_PREFIX + fingerprint_prefix)
    return list(
        scoped(ProviderKey, tenant)
        .filter(match)
        .values_list("provider", "fingerprint", "first_seen_at", "last_seen_at")
    )


# How many runs used a key, as an expression over the ProviderKey row (OuterRef) for a tenant.
# Runs are counted by the runs app, which sits above custody and registers the counter
# (runs.apps): custody never imports runs.
KeyRunCount = Callable[[Tenant], Expression]
_key_run_count: KeyRunCount | None = None


def register_key_run_count(counter: KeyRunCount) -> None:
    global _key_run_count
    _key_run_count = counter


@dataclass(frozen=True)
class KeySuccessor:
    """The key that replaced another: the next one first seen for the same provider."""

    fingerprint: str
    hint: str
    first_seen_at: datetime


@dataclass(frozen=True)
class BlockedState:
    """A key's blocklist entry, and what happened to the key after it was blocked."""

    at: datetime
    by: str
    reason: str
    # Runs refused because they presented the key (`key.blocked` events of the entry).
    refused_runs: int = 0


@dataclass
class ProviderKeyRow:
    key: ProviderKey
    run_count: int
    # The next key of the provider by first use (the API's and the evidence bundle's
    # `replaced_by`). A later key is not a replacement: keys are often used side by side, so
    # the page shows periods of use instead and raises no alarm from this.
    replaced_by: KeySuccessor | None = None
    blocked: BlockedState | None = None
    # Where the key's period of use lies on its provider's shared time axis, in per mille
    # (0-1000) of the axis: from its first use to its last.
    bar_start: int = 0
    bar_width: int = 1000
    blocked_mark: int | None = None  # where on that axis it was blocked

    @property
    def used_after_replacement(self) -> bool:
        """True when this key still ran runs after the next key first appeared (the evidence
        bundle's field; not an alarm: two keys in use side by side is ordinary)."""
        return (
            self.replaced_by is not None and self.key.last_seen_at > self.replaced_by.first_seen_at
        )

    @property
    def used_after_block(self) -> bool:
        """True when a run was given this key after its blocklist entry was made: alarming."""
        return self.blocked is not None and self.key.last_seen_at > self.blocked.at

    @property
    def alarm(self) -> bool:
        """Used after it was blocked, or presented again since (and refused): someone still
        holds a key registered as compromised."""
        return self.used_after_block or bool(self.blocked and self.blocked.refused_runs)


@dataclass
class ProviderKeyAxis:
    """One provider's keys on a shared time axis: from the first first use to the last last use
    (or the last block, when later)."""

    provider: str
    start: datetime
    end: datetime
    rows: list[ProviderKeyRow]

    @property
    def alarms(self) -> int:
        """Keys of the provider with an alarm: used, or presented, after they were blocked."""
        return sum(1 for row in self.rows if row.alarm)


_AXIS = 1000  # per mille: the bars' SVG viewBox is 1000 wide


def _on_axis(when: datetime, start: datetime, span: float) -> int:
    return round((when - start).total_seconds() / span * _AXIS) if span else 0


def _place(axis: ProviderKeyAxis) -> None:
    """Set each row's bar on the axis (a key used once still gets a visible sliver)."""
    span = (axis.end - axis.start).total_seconds()
    for row in axis.rows:
        if not span:
            row.bar_start, row.bar_width = 0, _AXIS
        else:
            row.bar_start = min(_on_axis(row.key.first_seen_at, axis.start, span), _AXIS - 6)
            end = _on_axis(row.key.last_seen_at, axis.start, span)
            row.bar_width = max(end - row.bar_start, 6)
        if row.blocked is not None:
            mark = _on_axis(row.blocked.at, axis.start, span) if span else _AXIS
            row.blocked_mark = max(0, min(mark, _AXIS - 4))


def _refused_runs(tenant: Tenant) -> dict[str, int]:
    """Runs refused per blocklist entry (`key.blocked` events by target): one grouped query on
    the (tenant, action) index."""
    rows = (
        scoped(AuditEvent, tenant)
        .filter(chain=chain_for(tenant), action="key.blocked")
        .values("target")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["target"].removeprefix("blocked_key:"): row["n"] for row in rows}


def provider_key_history(*, tenant: Tenant) -> dict[str, ProviderKeyAxis]:
    """The tenant's provider keys per provider, oldest first, on a shared time axis per
    provider, each with its blocklist state: three queries, however many keys.

    `run_count` counts the runs whose key_fingerprints hold the key (the counter the runs app
    registers: a correlated subquery per key bounded by the key's lifetime). `use_count` is the
    counter kept at deposit time; the two differ only if runs were deleted. Fingerprints are
    per tenant (v2), so a key used in two tenants cannot be recognised as one (docs/security.md).
    """
    if _key_run_count is None:
        raise ImproperlyConfigured("no key run counter registered: is the runs app installed?")
    run_count = _key_run_count(tenant)
    keys = provider_keys_with_successor(scoped(ProviderKey, tenant)).annotate(run_count=run_count)
    blocked = {(b.provider, b.fingerprint): b for b in blocked_keys(tenant=tenant)}
    refused = _refused_runs(tenant) if blocked else {}
    grouped: dict[str, list[ProviderKeyRow]] = defaultdict(list)
    for key in keys:
        successor = None
        fingerprint, hint, first_seen_at = (
            key.successor_fingerprint,
            key.successor_hint,
            key.successor_first_seen_at,
        )
        if fingerprint is not None and hint is not None and first_seen_at is not None:
            successor = KeySuccessor(
                fingerprint=fingerprint, hint=hint, first_seen_at=first_seen_at
            )
        entry = blocked.get((key.provider, key.fingerprint))
        state = None
        if entry is not None:
            state = BlockedState(
                at=entry.created_at,
                by=entry.created_by,
                reason=entry.reason,
                refused_runs=refused.get(str(entry.pk), 0),
            )
        grouped[key.provider].append(
            ProviderKeyRow(key=key, run_count=key.run_count, replaced_by=successor, blocked=state)
        )
    history = {}
    for provider, rows in grouped.items():
        ends = [row.key.last_seen_at for row in rows]
        ends += [row.blocked.at for row in rows if row.blocked is not None]
        axis = ProviderKeyAxis(
            provider=provider,
            start=min(row.key.first_seen_at for row in rows),
            end=max(ends),
            rows=rows,
        )
        _place(axis)
        history[provider] = axis
    return history


# --- One run's key lifecycle -----------------------------------------------------------------


class RunRecord(Protocol):
    """What the timeline reads of a run (runs.models.Run)."""

    pk: UUID
    created_at: datetime
    finished_at: datetime | None
    key_fingerprints: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Detail:
    """One fact of a timeline entry; `kind` tells the page how to show the value."""

    name: str
    value: Any
    kind: str = ""  # "", "seconds", "time", "fingerprint" or "rotation" (a rotation's id)


@dataclass(frozen=True)
class TimelineEntry:
    # deposited, rewrapped, consumed, discarded, expired, missing, rejected, released, ended
    kind: str
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
    # Whether the key store still holds the key: "held", "deleted" (the worker took it with
    # GETDEL), "discarded" (the run was cancelled), "expired" (its TTL ran out) or "" (no deposit).
    store_state: str = ""
    store_text: str = ""
    store_at: datetime | None = None
    # The allow-listed destination the worker was told the key may only go to (key.consumed).
    destination: str = ""


_STORE_TEXTS = {
    "held": "held in the key store until",
    "deleted": "deleted from the key store at",
    "discarded": "discarded from the key store at",
    "expired": "expired in the key store at",
}


def _settle_store(timeline: KeyTimeline) -> None:
    """Set the timeline's key store state from its entries.

    A deposit's "Stored key expires" is only shown while the key is still held: a taken,
    discarded or expired key's TTL no longer matters.
    """
    ends = {"consumed": "deleted", "discarded": "discarded", "expired": "expired"}
    state, at = "", None
    for entry in timeline.entries:
        if entry.kind == "deposited":
            expires = next((d.value for d in entry.details if d.name == "Stored key expires"), None)
            state, at = "held", expires
        elif entry.kind in ends and state in ("held", ""):
            state, at = ends[entry.kind], entry.at
    timeline.store_state = state
    timeline.store_text = _STORE_TEXTS.get(state, "")
    timeline.store_at = at
    if state in ("deleted", "discarded", "expired"):
        timeline.entries = [
            replace(
                entry,
                details=[
                    Detail(f"Stored key {state}", at, "time")
                    if d.name == "Stored key expires"
                    else d
                    for d in entry.details
                ],
            )
            if entry.kind == "deposited"
            else entry
            for entry in timeline.entries
        ]


@dataclass
class RunHistory:
    """A run's audit events: per provider key, and the run's own (created, started, ended)."""

    keys: list[KeyTimeline]
    run_events: list[TimelineEntry]
    # Who asked for the run, from its run.created event ("" when not recorded).
    caller_ip: str = ""
    caller_user_agent: str = ""


_KEY_LABELS = {event.action: (event.kind, event.label) for event in key_life_events()}
_RUN_END = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled"}
_RUN_LABELS = {
    event.action: event.label
    for event in event_types()
    if event.label and not event.key_life and event.target == "run:<uuid>"
}


def _token_found(meta: dict[str, Any]) -> str:
    value = meta.get("token_found")
    if value is True:
        return "yes: the stored key was deleted from the key store"
    if value is False:
        return "no: no stored key was left to delete"
    return "unknown: the key store did not answer; the stored key expires at its TTL"


def _key_entry(event: AuditEvent) -> TimelineEntry:
    kind, label = _KEY_LABELS[event.action]
    meta = event.metadata
    details: list[Detail] = []
    if kind == "deposited":
        details += [Detail("By", event.actor), Detail("TTL", meta.get("ttl"), "seconds")]
        if isinstance(meta.get("ttl"), int):
            expires = event.created_at + timedelta(seconds=meta["ttl"])
            details.append(Detail("Stored key expires", expires, "time"))
        details += [
            Detail("Hint", meta.get("hint")),
            Detail("Fingerprint", meta.get("fingerprint"), "fingerprint"),
            Detail("Encryption key id", meta.get("encryption_key_id")),
        ]
    elif kind == "rewrapped":
        details += [
            Detail("Rotation", meta.get("rotation"), "rotation"),
            Detail("By", event.actor),
            Detail("From encryption key id", meta.get("from_key_id")),
            Detail("To encryption key id", meta.get("to_key_id")),
        ]
    elif kind == "consumed":
        details += [
            Detail("Worker", meta.get("worker")),
            Detail("Encryption key id", meta.get("encryption_key_id")),
            Detail("May only go to", meta.get("destination")),
        ]
    elif kind == "discarded":
        details += [Detail("By", event.actor), Detail("Stored key found", _token_found(meta))]
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


def sent_to_texts(metadata: dict[str, Any], provider: str) -> list[str]:
    """ "api.anthropic.com:443: 3 requests" for each destination the run end event records for
    `provider` (its `sent_to`); the scheme is shown only when it is not https."""
    texts = []
    for entry in metadata.get("sent_to") or []:
        if not isinstance(entry, dict) or entry.get("provider") != provider:
            continue
        origin = str(entry.get("destination", ""))
        where = origin.removeprefix("https://")
        requests = entry.get("requests")
        texts.append(f"{where}: {requests} request{'' if requests == 1 else 's'}")
    return texts


def _end_entry(event: AuditEvent, provider: str, taken: bool) -> TimelineEntry:
    status = _RUN_END[event.action]
    released = event.metadata.get("keys_released") or []
    details = [Detail("Run", status)]
    if event.metadata.get("error_code"):
        details.append(Detail("Error", event.metadata["error_code"]))
    details += [Detail("Sent to", text) for text in sent_to_texts(event.metadata, provider)]
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


def run_history(*, tenant: Tenant, run: RunRecord, step_providers: list[str]) -> RunHistory:
    """The run's key lifecycle timeline, one list per provider, from its audit events: one query.

    Events are found by target (`run:<id>`) within the run's lifetime (RUN_EVENTS_SLACK), so
    the (tenant, -created_at) index bounds the scan.
    """
    in_lifetime = scoped(AuditEvent, tenant).filter(
        chain=chain_for(tenant),
        target=f"run:{run.pk}",
        created_at__gte=run.created_at - RUN_EVENTS_SLACK,
    )
    if run.finished_at is not None:
        in_lifetime = in_lifetime.filter(created_at__lte=run.finished_at + RUN_EVENTS_SLACK)
    events = list(in_lifetime.order_by("seq"))

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
                if meta.get("destination"):
                    keys[meta["provider"]].destination = str(meta["destination"]).removeprefix(
                        "https://"
                    )
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
    for timeline in keys.values():
        _settle_store(timeline)
    created = next((e for e in events if e.action == "run.created"), None)
    return RunHistory(
        keys=list(keys.values()),
        run_events=run_events,
        caller_ip=(created.ip or "") if created else "",
        caller_user_agent=created.user_agent if created else "",
    )


# --- The key blocklist -------------------------------------------------------------------------


def blocked_key_for(*, tenant: Tenant, fingerprints: dict[str, set[str]]) -> BlockedKey | None:
    """The tenant's blocklist entry matching any of `fingerprints` ({provider: values}), or
    None: one indexed query."""
    if not fingerprints:
        return None
    match = Q()
    for provider, values in sorted(fingerprints.items()):
        match |= Q(provider=provider, fingerprint__in=sorted(values))
    return scoped(BlockedKey, tenant).filter(match).order_by("created_at").first()


def blocked_keys(*, tenant: Tenant) -> list[BlockedKey]:
    """The tenant's blocklist, newest first."""
    return list(scoped(BlockedKey, tenant).order_by("-created_at"))
