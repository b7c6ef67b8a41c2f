"""The AES-GCM usage budget of the encryption keys: the ledger, its totals, their state.

The key store counts every seal at once (swrly.keys.usage); `encryption_key_usage_record`
moves those counts into the EncryptionKeyUsage ledger (beat, every minute, and `rotate-keys`),
and `encryption_key_usage` reads a key's total: the ledger plus what the key store still holds.
The encryption keys are the platform's, not a tenant's: these are operator facts, shown to
tenants on the key-history page because every tenant's tokens are sealed under them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from swrly.custody.models import EncryptionKeyUsage
from swrly.keys.errors import KeyServiceError
from swrly.keys.keyring import get_keyring
from swrly.keys.store import get_client
from swrly.keys.usage import DEFAULT_WARN_AT, SAFE_LIMIT, pending_seals, settle_seals


def encryption_key_usage_record() -> dict[str, int]:
    """Add the key store's pending seal counts to the ledger, then subtract them there.

    Returns what was moved, per key id. KeyStoreUnavailable when the key store does not answer
    (nothing is moved). The ledger commits before the key store is settled: a failure between
    the two counts those seals twice, never zero times.
    """
    client = get_client()
    pending = pending_seals(client)
    if not pending:
        return {}
    now = timezone.now()
    with transaction.atomic():
        for key_id, seals in sorted(pending.items()):  # in key order: no deadlock between two
            EncryptionKeyUsage.objects.get_or_create(
                key_id=key_id, defaults={"first_recorded_at": now, "last_recorded_at": now}
            )
            EncryptionKeyUsage.objects.filter(key_id=key_id).update(
                sealed=F("sealed") + seals, last_recorded_at=now
            )
    settle_seals(client, pending)
    return pending


def usage_warn_at() -> int:
    """BYOK_KEY_USAGE_WARN_AT: seals at which the budget is reported as running out."""
    return int(getattr(settings, "BYOK_KEY_USAGE_WARN_AT", DEFAULT_WARN_AT))


@dataclass(frozen=True)
class KeyUsage:
    """Seals under one encryption key: recorded in the ledger, pending in the key store."""

    key_id: str
    role: str  # "current", "fallback" or "retired" (no longer in the keyring)
    recorded: int
    pending: int | None  # None when the key store did not answer
    warn_at: int
    limit: int = SAFE_LIMIT

    @property
    def sealed(self) -> int:
        """The total known: ledger plus pending (the ledger alone when the key store is down)."""
        return self.recorded + (self.pending or 0)

    @property
    def percent(self) -> float:
        """The share of the 2**32 budget used, in percent."""
        return 100.0 * self.sealed / self.limit

    @property
    def warn_percent(self) -> float:
        """warn_at as a share of the budget, in percent."""
        return 100.0 * self.warn_at / self.limit

    @property
    def state(self) -> str:
        """ "exhausted" at the bound, "warning" from warn_at, else "ok"."""
        if self.sealed >= self.limit:
            return "exhausted"
        if self.sealed >= self.warn_at:
            return "warning"
        return "ok"


def encryption_key_usage() -> list[KeyUsage]:
    """Every encryption key that sealed a token or is in the keyring: current first.

    One query and one key-store read; `pending` is None for every key when the key store does
    not answer (the totals are then the ledger's, a lower bound).
    """
    keyring = get_keyring()
    current = keyring.current.key_id_hex
    fallbacks = {entry.key_id_hex for entry in keyring.fallbacks}
    recorded = dict(EncryptionKeyUsage.objects.values_list("key_id", "sealed"))
    pending: dict[str, int] | None
    try:
        pending = pending_seals(get_client())
    except KeyServiceError:
        pending = None
    ids = {current, *fallbacks, *recorded, *(pending or {})}

    def role(key_id: str) -> str:
        if key_id == current:
            return "current"
        return "fallback" if key_id in fallbacks else "retired"

    order = {"current": 0, "fallback": 1, "retired": 2}
    warn_at = usage_warn_at()
    rows = [
        KeyUsage(
            key_id=key_id,
            role=role(key_id),
            recorded=recorded.get(key_id, 0),
            pending=None if pending is None else pending.get(key_id, 0),
            warn_at=warn_at,
        )
        for key_id in ids
    ]
    return sorted(rows, key=lambda row: (order[row.role], row.key_id))
