"""Verifying the audit chains: events, chain heads and the signed checkpoints' own chain."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from swrly.audit.chunked import in_chunks
from swrly.audit.keys import ChainKeyring, chain_keyring, signature_valid, signing_keyring
from swrly.audit.models import PLATFORM_CHAIN, AuditChainHead, AuditCheckpoint, AuditEvent
from swrly.audit.writer import (
    GENESIS_HASH,
    HASH_VERSION,
    canonical_json,
    chain_for,
    head_mac,
    stored_event_hash,
)

if TYPE_CHECKING:
    from tenants.models import Tenant


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


def stored_hash(event: AuditEvent, keyring: ChainKeyring) -> str | None:
    """The hash an event should have, or None when its version or chain key is unknown."""
    chain_key = None
    if event.hash_version == HASH_VERSION:
        chain_key = keyring.keys.get(event.key_id)
        if chain_key is None:
            return None
    elif event.hash_version != 1:
        return None
    return stored_event_hash(event, chain_key=chain_key)


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
    return canonical_json(
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
            or stored_hash(event, keyring) != event.hash
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
    for event in in_chunks(events):  # by keyset: no server-side cursor (PgBouncer)
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
            expected = stored_hash(event, keyring)
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


def audit_chains(tenant: Tenant | None = None) -> Iterator[str]:
    """Every chain to verify: one tenant's, or all of them."""
    if tenant is not None:
        yield chain_for(tenant)
        return
    seen = set(AuditChainHead.objects.values_list("chain", flat=True))
    seen.update(AuditEvent.objects.values_list("chain", flat=True).distinct())
    yield from sorted(seen)
