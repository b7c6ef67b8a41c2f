"""The BYOK token store in Redis: deposit once (SET EX NX), consume once (GETDEL), discard (DEL).

Each operation is a single Redis command (a deposit: one EVALSHA of a script that counts the seal
and does the SET NX EX), so nothing is ever half-written and exactly one consumer can ever take
a token. Redis failures become KeyStoreUnavailable. It logs one thing
only, a token that fails to open (to `swrly.security`: the error and the tenant, run and
provider ids); no log line and no exception of it ever holds a key, a token or the Redis URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from swrly import metrics
from swrly.keys.errors import (
    InvalidKey,
    InvalidProvider,
    KeyStoreUnavailable,
    TokenAuthenticationFailed,
    TokenExists,
    TokenMissing,
    UnknownKeyId,
)
from swrly.keys.keyring import get_keyring
from swrly.keys.secret import ProviderSecret
from swrly.keys.tokens import Binding, bind, bound_fields, open_bound, seal_bound
from swrly.keys.usage import DEPOSIT_SCRIPT, SHARDS, usage_key
from swrly.providers import PROVIDER_NAMES
from swrly.redis_urls import Client, redis_client

security_log = logging.getLogger("swrly.security")

KEY_MIN_LENGTH = 8
KEY_MAX_LENGTH = 512
DEFAULT_TTL = 900
TTL_MIN = 1
TTL_MAX = 86400
SOCKET_TIMEOUT = 2

_PRINTABLE_NO_SPACE = re.compile(r"[\x21-\x7e]+")
# The alphabet of the keys Anthropic and OpenAI issue (sk-ant-api03-…, sk-proj-…): base64url.
KEY_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
KEY_ALPHABET_TEXT = "letters, digits, '-' and '_'"

# A token's Redis key: swrly:byok:v1:{<shard>}:<tenant id>:<run id>:<provider>. The shard, two
# hex digits from the tenant and run ids, is a Redis Cluster hash tag: a run's tokens share a
# slot, and the deposit script's usage counter of that shard (swrly.keys.usage) lives in it too.
KEY_PREFIX = "swrly:byok:v1:"
KEY_PATTERN = KEY_PREFIX + "*"
_TAGGED_KEY = re.compile(r"\{([0-9a-f]{2})\}:([^:]+):([^:]+):([^:]+)")


@dataclass(frozen=True)
class DepositReceipt:
    """What a deposit stored: where, under which encryption key, and until when."""

    redis_key: str
    key_id_hex: str
    ttl: int
    expires_at: datetime


# --- Redis keys ----------------------------------------------------------------------------


def redis_key(*, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str) -> str:
    """The Redis key of the token for a tenant, run and provider."""
    tenant, run, name = bound_fields(tenant_id=tenant_id, run_id=run_id, provider=provider)
    return f"{KEY_PREFIX}{{{shard(tenant, run)}}}:{tenant}:{run}:{name}"


def shard(tenant_id: str, run_id: str) -> str:
    """The hash tag of a run's tokens: two hex digits (SHARDS of them) from the ids."""
    return f"{zlib.crc32(f'{tenant_id}:{run_id}'.encode()) % SHARDS:02x}"


def shard_of(key: str | bytes) -> str:
    """The shard a token key is tagged with; ValueError when it is not a token key."""
    text = key.decode() if isinstance(key, bytes) else key
    match = _TAGGED_KEY.fullmatch(text[len(KEY_PREFIX) :]) if text.startswith(KEY_PREFIX) else None
    if match is None:
        raise ValueError("not a BYOK token key")
    return match[1]


def _bound_key(binding: Binding) -> str:
    """redis_key() from ids bind() already validated."""
    tag = shard(binding.tenant_id, binding.run_id)
    return f"{KEY_PREFIX}{{{tag}}}:{binding.tenant_id}:{binding.run_id}:{binding.provider}"


def parse_redis_key(key: str | bytes) -> tuple[str, str, str]:
    """(tenant_id, run_id, provider) from a Redis key; ValueError when it is not a token key."""
    tenant, run, provider, _ = parse_bound_key(key)
    return tenant, run, provider


def parse_bound_key(key: str | bytes) -> Binding:
    """The binding (ids checked once, associated data built) a token key names; ValueError
    when it is not a token key. Rotation opens and reseals each token with it."""
    text = key.decode() if isinstance(key, bytes) else key
    match = _TAGGED_KEY.fullmatch(text[len(KEY_PREFIX) :]) if text.startswith(KEY_PREFIX) else None
    if match is None:
        raise ValueError("not a BYOK token key")
    binding = bind(tenant_id=match[2], run_id=match[3], provider=match[4])
    if match[1] != shard(binding.tenant_id, binding.run_id):
        raise ValueError("not a BYOK token key")  # a tag that is not the ids' own
    return binding


# --- Connection ----------------------------------------------------------------------------


# One client per URL in this process. Emptied in a forked child (below), so a child never uses
# its parent's client or sockets; keying by URL alone spares an os.getpid() per operation.
_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def _reset_in_child() -> None:
    """After fork: no client of the parent's, and a fresh lock (one held by another thread of
    the parent would never be freed)."""
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_in_child)


def _redis_url() -> str:
    url: str = getattr(settings, "BYOK_REDIS_URL", None) or settings.REDIS_URL
    return url


def get_client() -> Client:
    """The redis-py client of the key store (BYOK_REDIS_URL, else REDIS_URL), one per URL: a
    single server, a Sentinel-managed primary or a cluster (swrly.redis_urls).

    Connect and read time out after 2 s and failed commands are not retried: a retried SET NX
    or GETDEL whose first reply was lost would report the wrong outcome. KeyStoreUnavailable
    when a cluster's slot map cannot be read (the only client built by connecting).
    """
    url = _redis_url()
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                try:
                    client = redis_client(url, socket_timeout=SOCKET_TIMEOUT)
                except redis.RedisError as exc:  # a cluster whose slot map could not be read
                    raise _unavailable(exc, "connect") from exc
                _clients[url] = client
    return client


def _unavailable(exc: redis.RedisError, action: str) -> KeyStoreUnavailable:
    if isinstance(exc, redis.TimeoutError):
        what = "did not answer within the timeout"
    elif isinstance(exc, redis.ConnectionError):
        what = "is unreachable"
    else:
        what = f"refused the command ({type(exc).__name__})"
    return KeyStoreUnavailable(f"the key store (BYOK_REDIS_URL) {what} during {action}")


# --- Validation ----------------------------------------------------------------------------


def _check_provider(provider: object) -> str:
    if not isinstance(provider, str) or provider not in PROVIDER_NAMES:
        raise InvalidProvider(PROVIDER_NAMES)
    return provider


@sensitive_variables("key")
def validate_key(*, provider: str, key: object) -> str:
    """`key` if it may be deposited; InvalidKey naming the broken rule otherwise.

    Letters, digits, `-` and `_` only (the alphabet of every key Anthropic and OpenAI issue):
    a key travels in an HTTP header, where a newline or control character could inject another
    header, and a key that no escaping (JSON, HTML, URL) changes is found by redaction wherever
    a provider echoes it.
    """
    if (
        type(key) is str
        and KEY_MIN_LENGTH <= len(key) <= KEY_MAX_LENGTH
        and KEY_ALPHABET.fullmatch(key)
    ):
        return key  # valid: one check; an invalid key goes through the rules below for its message
    if not isinstance(key, str):
        raise InvalidKey(provider, "is not a string")
    if not key:
        raise InvalidKey(provider, "is empty")
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidKey(provider, f"is longer than {KEY_MAX_LENGTH} characters")
    if not key.isascii():
        raise InvalidKey(provider, "contains characters outside printable ASCII")
    if not _PRINTABLE_NO_SPACE.fullmatch(key):
        raise InvalidKey(provider, "contains whitespace or control characters")
    if not KEY_ALPHABET.fullmatch(key):
        raise InvalidKey(provider, f"contains characters other than {KEY_ALPHABET_TEXT}")
    if len(key) < KEY_MIN_LENGTH:
        raise InvalidKey(provider, f"is shorter than {KEY_MIN_LENGTH} characters")
    return key


def _ttl(ttl: int | None) -> int:
    if ttl is None:
        ttl = getattr(settings, "BYOK_TOKEN_TTL", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError("the token TTL must be an integer number of seconds")
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise ValueError(f"the token TTL must be between {TTL_MIN} and {TTL_MAX} seconds")
    return ttl


# --- Operations ----------------------------------------------------------------------------


@sensitive_variables("key", "token")
def deposit(
    *,
    tenant_id: str | uuid.UUID,
    run_id: str | uuid.UUID,
    provider: str,
    key: str,
    ttl: int | None = None,
) -> DepositReceipt:
    """Encrypt a customer's key and store it for one run with `SET … EX ttl NX`.

    InvalidProvider / InvalidKey for bad input; ValueError for a TTL outside 1..86400 s;
    TokenExists when a token is already stored for this tenant, run and provider (it is never
    overwritten); KeyStoreUnavailable when Redis fails. After a timeout the SET may or may not
    have been applied (it is atomic either way): discard() before giving up on the run.
    """
    provider = _check_provider(provider)
    validate_key(provider=provider, key=key)
    seconds = _ttl(ttl)
    binding = bind(tenant_id=tenant_id, run_id=run_id, provider=provider)
    name = _bound_key(binding)
    keyring = get_keyring()
    current = keyring.current
    token = seal_bound(keyring, binding, key)
    started = time.perf_counter()
    try:
        # One round trip: the seal is counted (swrly.keys.usage) and stored by one script.
        tag = shard(binding.tenant_id, binding.run_id)
        stored = _run_deposit_script(get_client(), tag, name, current.key_id_hex, token, seconds)
    except redis.RedisError as exc:
        metrics.key_store_op("deposit", "unavailable", started)
        raise _unavailable(exc, "deposit") from exc
    metrics.key_store_op("deposit", "stored" if stored else "exists", started)
    if not stored:
        raise TokenExists(tenant_id=str(tenant_id), run_id=str(run_id), provider=provider)
    return DepositReceipt(
        redis_key=name,
        key_id_hex=current.key_id_hex,
        ttl=seconds,
        expires_at=datetime.now(UTC) + timedelta(seconds=seconds),
    )


DEPOSIT_SHA = hashlib.sha1(DEPOSIT_SCRIPT.encode(), usedforsecurity=False).hexdigest()


@sensitive_variables("token")
def _run_deposit_script(
    client: Client, tag: str, name: str, key_id_hex: str, token: bytes, seconds: int
) -> int:
    """EVALSHA of the deposit script; loaded once more on NOSCRIPT (a restarted or flushed
    script cache, a promoted replica, a cluster node that never saw it), which is safe to retry:
    NOSCRIPT means the script did not run. Both keys carry the shard's hash tag: one slot."""
    # redis-py's annotations want str arguments; it sends bytes and ints as they are.
    args: tuple[Any, ...] = (usage_key(tag), name, key_id_hex, token, seconds)
    try:
        return cast("int", client.evalsha(DEPOSIT_SHA, 2, *args))
    except redis.exceptions.NoScriptError:
        client.script_load(DEPOSIT_SCRIPT)
        return cast("int", client.evalsha(DEPOSIT_SHA, 2, *args))


@sensitive_variables("plaintext", "token")
def consume(
    *, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str
) -> ProviderSecret:
    """Take the run's token with GETDEL and decrypt it: only one caller can ever get it.

    Returns a ProviderSecret whose key_id_hex names the encryption key that sealed it.
    TokenMissing when there is none (expired, discarded or already taken); UnknownKeyId when its
    encryption key was retired; TokenAuthenticationFailed when it was tampered with or moved;
    KeyStoreUnavailable when Redis fails. A token that fails to open is gone all the same: it is
    never retried with another key. After a timeout the token may or may not have been taken.
    """
    provider = _check_provider(provider)
    binding = bind(tenant_id=tenant_id, run_id=run_id, provider=provider)
    started = time.perf_counter()
    try:
        # redis-py types a reply as "Awaitable or Any" for its sync and asyncio clients alike.
        token = cast("bytes | None", get_client().getdel(_bound_key(binding)))
    except redis.RedisError as exc:
        metrics.key_store_op("consume", "unavailable", started)
        raise _unavailable(exc, "consume") from exc
    metrics.key_store_op("consume", "missing" if token is None else "taken", started)
    if token is None:
        raise TokenMissing(tenant_id=str(tenant_id), run_id=str(run_id), provider=provider)
    try:
        plaintext, key_id = open_bound(get_keyring(), token, binding)
    except (TokenAuthenticationFailed, UnknownKeyId) as exc:
        # A security event: the caller also audits it (key.rejected) in the tenant's log.
        security_log.warning(
            "BYOK token rejected: %s (tenant %s, run %s, provider %s)",
            exc,
            tenant_id,
            run_id,
            provider,
        )
        raise
    return ProviderSecret(plaintext, key_id_hex=key_id.hex())


def discard(*, tenant_id: str | uuid.UUID, run_id: str | uuid.UUID, provider: str) -> bool:
    """Delete the run's token (a run cancelled before it started); True if one was deleted."""
    provider = _check_provider(provider)
    name = redis_key(tenant_id=tenant_id, run_id=run_id, provider=provider)
    try:
        return bool(get_client().delete(name))
    except redis.RedisError as exc:
        raise _unavailable(exc, "discard") from exc
