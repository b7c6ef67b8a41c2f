"""Writing the hash-chained audit log.

Each tenant has one chain (events that belong to no tenant go to the "platform" chain). An
event's hash covers its content and the previous event's hash; the chain head row is locked
while an event is appended, so concurrent writers queue and the chain never forks or skips.
`audit_record` joins the caller's transaction: when the audit write fails, the action fails.
Every action and its metadata keys must be declared in `swrly.audit.events`.

Inside `audited_atomic()` (the hot paths: run creation, the executor) events are not written
where they are recorded: they are kept and appended together as the last thing before the
commit (`_flush`), so the chain head is locked for three statements (advance the head, insert
the events, write the head's hash and MAC) instead of from the first event to the commit.
Outside it, `audit_record` appends at once, as it always has.

A tenant is anything with a `pk` (tenants.Tenant): this app imports no other app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from swrly import metrics
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


def stored_event_hash(event: AuditEvent, *, chain_key: bytes | None) -> str:
    """`event_hash` over an event's own fields, as they are (or will be) stored."""
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
        hash_version=event.hash_version,
        key_id=event.key_id,
        chain_key=chain_key,
    )


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

    Inside `audited_atomic()` the event is appended just before that block commits; the object
    returned then gets its `seq`, `created_at`, hashes and `pk` at that moment.
    """
    check_event(action, metadata)
    batch = _current_batch()
    if batch is not None:
        event = batch.add(_unsaved(tenant, action, actor, target, metadata, request))
    else:
        with transaction.atomic(savepoint=False), metrics.audit_write("single"):
            event = _append(tenant, action, actor, target, metadata, request)
    if action in metrics.COUNTED_ACTIONS:  # run ends and key events, once they are committed
        transaction.on_commit(partial(metrics.count_audited, action, event.metadata), robust=True)
    return event


def _append(
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str,
    metadata: dict[str, Any] | None,
    request: HttpRequest | None,
) -> AuditEvent:
    """Append one event now (the head locked until the caller's transaction ends)."""
    event = _unsaved(tenant, action, actor, target, metadata, request)
    head = _lock_head(event.chain)
    keyring = chain_keyring()
    _link(event, head.seq + 1, head.last_hash, keyring.current_id, keyring.current)
    event.save(force_insert=True)
    head.seq = event.seq
    head.last_hash = event.hash
    head.mac = head_mac(keyring.current, event.chain, event.seq, event.hash)
    head.save(update_fields=["seq", "last_hash", "mac"])
    return event


def _unsaved(
    tenant: Tenant | None,
    action: str,
    actor: Actor,
    target: str,
    metadata: dict[str, Any] | None,
    request: HttpRequest | None,
) -> AuditEvent:
    """The event's content, before it has a place in the chain (no seq, time or hash yet)."""
    # Round-trip through JSON so the hash covers exactly what the database will return.
    metadata = json.loads(json.dumps(_normalized(metadata or {}), sort_keys=True))
    ip = client_ip(request) if request is not None else None
    return AuditEvent(
        tenant=tenant,
        chain=chain_for(tenant),
        actor=actor.label[:300],
        actor_user_id=actor.user_id,
        action=action,
        target=target[:300],
        metadata=metadata,
        ip=AuditEvent._meta.get_field("ip").get_prep_value(ip),  # as stored (IPv6 normalized)
        user_agent=user_agent(request) if request is not None else "",
    )


def _link(event: AuditEvent, seq: int, prev_hash: str, key_id: str, chain_key: bytes) -> None:
    """Give the event its place after `prev_hash`: seq, time (taken under the head lock, so a
    chain's times never go back as its seq goes up) and hash."""
    event.hash_version = HASH_VERSION
    event.key_id = key_id
    event.seq = seq
    event.created_at = timezone.now()
    event.prev_hash = prev_hash
    event.hash = stored_event_hash(event, chain_key=chain_key)


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


# --- Audited transactions: the events of a transaction appended together, last ---------------


@dataclass
class _Batch:
    """The events recorded in an audited transaction, waiting for its end."""

    # (event, marker): the marker is a no-op on_commit callback registered when the event was
    # recorded. Django drops the callbacks of a savepoint that is rolled back, so an event whose
    # marker is gone was recorded in work that was undone, and is not appended.
    events: list[tuple[AuditEvent, Callable[[], None]]] = field(default_factory=list)
    under_lock: list[Callable[[], None]] = field(default_factory=list)

    def add(self, event: AuditEvent) -> AuditEvent:
        def marker() -> None:
            pass

        transaction.on_commit(marker)
        self.events.append((event, marker))
        return event


_local = threading.local()


def _current_batch() -> _Batch | None:
    batch: _Batch | None = getattr(_local, "batch", None)
    return batch


@contextmanager
def audited_atomic() -> Iterator[None]:
    """`transaction.atomic()` whose audit events are appended together just before it commits.

    Within the block, `audit_record` only keeps its events; when the block ends without an
    exception they are appended in the order recorded, as the last statements before the
    commit: the head is locked and advanced by the batch's size in one UPDATE, the callables
    given to `audit_under_lock` run, the events are inserted in one statement and the head's
    hash and MAC are written. A block nested in another joins the outer one's batch.
    """
    outer = _current_batch()
    if outer is not None:
        with transaction.atomic():
            yield
        return
    batch = _Batch()
    _local.batch = batch
    try:
        with transaction.atomic():
            try:
                yield
            finally:
                _local.batch = None
            if not connection.needs_rollback:  # a caught error inside: the block rolls back
                with metrics.audit_write("batch"):
                    _flush(batch)
    finally:
        _local.batch = None


def audit_under_lock(check: Callable[[], None]) -> None:
    """Run `check` once the audited transaction's chain head is locked, before its events are
    inserted (RuntimeError outside an audited transaction).

    For a check that must see what a concurrent writer of the same chain committed: anything
    that writer did before it appended to the chain is visible to `check`. It may raise to
    roll the transaction back. (A transaction that records no event locks no chain: its
    checks then run last, without a lock.)
    """
    batch = _current_batch()
    if batch is None:
        raise RuntimeError("audit_under_lock is for audited_atomic() blocks")
    batch.under_lock.append(check)


def _flush(batch: _Batch) -> None:
    alive = {id(entry[1]) for entry in connection.run_on_commit}  # (savepoints, func, ...)
    events = [event for event, marker in batch.events if id(marker) in alive]
    if not events and not batch.under_lock:
        return
    chains: dict[str, list[AuditEvent]] = {}
    for event in events:
        chains.setdefault(event.chain, []).append(event)
    if not chains:  # checks to run under a lock, but no event: lock nothing of any chain
        for check in batch.under_lock:
            check()
        return
    keyring = chain_keyring()
    checks = batch.under_lock
    # One chain in practice; several are locked in a fixed order, so writers never cross.
    for chain in sorted(chains):
        chain_events = chains[chain]
        seq, last_hash = _advance_head(chain, len(chain_events))
        for check in checks:
            check()
        checks = []
        for event in chain_events:
            seq += 1
            _link(event, seq, last_hash, keyring.current_id, keyring.current)
            last_hash = event.hash
        AuditEvent.objects.bulk_create(chain_events)
        AuditChainHead.objects.filter(chain=chain).update(
            last_hash=last_hash, mac=head_mac(keyring.current, chain, seq, last_hash)
        )


def _advance_head(chain: str, count: int) -> tuple[int, str]:
    """Lock the chain's head and move its seq on by `count`, in one statement; returns the
    seq and hash it had (the events go after them). Creates the head for a chain's first event.
    """
    q = connection.ops.quote_name
    table = q(AuditChainHead._meta.db_table)
    sql = (
        f"UPDATE {table} SET {q('seq')} = {q('seq')} + %s WHERE {q('chain')} = %s "  # noqa: S608
        f"RETURNING {q('seq')}, {q('last_hash')}"
    )
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [count, chain])
            row = cursor.fetchone()
        if row is not None:
            return row[0] - count, row[1]
        # The chain's first event (get_or_create copes with a concurrent first).
        AuditChainHead.objects.get_or_create(chain=chain, defaults={"last_hash": GENESIS_HASH})
    raise AssertionError(f"the head of chain {chain} could not be created")


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
        # At once, not batched: this transaction already holds the head (taken first, above).
        event = _append(tenant, action, actor, target, metadata, request)
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
        suppressed = {
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
        }
        check_event("audit.suppressed", suppressed)
        # At once, not batched: the head is already locked by this transaction (above).
        _append(
            tenant,
            "audit.suppressed",
            Actor.system("audit-flood-bound"),
            f"action:{action}",
            suppressed,
            None,
        )
        written += 1
    AuditSuppression.objects.filter(pk__in=[r.pk for r in rows]).delete()
    return written
