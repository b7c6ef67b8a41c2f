"""Writing and verifying the hash-chained audit log.

Each tenant has one chain (events that belong to no tenant go to the "platform" chain). An
event's hash covers its content and the previous event's hash; the chain head row is locked
while an event is appended, so concurrent writers queue and the chain never forks or skips.
`audit_record` joins the caller's transaction: when the audit write fails, the action fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
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
from tenants.audit_keys import (
    AuditKeyError,
    ChainKeyring,
    chain_keyring,
    signature_valid,
    signing_keyring,
)
from tenants.models import (
    PLATFORM_CHAIN,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditSuppression,
    Tenant,
)

logger = logging.getLogger(__name__)

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
        return hashlib.sha256(_canonical(body)).hexdigest()
    if hash_version != HASH_VERSION or chain_key is None:
        raise ValueError(f"cannot hash a version {hash_version} event without its chain key")
    body["key_id"] = key_id
    return hmac.new(chain_key, _canonical(body), hashlib.sha256).hexdigest()


def head_mac(chain_key: bytes, chain: str, seq: int, last_hash: str) -> str:
    """The chain head's authentication code: only the application can move the head."""
    message = f"swrly-audit-head\0{chain}\0{seq}\0{last_hash}".encode()
    return hmac.new(chain_key, message, hashlib.sha256).hexdigest()


def _head_problem(
    head: AuditChainHead | None,
    chain: str,
    seq: int,
    last_hash: str,
    last_version: int,
    keyring: ChainKeyring,
) -> str:
    if head is None:
        return "" if seq == 0 else "the chain head row is missing (it was deleted)"
    if (head.seq, head.last_hash) != (seq, last_hash):
        return (
            f"chain head is at #{head.seq} but the events end at #{seq} "
            "(events were removed from the end)"
        )
    if not head.mac:
        return "" if last_version == 1 else "the chain head has no MAC (it was rewritten)"
    if not any(
        hmac.compare_digest(head.mac, head_mac(key, chain, seq, last_hash))
        for key in keyring.keys.values()
    ):
        return (
            "the chain head's MAC does not verify: it was rewritten without the chain key "
            "(events may have been removed from the end)"
        )
    return ""


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _stored_hash(event: AuditEvent, keyring: ChainKeyring) -> str | None:
    """The hash an event should have, or None when its version or chain key is unknown."""
    chain_key = None
    if event.hash_version == HASH_VERSION:
        chain_key = keyring.keys.get(event.key_id)
        if chain_key is None:
            return None
    elif event.hash_version != 1:
        return None
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
    metadata: dict | None,
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
    _lock_head(chain)
    rows = list(
        AuditSuppression.objects.select_for_update(of=("self",))
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
class CheckpointInfo:
    """A verified checkpoint, as a report names it."""

    id: int
    seq: int
    key_id: str
    created_at: datetime
    head_hash: str
    signature: str


@dataclass(frozen=True)
class ChainReport:
    """What a verification checked and, when it failed, the first thing that did not fit.

    `checked` counts the events whose hash was recomputed; `from_seq`..`to_seq` is their range.
    In "incremental" mode that range starts at the newest signed checkpoint (whose whole
    signature chain was verified first); "full" recomputes every event from #1.
    """

    chain: str
    checked: int
    ok: bool
    broken_event_id: int | None = None
    broken_seq: int | None = None
    reason: str = ""
    mode: str = "full"
    from_seq: int | None = None
    to_seq: int | None = None
    checkpoints_verified: int = 0
    checkpoint: CheckpointInfo | None = None
    broken_checkpoint_id: int | None = None
    broken_checkpoint_seq: int | None = None


def checkpoint_payload(
    *,
    chain: str,
    tenant_id: Any,
    seq: int,
    head_hash: str,
    created_at: datetime,
    prev_signature: str,
    key_id: str,
) -> bytes:
    """The canonical bytes a checkpoint's Ed25519 signature covers."""
    return _canonical(
        {
            "type": "swrly.audit.checkpoint",
            "v": 1,
            "chain": chain,
            "tenant": str(tenant_id) if tenant_id is not None else None,
            "seq": seq,
            "head_hash": head_hash,
            "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "prev_signature": prev_signature,
            "key_id": key_id,
        }
    )


def _payload_of(checkpoint: AuditCheckpoint) -> bytes:
    return checkpoint_payload(
        chain=checkpoint.chain,
        tenant_id=checkpoint.tenant_id,
        seq=checkpoint.seq,
        head_hash=checkpoint.head_hash,
        created_at=checkpoint.created_at,
        prev_signature=checkpoint.prev_signature,
        key_id=checkpoint.key_id,
    )


def _tenant_mismatch(row: AuditEvent | AuditCheckpoint, chain: str) -> bool:
    return str(row.tenant_id or PLATFORM_CHAIN) != chain


def _checkpoint_problems(chain: str, checkpoints: list[AuditCheckpoint]) -> tuple[int, str, int]:
    """Verify the checkpoints' signature chain, oldest first.

    Returns (index of the first bad checkpoint or -1, why, how many verified before it).
    """
    signing = signing_keyring()
    prev_signature, prev_seq, newest_rank = "", 0, None
    for index, checkpoint in enumerate(checkpoints):
        key = signing.public.get(checkpoint.key_id)
        reason = ""
        if _tenant_mismatch(checkpoint, chain):
            reason = "its tenant does not match its chain (the row was moved)"
        elif checkpoint.seq <= prev_seq:
            reason = f"out of order after the checkpoint at #{prev_seq}"
        elif checkpoint.prev_signature != prev_signature:
            reason = (
                "it does not chain the previous checkpoint's signature (a checkpoint was "
                "removed, replaced or inserted)"
            )
        elif key is None:
            reason = f"signed by key {checkpoint.key_id!r}, which is not a published key"
        elif newest_rank is not None and key.rank > newest_rank:
            reason = f"signed by retired key {key.key_id} after a checkpoint signed by a newer key"
        else:
            try:
                signature = bytes.fromhex(checkpoint.signature)
            except ValueError:
                signature = b""
            if not signature_valid(key.raw, _payload_of(checkpoint), signature):
                reason = "its signature does not verify (the checkpoint was altered or forged)"
        if reason:
            return index, reason, index
        prev_signature, prev_seq = checkpoint.signature, checkpoint.seq
        newest_rank = key.rank if key is not None else newest_rank
    return -1, "", len(checkpoints)


def _info(checkpoint: AuditCheckpoint | None) -> CheckpointInfo | None:
    if checkpoint is None:
        return None
    return CheckpointInfo(
        id=checkpoint.pk,
        seq=checkpoint.seq,
        key_id=checkpoint.key_id,
        created_at=checkpoint.created_at,
        head_hash=checkpoint.head_hash,
        signature=checkpoint.signature,
    )


def audit_verify_chain(chain: str, *, full: bool = True) -> ChainReport:
    """Verify one chain; report the first checkpoint or event that does not fit.

    First the chain's signed checkpoints (every signature, each chaining the previous one, by a
    published key, never an older key after a newer one) and the event each one signs (it must
    still exist and recompute to the signed hash). Then the events: all of them when `full`,
    otherwise only those after the newest checkpoint — O(checkpoints) signatures, cached in
    memory, plus O(events since the newest checkpoint) hashes.
    """
    mode = "full" if full else "incremental"
    keyring = chain_keyring()
    checkpoints = list(AuditCheckpoint.objects.filter(chain=chain).order_by("seq"))
    bad, why, verified = _checkpoint_problems(chain, checkpoints)
    if bad >= 0:
        checkpoint = checkpoints[bad]
        return ChainReport(
            chain,
            0,
            False,
            reason=f"checkpoint at #{checkpoint.seq} (id {checkpoint.pk}): {why}",
            mode=mode,
            checkpoints_verified=verified,
            checkpoint=_info(checkpoints[bad - 1]) if bad else None,
            broken_checkpoint_id=checkpoint.pk,
            broken_checkpoint_seq=checkpoint.seq,
        )
    newest = checkpoints[-1] if checkpoints else None
    by_seq = {checkpoint.seq: checkpoint for checkpoint in checkpoints}
    anchors = {}
    if not full:
        signed_seqs = AuditCheckpoint.objects.filter(chain=chain).values("seq")
        anchors = {e.seq: e for e in AuditEvent.objects.filter(chain=chain, seq__in=signed_seqs)}

    def broken(event: AuditEvent | None, seq: int, reason: str, checked: int) -> ChainReport:
        return ChainReport(
            chain,
            checked,
            False,
            event.pk if event is not None else None,
            seq,
            reason,
            mode=mode,
            checkpoints_verified=verified,
            checkpoint=_info(newest),
        )

    # Incremental: every signed event, which the range below starts after. (Full: in order.)
    for checkpoint in [] if full else checkpoints:
        event = anchors.get(checkpoint.seq)
        if event is None:
            return broken(None, checkpoint.seq, _missing_signed_event(checkpoint.seq), 0)
        if (
            event.hash != checkpoint.head_hash
            or _tenant_mismatch(event, chain)
            or _stored_hash(event, keyring) != event.hash
        ):
            return broken(event, event.seq, _NOT_AS_SIGNED, 0)

    if full or newest is None:
        expected_seq, prev_hash, prev_version, checked = 1, GENESIS_HASH, 1, 0
        from_seq: int | None = None
        events = AuditEvent.objects.filter(chain=chain)
    else:
        anchor = anchors[newest.seq]
        expected_seq, prev_hash, prev_version, checked = newest.seq + 1, anchor.hash, 1, 1
        prev_version = anchor.hash_version
        from_seq = newest.seq
        events = AuditEvent.objects.filter(chain=chain, seq__gt=newest.seq)
    for event in events.order_by("seq").iterator(chunk_size=2000):
        reason = ""
        if _tenant_mismatch(event, chain):
            reason = "the event's tenant does not match its chain (the row was moved)"
        elif event.seq != expected_seq:
            reason = f"sequence gap: expected #{expected_seq}, found #{event.seq}"
        elif event.prev_hash != prev_hash:
            reason = "previous-hash link does not match the preceding event"
        elif event.hash_version < prev_version:
            reason = (
                f"a version {event.hash_version} (unkeyed) event after keyed events: it was "
                "written without the chain key"
            )
        else:
            expected = _stored_hash(event, keyring)
            if expected is None:
                reason = (
                    f"hashed with an unknown chain key {event.key_id!r} or version "
                    f"{event.hash_version}"
                )
            elif expected != event.hash:
                reason = (
                    "content does not match its hash (the row was altered, or written without "
                    "the chain key)"
                )
            elif event.seq in by_seq and by_seq[event.seq].head_hash != event.hash:
                reason = _NOT_AS_SIGNED
            elif event.action == "audit.checkpoint":
                reason = _checkpoint_event_problem(event, by_seq)
        if reason:
            return broken(event, event.seq, reason, checked)
        checked += 1
        from_seq = event.seq if from_seq is None else from_seq
        expected_seq, prev_hash, prev_version = event.seq + 1, event.hash, event.hash_version
    if newest is not None and newest.seq >= expected_seq:  # full: the events ended too early
        first_missing = min(seq for seq in by_seq if seq >= expected_seq)
        return broken(None, expected_seq, _missing_signed_event(first_missing), checked)
    head = AuditChainHead.objects.filter(chain=chain).first()
    problem = _head_problem(head, chain, expected_seq - 1, prev_hash, prev_version, keyring)
    if problem:
        return ChainReport(
            chain,
            checked,
            False,
            None,
            expected_seq,
            problem,
            mode=mode,
            from_seq=from_seq,
            to_seq=expected_seq - 1 if checked else None,
            checkpoints_verified=verified,
            checkpoint=_info(newest),
        )
    return ChainReport(
        chain,
        checked,
        True,
        mode=mode,
        from_seq=from_seq,
        to_seq=expected_seq - 1 if checked else None,
        checkpoints_verified=verified,
        checkpoint=_info(newest),
    )


_NOT_AS_SIGNED = "the event does not match its signed checkpoint (it was altered or replaced)"


def _missing_signed_event(seq: int) -> str:
    return f"the event signed by the checkpoint at #{seq} is missing (events were deleted)"


def _checkpoint_event_problem(event: AuditEvent, by_seq: dict[int, AuditCheckpoint]) -> str:
    """An `audit.checkpoint` event must name a checkpoint that is still there, unchanged."""
    seq = event.metadata.get("seq") if isinstance(event.metadata, dict) else None
    checkpoint = by_seq.get(seq) if isinstance(seq, int) else None
    if checkpoint is None or checkpoint.signature != event.metadata.get("signature"):
        return f"it records a checkpoint at #{seq} that is missing or was replaced"
    return ""


class AuditChainBroken(Exception):
    """A chain failed verification, so no checkpoint was signed over it."""

    def __init__(self, report: ChainReport) -> None:
        super().__init__(f"chain {report.chain} broken at #{report.broken_seq}: {report.reason}")
        self.report = report


def audit_checkpoint_chain(chain: str, *, force: bool = False) -> AuditCheckpoint | None:
    """Sign a checkpoint over a chain's head, if it has events since its last checkpoint.

    The chain is verified (incrementally) first, so a tampered chain is never signed; the head
    row stays locked until the checkpoint and its `audit.checkpoint` event are written. The event
    that records a checkpoint does not by itself call for another one, unless `force` (used
    after rotating the signing key, so that every chain gets a checkpoint by the new key).
    """
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update(of=("self",)).filter(chain=chain).first()
        if head is None or head.seq == 0:
            return None
        last = AuditCheckpoint.objects.filter(chain=chain).order_by("-seq").first()
        if last is not None and (head.seq <= last.seq or (not force and head.seq == last.seq + 1)):
            return None
        report = audit_verify_chain(chain, full=False)
        if not report.ok:
            raise AuditChainBroken(report)
        signing = signing_keyring()
        if signing.private is None:
            raise AuditKeyError("AUDIT_SIGNING_KEY is not set here: this process cannot sign")
        tenant = None if chain == PLATFORM_CHAIN else Tenant.objects.get(pk=chain)
        fields = {
            "chain": chain,
            "tenant_id": tenant.pk if tenant is not None else None,
            "seq": head.seq,
            "head_hash": head.last_hash,
            "created_at": timezone.now(),
            "prev_signature": last.signature if last is not None else "",
            "key_id": signing.current.key_id,
        }
        signature = signing.private.sign(checkpoint_payload(**fields)).hex()
        checkpoint = AuditCheckpoint.objects.create(signature=signature, **fields)
        audit_record(
            tenant=tenant,
            action="audit.checkpoint",
            actor=Actor.system("audit-checkpoint"),
            target=f"checkpoint:{checkpoint.seq}",
            metadata={
                "seq": checkpoint.seq,
                "head_hash": checkpoint.head_hash,
                "created_at": checkpoint.created_at.astimezone(UTC).isoformat(
                    timespec="microseconds"
                ),
                "key_id": checkpoint.key_id,
                "signature": checkpoint.signature,
            },
        )
        return checkpoint


@dataclass(frozen=True)
class CheckpointOutcome:
    chain: str
    checkpoint: AuditCheckpoint | None
    problem: str = ""


def audit_checkpoint_all(*, force: bool = False) -> list[CheckpointOutcome]:
    """Checkpoint every chain with new events; a broken chain is reported, not signed."""
    outcomes = []
    for chain in audit_chains():
        try:
            outcomes.append(CheckpointOutcome(chain, audit_checkpoint_chain(chain, force=force)))
        except AuditChainBroken as exc:
            logger.error("audit checkpoint refused: %s", exc)
            outcomes.append(CheckpointOutcome(chain, None, str(exc)))
    return outcomes


def audit_chains(tenant: Tenant | None = None) -> Iterator[str]:
    """Every chain to verify: one tenant's, or all of them."""
    if tenant is not None:
        yield chain_for(tenant)
        return
    seen = set(AuditChainHead.objects.values_list("chain", flat=True))
    seen.update(AuditEvent.objects.values_list("chain", flat=True).distinct())
    yield from sorted(seen)
