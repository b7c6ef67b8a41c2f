"""Fingerprints of customer keys: which key ran which run, without keeping the key.

Two versions, told apart by their form (docs/security.md, "Key fingerprints"):

- **v2** (`v2:` and 64 hex characters), every new fingerprint: HMAC-SHA256 of
  `f"{provider}\x00{key}"` under the tenant's fingerprint salt (32 random bytes per tenant,
  which its owners, admins and auditors can read). A customer computes it for a key in their
  own secrets manager; the same key in two tenants has two unrelated fingerprints.
- **v1** (64 hex characters, no prefix), legacy: the same message under a secret derived from
  SECRET_KEY for this purpose alone (HKDF, its own label). Rows and events written before v2
  keep them; nobody outside Swrly can compute them.

The hint shows at most a known prefix and the last four characters.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Longest first: the hint shows the most specific prefix that matches.
KNOWN_PREFIXES = ("sk-ant-api03-", "sk-ant-admin01-", "sk-ant-", "sk-proj-", "sk-svcacct-", "sk-")
# Keys shorter than this get no last-four in their hint: four characters of a short key are
# too large a part of it.
MIN_LENGTH_FOR_LAST_FOUR = 20


V2_PREFIX = "v2:"
SALT_BYTES = 32
# A whole fingerprint as stored or given: v2 (prefixed) or legacy v1 (bare hex).
FINGERPRINT_PATTERN = re.compile(r"(?:v2:)?[0-9a-f]{64}")


@dataclass(frozen=True)
class Fingerprint:
    value: str  # "v2:" and 64 hex characters (v1: the 64 hex characters alone)
    hint: str  # e.g. "sk-ant-api03-…x9Qa"


@lru_cache(maxsize=4)
def _fingerprint_secret(secret_key: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"swrly.byok.fingerprint.v1",
        info=b"provider-key-fingerprint",
    ).derive(secret_key.encode())


def key_hint(key: str) -> str:
    """A display hint: a known prefix (if any) and the last four characters of a long key."""
    prefix = next((p for p in KNOWN_PREFIXES if key.startswith(p)), "")
    last_four = key[-4:] if len(key) >= MIN_LENGTH_FOR_LAST_FOUR else ""
    return f"{prefix}…{last_four}"


def _message(provider: str, key: str) -> bytes:
    return f"{provider}\x00{key}".encode()


def new_fingerprint_salt() -> bytes:
    """A tenant's fingerprint salt: 32 random bytes."""
    return secrets.token_bytes(SALT_BYTES)


def tenant_fingerprint(*, provider: str, key: str, salt: bytes) -> Fingerprint:
    """The v2 fingerprint and display hint of a customer's key, under the tenant's salt."""
    if len(salt) != SALT_BYTES:
        raise ValueError("a fingerprint salt is 32 bytes")
    digest = hmac.new(salt, _message(provider, key), hashlib.sha256).hexdigest()
    return Fingerprint(value=V2_PREFIX + digest, hint=key_hint(key))


def legacy_fingerprint(*, provider: str, key: str) -> Fingerprint:
    """The v1 fingerprint (under a secret derived from SECRET_KEY): for rows and runs recorded
    before v2, and for request hashes that must not change across the upgrade."""
    from django.conf import settings

    secret = _fingerprint_secret(settings.SECRET_KEY)
    digest = hmac.new(secret, _message(provider, key), hashlib.sha256).hexdigest()
    return Fingerprint(value=digest, hint=key_hint(key))


def fingerprint_version(value: str) -> int:
    """2 for a `v2:` fingerprint, 1 for a legacy one."""
    return 2 if value.startswith(V2_PREFIX) else 1


def fingerprint_matches(*, provider: str, key: str, expected: str, salt: bytes) -> bool:
    """Whether `key` is the key `expected` (either version) was computed from; constant time."""
    if fingerprint_version(expected) == 2:
        actual = tenant_fingerprint(provider=provider, key=key, salt=salt).value
    else:
        actual = legacy_fingerprint(provider=provider, key=key).value
    return hmac.compare_digest(actual.encode(), expected.encode())


# How much of a fingerprint is shown beside a hint: two keys with the same prefix and last four
# characters have the same hint, and 8 hex digits tell them apart (and are what the runs list's
# fingerprint filter takes: 8 or more).
FINGERPRINT_PREFIX_CHARS = 8


def fingerprint_prefix(value: str) -> str:
    """The first hex digits of a fingerprint (after `v2:`), shown beside a key's hint."""
    return value.removeprefix(V2_PREFIX)[:FINGERPRINT_PREFIX_CHARS]


def key_name(hint: str, fingerprint: str) -> str:
    """How a key is named in text: its hint and its fingerprint's prefix, "sk-…x9Qa (fp
    3f9a0c1d)"; either alone when the other is unknown."""
    prefix = fingerprint_prefix(fingerprint or "")
    if hint and prefix:
        return f"{hint} (fp {prefix})"
    return hint or (f"fp {prefix}" if prefix else "")
