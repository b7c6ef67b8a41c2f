"""The encryption keys that seal BYOK tokens: BYOK_ENCRYPTION_KEY and its fallbacks.

Like SECRET_KEY / SECRET_KEY_FALLBACKS: new tokens use the current key; a token is opened with
the key its key id names. A key id is the first 8 bytes of HMAC-SHA256(key, KEY_ID_LABEL):
stable across processes and restarts, and useless for recovering the key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from swrly.keys.errors import KeyringError, UnknownKeyId

KEY_BYTES = 32
KEY_ID_BYTES = 8
KEY_ID_LABEL = b"swrly.byok.key-id.v1"
TOKEN_VERSION = 0x01  # swrly.keys.tokens.VERSION: the first byte of every token
CURRENT_VARIABLE = "BYOK_ENCRYPTION_KEY"
FALLBACKS_VARIABLE = "BYOK_ENCRYPTION_KEY_FALLBACKS"

_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def key_id_for(key: bytes) -> bytes:
    """The 8-byte key id of a raw 32-byte encryption key."""
    return hmac.new(key, KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


def generate_key() -> str:
    """A new random encryption key in the format BYOK_ENCRYPTION_KEY expects (padded base64)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True)
class KeyEntry:
    """One encryption key of the keyring: its id, the variable it came from, and its AEAD."""

    key_id: bytes
    variable: str
    aead: AESGCM = field(repr=False, compare=False)

    @functools.cached_property
    def key_id_hex(self) -> str:
        """The key id as 16 hex characters, as shown in rotation records and commands."""
        return self.key_id.hex()

    @functools.cached_property
    def token_prefix(self) -> bytes:
        """The first bytes of every token this key seals: the token version and the key id
        (swrly.keys.tokens), built once per key rather than once per token."""
        return bytes([TOKEN_VERSION]) + self.key_id


@dataclass(frozen=True)
class Keyring:
    """The current key and the fallbacks, indexed by key id."""

    current: KeyEntry
    fallbacks: tuple[KeyEntry, ...] = ()
    _by_id: dict[bytes, KeyEntry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in (self.current, *self.fallbacks):
            self._by_id.setdefault(entry.key_id, entry)

    @property
    def fallback_ids(self) -> tuple[bytes, ...]:
        """The key ids of the fallback keys, in the order of the setting."""
        return tuple(entry.key_id for entry in self.fallbacks)

    @property
    def ids(self) -> tuple[bytes, ...]:
        """Every key id the keyring can open: the current one first."""
        return (self.current.key_id, *self.fallback_ids)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def by_id(self, key_id: bytes) -> KeyEntry:
        """The key named by `key_id`; UnknownKeyId when it is not in the keyring (retired)."""
        try:
            return self._by_id[key_id]
        except KeyError:
            raise UnknownKeyId(bytes(key_id).hex()) from None


def _decode(variable: str, value: object) -> bytes:
    """The raw key from one setting value, or KeyringError naming the variable."""
    if not isinstance(value, str):
        raise KeyringError(variable, "must be a string")
    text = value.strip()
    if not text:
        raise KeyringError(variable, "is empty")
    if not _URLSAFE_B64.fullmatch(text):
        raise KeyringError(variable, "is not urlsafe base64 (characters A-Z a-z 0-9 - _ only)")
    unpadded = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise KeyringError(variable, "is not valid urlsafe base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(
            variable, f"decodes to {len(raw)} bytes; an encryption key must be {KEY_BYTES} bytes"
        )
    return raw


def parse_keyring(current: str, fallbacks: Sequence[str] | str) -> Keyring:
    """Build a keyring from the two settings' values, or raise KeyringError naming the variable.

    Each value is 32 bytes in urlsafe base64, with or without padding; surrounding whitespace
    is ignored. A comma-separated string is accepted for the fallbacks. A fallback equal to the
    current key or to another fallback is an error: it is always a configuration mistake.
    """
    if isinstance(fallbacks, str):
        fallbacks = [part for part in fallbacks.split(",") if part.strip()]
    if not isinstance(current, str) or not current.strip():
        raise KeyringError(CURRENT_VARIABLE, "is not set")
    named: list[tuple[str, bytes]] = [(CURRENT_VARIABLE, _decode(CURRENT_VARIABLE, current))]
    for index, value in enumerate(fallbacks):
        variable = f"{FALLBACKS_VARIABLE}[{index}]"
        raw = _decode(variable, value)
        for earlier_variable, earlier in named:
            if hmac.compare_digest(raw, earlier):
                raise KeyringError(variable, f"duplicates {earlier_variable}")
        named.append((variable, raw))
    entries: list[KeyEntry] = []
    for variable, raw in named:
        key_id = key_id_for(raw)
        clash = next((e.variable for e in entries if e.key_id == key_id), None)
        if clash is not None:  # 2**-64 for distinct random keys; checked for completeness
            raise KeyringError(variable, f"has the same key id as {clash}; generate a new key")
        entries.append(KeyEntry(key_id=key_id, variable=variable, aead=AESGCM(raw)))
    return Keyring(current=entries[0], fallbacks=tuple(entries[1:]))


_cache_lock = threading.Lock()
_cached: tuple[tuple[str, tuple[str, ...]], Keyring] | None = None


def _reset_lock_in_child() -> None:
    """A fresh lock after fork: one held by another thread of the parent would never be freed."""
    global _cache_lock
    _cache_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def get_keyring() -> Keyring:
    """The keyring for the current settings, rebuilt whenever their values change.

    Settings are read on each call (tests and `override_settings` swap them); parsing happens
    only when the raw values differ from the cached ones.
    """
    global _cached
    current = getattr(settings, CURRENT_VARIABLE, "")
    fallbacks = getattr(settings, FALLBACKS_VARIABLE, None) or ()
    hit = _last_seen
    if hit is not None and hit[0] is current and hit[1] is fallbacks and hit[2] == fallbacks:
        # The very objects parsed last time, the fallbacks still equal to the copy kept then
        # (a list edited in place is noticed): no tuple to build, no strings to compare.
        return hit[3]
    raw_fallbacks = fallbacks
    if isinstance(fallbacks, str):
        fallbacks = [part for part in fallbacks.split(",") if part.strip()]
    raw = (current, tuple(fallbacks))
    cached = _cached
    if cached is not None and cached[0] == raw:
        keyring = cached[1]
    else:
        with _cache_lock:
            keyring = parse_keyring(raw[0], raw[1])
            _cached = (raw, keyring)
    _remember(current, raw_fallbacks, keyring)
    return keyring


# (current setting object, fallbacks setting object, a copy of the fallbacks, keyring): the
# identity fast path of get_keyring().
_last_seen: tuple[object, object, object, Keyring] | None = None


def _remember(current: object, fallbacks: object, keyring: Keyring) -> None:
    global _last_seen
    copy = list(fallbacks) if isinstance(fallbacks, list) else fallbacks
    _last_seen = (current, fallbacks, copy, keyring)
