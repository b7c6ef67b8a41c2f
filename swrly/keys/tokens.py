"""The BYOK token: a customer key sealed with AES-256-GCM, bound to its tenant, run and provider.

Layout (all lengths in bytes):

    offset  length  field
    0       1       version, 0x01
    1       8       key id of the encryption key (see swrly.keys.keyring)
    9       12      nonce, random (os.urandom) for every token
    21      n + 16  AES-256-GCM ciphertext of the UTF-8 key (n bytes) followed by the 16-byte tag

Associated data (authenticated, not stored):
b"swrly.byok.v1\\x00" + tenant_id + b"\\x00" + run_id + b"\\x00" + provider, each UTF-8. A token
copied under another tenant's, run's or provider's Redis key therefore fails authentication.
"""

from __future__ import annotations

import os
import re
import uuid

from cryptography.exceptions import InvalidTag
from django.views.decorators.debug import sensitive_variables

from swrly.keys.errors import TokenAuthenticationFailed
from swrly.keys.keyring import KEY_ID_BYTES, Keyring

VERSION = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
MIN_TOKEN_BYTES = HEADER_BYTES + TAG_BYTES
AD_LABEL = b"swrly.byok.v1\x00"

# Ids end up in the associated data (NUL-separated) and in the Redis key (colon-separated):
# neither separator, nor anything else surprising, may appear in them.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _field(name: str, value: str | uuid.UUID) -> str:
    """`value` as the string bound into a token; ValueError when it could be ambiguous."""
    text = str(value) if isinstance(value, uuid.UUID) else value
    if not isinstance(text, str) or not _ID_PATTERN.fullmatch(text):
        raise ValueError(f"{name} must be 1-64 characters from A-Z a-z 0-9 _ . -")
    return text


def bound_fields(
    *, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str
) -> tuple[str, str, str]:
    """The validated (tenant_id, run_id, provider) strings a token is bound to."""
    return _field("tenant_id", tenant_id), _field("run_id", run_id), _field("provider", provider)


def associated_data(*, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str) -> bytes:
    """The associated data binding a token to its tenant, run and provider."""
    tenant, run, name = bound_fields(tenant_id=tenant_id, run_id=run_id, provider=provider)
    return AD_LABEL + b"\x00".join(part.encode() for part in (tenant, run, name))


def _check_header(token: bytes) -> None:
    if not isinstance(token, bytes | bytearray | memoryview):
        raise TypeError("a token is bytes")
    if len(token) < 1 + KEY_ID_BYTES:
        raise TokenAuthenticationFailed(f"token truncated ({len(token)} bytes)")
    if token[0] != VERSION:
        raise TokenAuthenticationFailed(f"unknown token version {token[0]:#04x}")


def token_key_id(token: bytes) -> bytes:
    """The key id a token names; TokenAuthenticationFailed when it has no valid header."""
    _check_header(token)
    return bytes(token[1 : 1 + KEY_ID_BYTES])


def _seal_bytes(keyring: Keyring, plaintext: bytes, ad: bytes) -> bytes:
    entry = keyring.current
    nonce = os.urandom(NONCE_BYTES)
    return bytes([VERSION]) + entry.key_id + nonce + entry.aead.encrypt(nonce, plaintext, ad)


def _open_bytes(keyring: Keyring, token: bytes, ad: bytes) -> bytes:
    entry = keyring.by_id(token_key_id(token))
    if len(token) < MIN_TOKEN_BYTES:
        raise TokenAuthenticationFailed(f"token truncated ({len(token)} bytes)")
    nonce = bytes(token[1 + KEY_ID_BYTES : HEADER_BYTES])
    try:
        return entry.aead.decrypt(nonce, bytes(token[HEADER_BYTES:]), ad)
    except InvalidTag:
        raise TokenAuthenticationFailed(
            "tag mismatch (tampered with, or bound to another tenant, run or provider)"
        ) from None


@sensitive_variables("plaintext")
def seal(
    keyring: Keyring,
    *,
    tenant_id: str | uuid.UUID,
    run_id: str | uuid.UUID,
    provider: str,
    plaintext: str,
) -> bytes:
    """Encrypt `plaintext` under the keyring's current key into a token bound to its run."""
    ad = associated_data(tenant_id=tenant_id, run_id=run_id, provider=provider)
    return _seal_bytes(keyring, plaintext.encode(), ad)


@sensitive_variables("plaintext")
def open_token(
    keyring: Keyring,
    token: bytes,
    *,
    tenant_id: str | uuid.UUID,
    run_id: str | uuid.UUID,
    provider: str,
) -> str:
    """Decrypt a token with the key its key id names.

    UnknownKeyId when that key is not in the keyring (it was retired); TokenAuthenticationFailed
    when the token is malformed, tampered with, or bound to another tenant, run or provider.
    Exactly one key is tried: the key id says which.
    """
    ad = associated_data(tenant_id=tenant_id, run_id=run_id, provider=provider)
    plaintext = _open_bytes(keyring, token, ad)
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenAuthenticationFailed("decrypted value is not UTF-8") from None


@sensitive_variables("plaintext")
def rewrap(
    keyring: Keyring,
    token: bytes,
    *,
    tenant_id: str | uuid.UUID,
    run_id: str | uuid.UUID,
    provider: str,
) -> bytes:
    """The same key sealed again under the current key (fresh nonce), for `rotate-keys`.

    The token is opened with whichever key its id names, so the same errors as open_token apply.
    A token already under the current key is resealed too; callers skip those if they wish.
    The plaintext stays bytes and the associated data is built once: this runs per live token.
    """
    ad = associated_data(tenant_id=tenant_id, run_id=run_id, provider=provider)
    plaintext = _open_bytes(keyring, token, ad)
    return _seal_bytes(keyring, plaintext, ad)
