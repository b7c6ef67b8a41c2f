"""The audit chain key (HMAC) and the checkpoint signing keys (Ed25519), read from settings.

Neither lives in the database, so someone who can only write the database can neither append an
event that verifies nor sign a checkpoint. Keys are named by key ids that can be published:

- chain key id: the first 8 hex digits of SHA-256 over a fixed label and the key;
- signing key id: the first 16 hex digits of SHA-256 over the raw 32-byte public key.

Both keys are 32 random bytes in urlsafe base64 (`manage.py audit-checkpoint --generate-keys`
prints a pair). Parsing is cached per settings value, so tests that override settings see the
new keys at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

_RAW = serialization.Encoding.Raw
_PEM = serialization.Encoding.PEM


class AuditKeyError(ValueError):
    """A configured audit key is malformed or missing (never contains the key)."""


def _decode32(value: str, name: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise AuditKeyError(f"{name} is not urlsafe base64") from None
    if len(raw) != 32:
        raise AuditKeyError(f"{name} must be 32 bytes in urlsafe base64, not {len(raw)} bytes")
    return raw


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def generate_secret() -> str:
    """32 random bytes in urlsafe base64: a fresh AUDIT_CHAIN_KEY or AUDIT_SIGNING_KEY."""
    return _b64(secrets.token_bytes(32))


def chain_key_id(raw: bytes) -> str:
    return hashlib.sha256(b"swrly-audit-chain-key\0" + raw).hexdigest()[:8]


def signing_key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class ChainKeyring:
    current_id: str
    keys: dict[str, bytes]  # key id -> key, current first

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]


@lru_cache(maxsize=8)
def _chain_keyring(current: str, fallbacks: tuple[str, ...]) -> ChainKeyring:
    if not current:
        raise AuditKeyError("AUDIT_CHAIN_KEY is not set")
    keys: dict[str, bytes] = {}
    for index, value in enumerate((current, *fallbacks)):
        name = "AUDIT_CHAIN_KEY" if index == 0 else f"AUDIT_CHAIN_KEY_FALLBACKS[{index - 1}]"
        raw = _decode32(value, name)
        key_id = chain_key_id(raw)
        if key_id in keys:
            raise AuditKeyError(f"{name} repeats chain key {key_id}")
        keys[key_id] = raw
    return ChainKeyring(current_id=next(iter(keys)), keys=keys)


def chain_keyring() -> ChainKeyring:
    """The HMAC keys of the audit chain: the current one (new events) and the fallbacks."""
    return _chain_keyring(settings.AUDIT_CHAIN_KEY, tuple(settings.AUDIT_CHAIN_KEY_FALLBACKS))


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    raw: bytes
    rank: int  # 0: current; 1, 2, ...: retired, most recently retired first

    @property
    def status(self) -> str:
        return "current" if self.rank == 0 else "retired"

    @property
    def public_key(self) -> str:
        return _b64(self.raw)

    @property
    def pem(self) -> str:
        return (
            Ed25519PublicKey.from_public_bytes(self.raw)
            .public_bytes(_PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )


@dataclass(frozen=True)
class SigningKeyring:
    private: Ed25519PrivateKey | None  # only where checkpoints are signed
    public: dict[str, PublicKey]  # key id -> key, current first

    @property
    def current(self) -> PublicKey:
        return next(iter(self.public.values()))


@lru_cache(maxsize=8)
def _signing_keyring(private: str, public: str, retired: tuple[str, ...]) -> SigningKeyring:
    private_key = None
    current_raw = None
    if private:
        private_key = Ed25519PrivateKey.from_private_bytes(_decode32(private, "AUDIT_SIGNING_KEY"))
        current_raw = private_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    if public:
        public_raw = _decode32(public, "AUDIT_SIGNING_PUBLIC_KEY")
        if current_raw is not None and public_raw != current_raw:
            raise AuditKeyError(
                "AUDIT_SIGNING_PUBLIC_KEY is not the public half of AUDIT_SIGNING_KEY"
            )
        current_raw = public_raw
    if current_raw is None:
        raise AuditKeyError("AUDIT_SIGNING_KEY (or AUDIT_SIGNING_PUBLIC_KEY) is not set")
    keys: dict[str, PublicKey] = {}
    for rank, value in enumerate((None, *retired)):
        if value is None:
            raw = current_raw
        else:
            raw = _decode32(value, f"AUDIT_SIGNING_KEY_FALLBACKS[{rank - 1}]")
            Ed25519PublicKey.from_public_bytes(raw)
        key_id = signing_key_id(raw)
        if key_id in keys:
            raise AuditKeyError(f"signing key {key_id} is listed twice")
        keys[key_id] = PublicKey(key_id=key_id, raw=raw, rank=rank)
    return SigningKeyring(private=private_key, public=keys)


def signing_keyring() -> SigningKeyring:
    """The checkpoint keys: the current one (private where this process signs) and retired ones.

    AUDIT_SIGNING_KEY_FALLBACKS lists retired *public* keys, most recently retired first: they
    still verify the checkpoints they signed, and a chain that already has a checkpoint by a
    newer key refuses any later checkpoint they sign.
    """
    return _signing_keyring(
        settings.AUDIT_SIGNING_KEY,
        settings.AUDIT_SIGNING_PUBLIC_KEY,
        tuple(settings.AUDIT_SIGNING_KEY_FALLBACKS),
    )


def public_key_of(private: str) -> str:
    """The urlsafe-base64 public key of an AUDIT_SIGNING_KEY value."""
    key = Ed25519PrivateKey.from_private_bytes(_decode32(private, "AUDIT_SIGNING_KEY"))
    return _b64(key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


@lru_cache(maxsize=16384)
def signature_valid(public_raw: bytes, payload: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public_raw`'s Ed25519 signature of `payload`.

    A pure function of its arguments, so its answers are cached in memory: a page view
    re-verifies only checkpoints this process has not seen (the database is never trusted for
    this; a changed row is a different payload).
    """
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
