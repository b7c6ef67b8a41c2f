"""Fingerprints of customer keys: which key ran which run, without keeping the key.

The fingerprint is an HMAC-SHA256 of the provider and the key under a secret derived from
SECRET_KEY for this purpose alone (HKDF, its own label), so it can't be confused with, or
used as, any other MAC the platform computes. The hint shows at most a known prefix and the
last four characters.
"""

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Longest first: the hint shows the most specific prefix that matches.
KNOWN_PREFIXES = ("sk-ant-api03-", "sk-ant-admin01-", "sk-ant-", "sk-proj-", "sk-svcacct-", "sk-")
# Keys shorter than this get no last-four in their hint: four characters of a short key are
# too large a part of it.
MIN_LENGTH_FOR_LAST_FOUR = 20


@dataclass(frozen=True)
class Fingerprint:
    value: str  # 64 hex characters
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


def fingerprint(*, provider: str, key: str) -> Fingerprint:
    """The fingerprint and display hint of a customer's key for a provider."""
    from django.conf import settings

    secret = _fingerprint_secret(settings.SECRET_KEY)
    message = f"{provider}\x00{key}".encode()
    return Fingerprint(
        value=hmac.new(secret, message, hashlib.sha256).hexdigest(), hint=key_hint(key)
    )
