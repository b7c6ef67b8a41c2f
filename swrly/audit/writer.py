"""Writing the hash-chained audit log.

Each tenant has one chain (events that belong to no tenant go to the "platform" chain). An
event's hash covers its content and the previous event's hash; the chain head row is locked
while an event is appended, so concurrent writers queue and the chain never forks or skips.
`audit_record` joins the caller's transaction: when the audit write fails, the action fails.
Every action and its metadata keys must be declared in `swrly.audit.events`.

A tenant is anything with a `pk` (tenants.Tenant): this app imports no other app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from swrly.audit.events import check_event
from swrly.audit.keys import chain_keyring
from swrly.audit.models import (
    PLATFORM_CHAIN,
    AuditChainHead,
    AuditEvent,
    AuditSuppression,
    tenant_model,
)
from swrly.http import client_ip, user_agent

if TYPE_CHECKING:
    from tenants.models import Tenant


GENESIS_HASH = "0" * 64
# The version new events are written with (2: HMAC-SHA256 under AUDIT_CHAIN_KEY).
HASH_VERSION = 2


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


def tenant_of_chain(chain: str) -> Tenant | None:
    """The tenant a chain belongs to (None for the platform chain or a deleted tenant)."""
    if chain == PLATFORM_CHAIN:
        return None
    return tenant_model().objects.filter(pk=chain).first()


def event_hash(
    *,
    chain: str,
    seq: int,
    created_at: datetime,
    actor: str,
    actor_user_id: int | None,
    action: str,
    target: str,
    metadata: dict[str, Any],
    ip: str | None,
    user_agent: str,
    prev_hash: str,
    hash_version: int = 1,
    key_id: str = "",
    chain_key: bytes | None = None,
) -> str:
    """The hash of an event over a canonical JSON encoding of every stored field.

    Version 1 (events written before the keyed chain): plain SHA-256, which anyone can
    recompute. Version 2: HMAC-SHA256 under the chain key `key_id` names, which is not in the
    database, so an event appended or rewritten without it does not verify.
    """
    body: dict[str, Any] = {
        "v": hash_version,
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
    }
    if hash_version == 1:
        return hashlib.sha256(canonical_json(body)).hexdigest()
    if hash_version != HASH_VERSION or chain_key is None:
        raise ValueError(f"cannot hash a version {hash_version} event without its chain key")
    body["key_id"] = key_id
    return hmac.new(chain_key, canonical_json(body), hashlib.sha256).hexdigest()


def head_mac(chain_key: bytes, chain: str, seq: int, last_hash: str) -> str:
    """The chain head's authentication code: only the application can move the head."""
    message = f"swrly-audit-head\0{chain}\0{seq}\0{last_hash}".encode()
    return hmac.new(chain_key, message, hashlib.sha256).hexdigest()


def canonical_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
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
    metadata: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain, inside the caller's transaction.

    No savepoint of its own: when the audit write fails, the caller's whole transaction must
    fail with it (fail closed). An undeclared action or metadata key is a programming error
    (UnknownAuditEvent), raised before anything is written.
    """
    check_event(action, metadata)
    with transaction.atomic(savepoint=False):
        return _append(tenant, action, actor, target, metadata, request)


def _lock_head(chain: str) -> AuditChainHead:
    """The chain's head row, locked until the transaction ends (created for a first event).

    Every writer of a chain takes this lock before any other audit row (the flood counters
    included), so two writers never wait for each other in opposite orders.
    """
    head = AuditChainHead.objects.select_for_update(of=("self",)).filter(chain=chain).first()
    if head is None:  # the chain's first event (get_or_create copes with a concurrent first)
        AuditChainHead.objects.get_or_create(chain=chain, defaults={"last_hash": GENESIS_HASH})
        head = AuditChainHead.objects.select_for_update(of=("self",)).get(chain=chain)
    return head


def _append(
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str,
    metadata: dict[str, Any] | None,
    request: HttpRequest | None,
) -> AuditEvent:
    chain = chain_for(tenant)
    head = _lock_head(chain)
    # Round-trip through JSON so the hash covers exactly what the database will return.
    metadata = json.loads(json.dumps(_normalized(metadata or {}), sort_keys=True))
    ip = client_ip(request) if request is not None else None
    keyring = chain_keyring()
    fields = {
        "hash_version": HASH_VERSION,
        "key_id": keyring.current_id,
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
    event = AuditEvent.objects.create(
        tenant=tenant, hash=event_hash(**fields, chain_key=keyring.current), **fields
    )
    head.seq = event.seq
    head.last_hash = event.hash
    head.mac = head_mac(keyring.current, chain, event.seq, event.hash)
    head.save(update_fields=["seq", "last_hash", "mac"])
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
    metadata: dict[str, Any] | None = None,
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
    check_event(action, metadata)
    chain = chain_for(tenant)
    window_seconds = settings.AUDIT_FLOOD_WINDOW
    now = int(timezone.now().timestamp())
    window = now - now % window_seconds
    ip = client_ip(request) if request is not None else None
    source = f"{actor.label}|{ip or '-'}"[:300]
    with transaction.atomic():
        _lock_head(chain)  # first, as every chain writer does (see _lock_head)
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
        new_count: int = cursor.fetchone()[0]
        return new_count


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
    _lock_head(chain)
    rows = list(
        AuditSuppression.objects.select_for_update(of=("self",))
        .filter(chain=chain, window_start__lt=before)
        .order_by("window_start", "action", "-count", "source")
    )
    if not rows:
        return 0
    tenant = tenant_of_chain(chain)
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
