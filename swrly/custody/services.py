"""Writes of key custody: a customer key seen, an encryption-key rotation begun and finished,
a tenant's fingerprint salt, the key blocklist."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from swrly.audit.writer import Actor, audit_record, audited_atomic
from swrly.custody.models import (
    BlockedKey,
    FingerprintSalt,
    KeyRotation,
    KeyRotationTenant,
    ProviderKey,
    RotationOutcome,
)
from swrly.keys.fingerprint import (
    Fingerprint,
    legacy_fingerprint,
    new_fingerprint_salt,
    tenant_fingerprint,
)
from swrly.keys.rotation import RewrappedToken
from swrly.keys.secret import ProviderSecret
from tenants.models import Tenant


def key_rotation_start(*, actor: Actor, to_key_id: str) -> KeyRotation:
    """Record that a rotation began, so an interrupted one still shows in the history."""
    return KeyRotation.objects.create(
        started_at=timezone.now(), actor=actor.label, to_key_id=to_key_id
    )


def key_rotation_rewrapped(
    *, rotation: KeyRotation, tokens: list[RewrappedToken], actor: Actor
) -> int:
    """Audit one batch of a rotation: `key.rewrapped` on the run of each stored key it rewrapped.

    Called by `rotate-keys` after each batch's swaps, with the tokens whose swap applied. The
    batch's events are appended together (audited_atomic: per tenant chain, one head update and
    one INSERT), so the cost is a few statements per batch and tenant, not per token. Each event
    targets its run (`run:<uuid>`), in that run's tenant's chain only: the run page's key
    timeline shows it between the deposit and the take. Tokens of a tenant deleted since are
    skipped. Returns the events written.
    """
    tenants = Tenant.objects.in_bulk({uuid.UUID(token.tenant_id) for token in tokens})
    written = 0
    with audited_atomic():
        for token in tokens:
            tenant = tenants.get(uuid.UUID(token.tenant_id))
            if tenant is None:
                continue
            audit_record(
                tenant=tenant,
                action="key.rewrapped",
                actor=actor,
                target=f"run:{token.run_id}",
                metadata={
                    "provider": token.provider,
                    "from_key_id": token.from_key_id,
                    "to_key_id": rotation.to_key_id,
                    "rotation": str(rotation.pk),
                },
            )
            written += 1
    return written


@transaction.atomic
def key_rotation_finish(
    *, rotation: KeyRotation, report: Any, actor: Actor, interrupted: bool = False
) -> KeyRotation:
    """Record a rotation's counts and outcome, and audit it in every tenant it touched.

    `report` is a swrly.keys.rotation.RewrapReport, complete or (when interrupted) partial.
    """
    rotation.finished_at = timezone.now()
    rotation.from_key_ids = sorted(report.from_key_ids)
    rotation.scanned = report.scanned
    rotation.rewrapped = report.rewrapped
    rotation.already_consumed = report.already_consumed
    rotation.failed = report.failed
    succeeded = report.failed == 0 and not interrupted
    rotation.outcome = RotationOutcome.SUCCEEDED if succeeded else RotationOutcome.FAILED
    rotation.save()
    tenants = Tenant.objects.in_bulk(list(report.rewrapped_by_tenant))
    for tenant_id, count in sorted(report.rewrapped_by_tenant.items()):
        tenant = tenants.get(uuid.UUID(tenant_id))
        if tenant is None:  # a token of a tenant deleted since: nothing to record it in
            continue
        KeyRotationTenant.objects.create(rotation=rotation, tenant=tenant, rewrapped=count)
        audit_record(
            tenant=tenant,
            action="encryption_key.rotated",
            actor=actor,
            target=f"rotation:{rotation.pk}",
            metadata={
                "from_key_ids": rotation.from_key_ids,
                "to_key_id": rotation.to_key_id,
                "rewrapped": count,
            },
        )
    return rotation


def provider_key_seen(*, tenant: Tenant, provider: str, fingerprint: str, hint: str) -> None:
    """Count one use of a customer key (by fingerprint) for the tenant's key history.

    One statement (INSERT … ON CONFLICT DO UPDATE), atomic on its own: no row lock is held
    beyond it, so concurrent runs of the same key never wait for each other here.
    """
    now = timezone.now()
    fields = ProviderKey._meta
    q = connection.ops.quote_name
    table = q(fields.db_table)
    columns = ("id", "tenant_id", "provider", "fingerprint", "hint", "first_seen_at",
               "last_seen_at", "use_count")  # fmt: skip
    values = [
        fields.get_field("id").get_db_prep_value(uuid.uuid4(), connection),
        fields.get_field("tenant").get_db_prep_value(tenant.pk, connection),
        provider,
        fingerprint,
        hint,
        fields.get_field("first_seen_at").get_db_prep_value(now, connection),
        fields.get_field("last_seen_at").get_db_prep_value(now, connection),
        1,
    ]
    unique = ", ".join(q(name) for name in ("tenant_id", "provider", "fingerprint"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(q(c) for c in columns)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT ({unique}) DO UPDATE SET "
            f"{q('last_seen_at')} = EXCLUDED.{q('last_seen_at')}, "
            f"{q('use_count')} = {table}.{q('use_count')} + 1",
            values,
        )


# --- Per-tenant fingerprints and the key blocklist -------------------------------------------


# Salts known to be committed, per process: a salt never changes once its row exists, so every
# run of a tenant after the first reads it from memory instead of the database. Tenant ids are
# UUIDs, never reused. Bounded so that a process serving very many tenants stays small.
_COMMITTED_SALTS: dict[uuid.UUID, bytes] = {}
_COMMITTED_SALTS_MAX = 10_000


def fingerprint_salt(*, tenant: Tenant) -> bytes:
    """The tenant's fingerprint salt, made (32 random bytes) the first time it is asked for.

    Concurrent first calls agree: the salt row's primary key is the tenant, and get_or_create
    reads the row the other call inserted. The salt is remembered in this process only once
    the transaction that read or made it has committed: a salt made in a transaction that
    rolls back is never remembered, so a concurrent call's committed salt is the one that wins.
    """
    cached = _COMMITTED_SALTS.get(tenant.pk)
    if cached is not None:
        return cached
    row, _ = FingerprintSalt.objects.get_or_create(
        tenant=tenant, defaults={"salt": new_fingerprint_salt().hex()}
    )
    salt = bytes.fromhex(row.salt)
    transaction.on_commit(lambda: _remember_salt(tenant.pk, salt))
    return salt


def _remember_salt(tenant_id: uuid.UUID, salt: bytes) -> None:
    if len(_COMMITTED_SALTS) >= _COMMITTED_SALTS_MAX:
        _COMMITTED_SALTS.clear()
    _COMMITTED_SALTS[tenant_id] = salt


def key_fingerprints(*, tenant: Tenant, provider: str, key: str) -> tuple[Fingerprint, str]:
    """A key's v2 fingerprint (with its hint) and its legacy v1 value: what a blocklist entry
    may name it by."""
    current = tenant_fingerprint(provider=provider, key=key, salt=fingerprint_salt(tenant=tenant))
    return current, legacy_fingerprint(provider=provider, key=key).value


class BlockedKeyExists(ValidationError):
    """The key is already on the tenant's blocklist."""


# Called with the new entry once it is committed; answers how many runs it cancelled. Runs are
# cancelled by the runs app, which sits above custody and registers the handler (runs.apps).
KeyBlockedHandler = Callable[..., int]
_key_blocked_handler: KeyBlockedHandler | None = None


def register_key_blocked_handler(handler: KeyBlockedHandler) -> None:
    global _key_blocked_handler
    _key_blocked_handler = handler


@dataclass(frozen=True)
class KeyBlocked:
    blocked_key: BlockedKey
    cancelled_runs: int


def blocked_key_add(
    *,
    tenant: Tenant,
    provider: str,
    actor: Actor,
    fingerprint: str | None = None,
    key: ProviderSecret | None = None,
    reason: str = "",
    request: HttpRequest | None = None,
) -> KeyBlocked:
    """Register a key as compromised, by fingerprint or by the key itself, and cancel the
    tenant's queued and running runs that hold it.

    A key given is fingerprinted at once (v2 under the tenant's salt, and v1 to find runs
    recorded before v2) and never stored or logged; only its fingerprint and hint are kept.
    BlockedKeyExists when the tenant already blocked that fingerprint for that provider.
    """
    hint = ""
    also: set[str] = set()
    if key is not None and fingerprint is None:
        current, legacy = key_fingerprints(tenant=tenant, provider=provider, key=key.reveal())
        fingerprint, hint = current.value, current.hint
        also.add(legacy)
    elif fingerprint is None or key is not None:
        raise ValueError("give a fingerprint or a key, not both")
    try:
        with transaction.atomic():
            blocked = BlockedKey.objects.create(
                tenant=tenant,
                provider=provider,
                fingerprint=fingerprint,
                hint=hint,
                reason=reason,
                created_by=actor.label,
            )
            audit_record(
                tenant=tenant,
                action="blocked_key.added",
                actor=actor,
                target=f"blocked_key:{blocked.pk}",
                metadata={
                    "provider": provider,
                    "fingerprint": fingerprint,
                    "hint": hint,
                    "reason": reason,
                    "given": "key" if key is not None else "fingerprint",
                },
                request=request,
            )
    except IntegrityError:
        if not BlockedKey.objects.filter(
            tenant=tenant, provider=provider, fingerprint=fingerprint
        ).exists():
            raise
        raise BlockedKeyExists(f"this {provider} key is already blocked") from None
    cancelled = 0
    if _key_blocked_handler is not None:
        # Committed first: a run created meanwhile either saw the entry (run_create checks it
        # again under the audit-chain lock) or is committed and found here.
        cancelled = _key_blocked_handler(
            tenant=tenant,
            provider=provider,
            fingerprints={fingerprint, *also},
            actor=actor,
            request=request,
        )
    return KeyBlocked(blocked_key=blocked, cancelled_runs=cancelled)


@transaction.atomic
def blocked_key_remove(
    *, blocked_key: BlockedKey, actor: Actor, request: HttpRequest | None = None
) -> None:
    """Take a key off the blocklist: runs may present it again."""
    pk = blocked_key.pk
    BlockedKey.objects.filter(pk=pk).delete()
    audit_record(
        tenant=blocked_key.tenant,
        action="blocked_key.removed",
        actor=actor,
        target=f"blocked_key:{pk}",
        metadata={"provider": blocked_key.provider, "fingerprint": blocked_key.fingerprint},
        request=request,
    )
