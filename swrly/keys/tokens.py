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
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from django.views.decorators.debug import sensitive_variables

from swrly.keys.errors import TokenAuthenticationFailed
from swrly.keys.keyring import KEY_ID_BYTES, TOKEN_VERSION, KeyEntry, Keyring
from swrly.providers import PROVIDER_NAMES

VERSION = TOKEN_VERSION
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
    if type(value) is uuid.UUID:
        return str(value)  # canonical 36-character hex-and-dash form: always valid
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ValueError(f"{name} must be 1-64 characters from A-Z a-z 0-9 _ . -")
    return value


# The associated data's tail for each provider name seen (b"\x00" + name), built once: provider
# names come from a short registry, so this stays as small as it. A name that fails validation
# is never stored.
_PROVIDER_TAILS: dict[str, bytes] = {}


def _provider_tail(provider: str) -> bytes:
    tail = _PROVIDER_TAILS.get(provider) if type(provider) is str else None
    if tail is None:
        name = _field("provider", provider)
        tail = b"\x00" + name.encode()
        if name in PROVIDER_NAMES:
            _PROVIDER_TAILS[name] = tail
    return tail


class Binding(NamedTuple):
    """What a token is bound to, validated once per operation: the three ids and the
    associated data built from them (the Redis key is built from the same strings)."""

    tenant_id: str
    run_id: str
    provider: str
    ad: bytes


def bind(*, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str) -> Binding:
    """The validated binding of a token; ValueError when an id could be ambiguous.

    Each id is checked once here; the Redis key and the associated data are then built from
    the checked strings, so one operation validates its ids once (not once per use).
    """
    tenant = _field("tenant_id", tenant_id)
    run = _field("run_id", run_id)
    tail = _provider_tail(provider)
    ad = b"".join((AD_LABEL, tenant.encode(), b"\x00", run.encode(), tail))
    return Binding(tenant, run, provider, ad)


def bound_fields(
    *, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str
) -> tuple[str, str, str]:
    """The validated (tenant_id, run_id, provider) strings a token is bound to."""
    return _field("tenant_id", tenant_id), _field("run_id", run_id), _field("provider", provider)


def associated_data(*, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str) -> bytes:
    """The associated data binding a token to its tenant, run and provider."""
    return bind(tenant_id=tenant_id, run_id=run_id, provider=provider).ad


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
    return b"".join((entry.token_prefix, nonce, entry.aead.encrypt(nonce, plaintext, ad)))


def _open_bytes(keyring: Keyring, token: bytes, ad: bytes) -> bytes:
    entry = keyring.by_id(token_key_id(token))
    return _open_with(entry, token, ad)


def _open_with(entry: KeyEntry, token: bytes, ad: bytes) -> bytes:
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
    ad = bind(tenant_id=tenant_id, run_id=run_id, provider=provider).ad
    return _seal_bytes(keyring, plaintext.encode(), ad)


@sensitive_variables("plaintext")
def seal_bound(keyring: Keyring, binding: Binding, plaintext: str) -> bytes:
    """seal() for a binding the caller already validated with bind() (the key store's path)."""
    return _seal_bytes(keyring, plaintext.encode(), binding.ad)


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
    ad = bind(tenant_id=tenant_id, run_id=run_id, provider=provider).ad
    return _decoded(_open_bytes(keyring, token, ad))


@sensitive_variables("plaintext")
def open_bound(keyring: Keyring, token: bytes, binding: Binding) -> tuple[str, bytes]:
    """open_token() for a binding the caller already validated with bind(), and the key id the
    token named (read once: the caller reports it)."""
    key_id = token_key_id(token)
    return _decoded(_open_with(keyring.by_id(key_id), token, binding.ad)), key_id


@sensitive_variables("plaintext")
def _decoded(plaintext: bytes) -> str:
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
    return rewrap_bound(keyring, token, bind(tenant_id=tenant_id, run_id=run_id, provider=provider))


@sensitive_variables("plaintext")
def rewrap_bound(
    keyring: Keyring, token: bytes, binding: Binding, key_id: bytes | None = None
) -> bytes:
    """rewrap() for a binding the caller already validated with bind(); `key_id`, when the
    caller already read it from the token, spares reading it again."""
    entry = keyring.by_id(token_key_id(token) if key_id is None else key_id)
    plaintext = _open_with(entry, token, binding.ad)
    return _seal_bytes(keyring, plaintext, binding.ad)
