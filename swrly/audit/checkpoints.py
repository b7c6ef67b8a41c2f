"""Signing checkpoints over the audit chains' heads (Ed25519), each recorded in its chain."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from django.db import transaction
from django.utils import timezone

from swrly.audit.keys import AuditKeyError, signing_keyring
from swrly.audit.models import PLATFORM_CHAIN, AuditChainHead, AuditCheckpoint
from swrly.audit.verifier import ChainReport, audit_chains, audit_verify_chain, checkpoint_payload
from swrly.audit.writer import Actor, audit_record, tenant_of_chain

logger = logging.getLogger(__name__)


class _CheckpointFields(TypedDict):
    """A checkpoint's signed fields: the signature payload's arguments and the row's columns."""

    chain: str
    tenant_id: Any
    seq: int
    head_hash: str
    created_at: datetime
    prev_signature: str
    key_id: str


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
        tenant = tenant_of_chain(chain)
        if tenant is None and chain != PLATFORM_CHAIN:
            raise LookupError(f"chain {chain} belongs to no tenant")
        fields: _CheckpointFields = {
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
