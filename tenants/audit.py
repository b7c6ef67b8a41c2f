"""Writing and verifying the hash-chained audit log.

Each tenant has one chain (events that belong to no tenant go to the "platform" chain). An
event's hash covers its content and the previous event's hash; the chain head row is locked
while an event is appended, so concurrent writers queue and the chain never forks or skips.
`audit_record` joins the caller's transaction: when the audit write fails, the action fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from swrly.http import client_ip, user_agent
from tenants.models import PLATFORM_CHAIN, AuditChainHead, AuditEvent, AuditSuppression, Tenant

GENESIS_HASH = "0" * 64
HASH_VERSION = 1


@dataclass(frozen=True)
class Actor:
    """Who did something, as the audit log records it."""

    label: str
    user_id: int | None = None

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(label=f"user:{user.get_username()}", user_id=user.pk)

    @classmethod
    def for_token(cls, token: Any) -> Actor:
        return cls(label=f"token:{token.name} ({token.display_prefix})")

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(label=f"system:{name}")

    @classmethod
    def anonymous(cls, username: str = "") -> Actor:
        return cls(label=f"anonymous:{username}" if username else "anonymous")


def chain_for(tenant: Tenant | None) -> str:
    return str(tenant.pk) if tenant is not None else PLATFORM_CHAIN


def event_hash(
    *,
    chain: str,
    seq: int,
    created_at: datetime,
    actor: str,
    actor_user_id: int | None,
    action: str,
    target: str,
    metadata: dict,
    ip: str | None,
    user_agent: str,
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON encoding of every stored field of an event."""
    body = json.dumps(
        {
            "v": HASH_VERSION,
            "chain": chain,
            "seq": seq,
            "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "actor_user_id": actor_user_id,
            "action": action,
            "target": target,
            "metadata": metadata,
            "ip": ip,
            "user_agent": user_agent,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def _stored_hash(event: AuditEvent) -> str:
    return event_hash(
        chain=event.chain,
        seq=event.seq,
        created_at=event.created_at,
        actor=event.actor,
        actor_user_id=event.actor_user_id,
        action=event.action,
        target=event.target,
        metadata=event.metadata,
        ip=event.ip,
        user_agent=event.user_agent,
        prev_hash=event.prev_hash,
    )


def _normalized(value: Any) -> Any:
    """JSON that every database returns exactly as given: floats become strings.

    (PostgreSQL's jsonb may hand back 1e20 as an integer, which would break the hash.)
    """
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    return value


def audit_record(
    *,
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str = "",
    metadata: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain, inside the caller's transaction.

    No savepoint of its own: when the audit write fails, the caller's whole transaction must
    fail with it (fail closed).
    """
    with transaction.atomic(savepoint=False):
        return _append(tenant, action, actor, target, metadata, request)


def _append(
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str,
    metadata: dict | None,
    request: HttpRequest | None,
) -> AuditEvent:
    chain = chain_for(tenant)
    head = AuditChainHead.objects.select_for_update().filter(chain=chain).first()
    if head is None:  # the chain's first event (get_or_create copes with a concurrent first)
        AuditChainHead.objects.get_or_create(chain=chain, defaults={"last_hash": GENESIS_HASH})
        head = AuditChainHead.objects.select_for_update().get(chain=chain)
    # Round-trip through JSON so the hash covers exactly what the database will return.
    metadata = json.loads(json.dumps(_normalized(metadata or {}), sort_keys=True))
    ip = client_ip(request) if request is not None else None
    fields = {
        "chain": chain,
        "seq": head.seq + 1,
        "created_at": timezone.now(),
        "actor": actor.label[:300],
        "actor_user_id": actor.user_id,
        "action": action,
        "target": target[:300],
        "metadata": metadata,
        "ip": AuditEvent._meta.get_field("ip").get_prep_value(ip),  # as stored (IPv6 normalized)
        "user_agent": user_agent(request) if request is not None else "",
        "prev_hash": head.last_hash,
    }
    event = AuditEvent.objects.create(tenant=tenant, hash=event_hash(**fields), **fields)
    head.seq = event.seq
    head.last_hash = event.hash
    head.save(update_fields=["seq", "last_hash"])
    return event


# The chain-wide row of a window in AuditSuppression (sources are "actor|address" strings).
_ALL_SOURCES = "*"
_TOP_SOURCES = 5


def audit_record_bounded(
    *,
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str = "",
    metadata: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent | None:
    """Append an event that someone outside the tenant can cause, within a bound.

    Failed sign-ins, lockouts and denied accesses can be triggered by anyone who can reach a
    URL, so each one cannot be its own chain event forever. Per chain, action and window of
    AUDIT_FLOOD_WINDOW seconds, each source (actor and client address) has at most
    AUDIT_FLOOD_PER_SOURCE events recorded and the chain at most AUDIT_FLOOD_PER_CHAIN; the
    rest are counted, and when the window has closed one `audit.suppressed` event records how
    many were not written, from how many sources, and the busiest ones. Returns the event, or
    None when it was only counted.
    """
    chain = chain_for(tenant)
    window_seconds = settings.AUDIT_FLOOD_WINDOW
    now = int(timezone.now().timestamp())
    window = now - now % window_seconds
    ip = client_ip(request) if request is not None else None
    source = f"{actor.label}|{ip or '-'}"[:300]
    with transaction.atomic():
        if AuditSuppression.objects.filter(chain=chain, window_start__lt=window).exists():
            _flush_suppressed(chain=chain, before=window)
        total = _count_one(chain, action, _ALL_SOURCES, window)
        per_source = _count_one(chain, action, source, window)
        if total > settings.AUDIT_FLOOD_PER_CHAIN or per_source > settings.AUDIT_FLOOD_PER_SOURCE:
            return None
        event = audit_record(
            tenant=tenant,
            action=action,
            actor=actor,
            target=target,
            metadata=metadata,
            request=request,
        )
        AuditSuppression.objects.filter(
            chain=chain, action=action, source=_ALL_SOURCES, window_start=window
        ).update(recorded=F("recorded") + 1)
        return event


def _count_one(chain: str, action: str, source: str, window: int) -> int:
    """Add one to a window's counter and return the new count, in one atomic statement."""
    q = connection.ops.quote_name
    table, count = q(AuditSuppression._meta.db_table), q("count")
    key = ", ".join(q(name) for name in ("chain", "action", "source", "window_start"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({key}, {count}, {q('recorded')}) "  # noqa: S608
            f"VALUES (%s, %s, %s, %s, 1, 0) ON CONFLICT ({key}) "
            f"DO UPDATE SET {count} = {table}.{count} + 1 RETURNING {count}",
            [chain, action, source, window],
        )
        return cursor.fetchone()[0]


def audit_flush_suppressed(*, before: int | None = None) -> int:
    """Record `audit.suppressed` for every closed window of every chain. Returns events written.

    Run periodically (beat) so that a flood followed by silence is still recorded.
    """
    if before is None:
        now = int(timezone.now().timestamp())
        before = now - now % settings.AUDIT_FLOOD_WINDOW
    chains = (
        AuditSuppression.objects.filter(window_start__lt=before)
        .values_list("chain", flat=True)
        .distinct()
    )
    written = 0
    for chain in sorted(set(chains)):
        with transaction.atomic():
            written += _flush_suppressed(chain=chain, before=before)
    return written


def _flush_suppressed(*, chain: str, before: int) -> int:
    """Turn one chain's closed windows into `audit.suppressed` events; delete their counters."""
    rows = list(
        AuditSuppression.objects.select_for_update()
        .filter(chain=chain, window_start__lt=before)
        .order_by("window_start", "action", "-count", "source")
    )
    if not rows:
        return 0
    tenant = None
    if chain != PLATFORM_CHAIN:
        tenant = Tenant.objects.filter(pk=chain).first()
    groups: dict[tuple[int, str], list[AuditSuppression]] = {}
    for row in rows:
        groups.setdefault((row.window_start, row.action), []).append(row)
    written = 0
    window_seconds = settings.AUDIT_FLOOD_WINDOW
    for (window, action), group in groups.items():
        total = next((r for r in group if r.source == _ALL_SOURCES), None)
        sources = [r for r in group if r.source != _ALL_SOURCES]
        if total is None or total.count <= total.recorded:
            continue
        if tenant is None and chain != PLATFORM_CHAIN:  # the tenant was deleted since
            continue
        start = datetime.fromtimestamp(window, tz=UTC)
        audit_record(
            tenant=tenant,
            action="audit.suppressed",
            actor=Actor.system("audit-flood-bound"),
            target=f"action:{action}",
            metadata={
                "action": action,
                "window_start": start.isoformat(),
                "window_seconds": window_seconds,
                "attempts": total.count,
                "recorded": total.recorded,
                "suppressed": total.count - total.recorded,
                "sources": len(sources),
                "top_sources": [
                    {"source": r.source, "attempts": r.count} for r in sources[:_TOP_SOURCES]
                ],
            },
        )
        written += 1
    AuditSuppression.objects.filter(pk__in=[r.pk for r in rows]).delete()
    return written


@dataclass(frozen=True)
class ChainReport:
    chain: str
    checked: int
    ok: bool
    broken_event_id: int | None = None
    broken_seq: int | None = None
    reason: str = ""


def audit_verify_chain(chain: str) -> ChainReport:
    """Recompute one chain from its first event; report the first event that does not fit."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    events = AuditEvent.objects.filter(chain=chain).order_by("seq")
    for event in events.iterator(chunk_size=2000):
        reason = ""
        if str(event.tenant_id or PLATFORM_CHAIN) != chain:
            reason = "the event's tenant does not match its chain (the row was moved)"
        elif event.seq != expected_seq:
            reason = f"sequence gap: expected #{expected_seq}, found #{event.seq}"
        elif event.prev_hash != prev_hash:
            reason = "previous-hash link does not match the preceding event"
        elif _stored_hash(event) != event.hash:
            reason = "content does not match its hash (the row was altered)"
        if reason:
            return ChainReport(chain, checked, False, event.pk, event.seq, reason)
        checked += 1
        expected_seq, prev_hash = event.seq + 1, event.hash
    head = AuditChainHead.objects.filter(chain=chain).first()
    if head is not None and (head.seq, head.last_hash) != (expected_seq - 1, prev_hash):
        return ChainReport(
            chain,
            checked,
            False,
            None,
            expected_seq,
            f"chain head is at #{head.seq} but the events end at #{expected_seq - 1} "
            "(events were removed from the end)",
        )
    return ChainReport(chain, checked, True)


def audit_chains(tenant: Tenant | None = None) -> Iterator[str]:
    """Every chain to verify: one tenant's, or all of them."""
    if tenant is not None:
        yield chain_for(tenant)
        return
    seen = set(AuditChainHead.objects.values_list("chain", flat=True))
    seen.update(AuditEvent.objects.values_list("chain", flat=True).distinct())
    yield from sorted(seen)
