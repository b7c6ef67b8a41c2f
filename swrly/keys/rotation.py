"""Scanning live tokens: rewrapping them to the current encryption key (the engine of
`rotate-keys`), counting them, and finding those left untouched (for the orphan sweep).

Tokens are scanned in batches, node by node on a Redis Cluster (every primary; a single server
or a Sentinel-managed primary is the one node); each batch is read with one pipelined GET on
its node and written back with one pipelined compare-and-swap script there (a node's pipeline
is never retried, and NOSCRIPT loads the script on that node). The script replaces a token
only if it is still the exact value that was read, and keeps its TTL (SET … KEEPTTL): a token
consumed meanwhile is never recreated, and one rewrapped by a concurrent rotation is left
alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from redis.exceptions import NoScriptError

from swrly.keys.errors import KeyServiceError, KeyStoreUnavailable
from swrly.keys.keyring import Keyring, get_keyring
from swrly.keys.store import KEY_PATTERN, get_client, parse_bound_key, parse_redis_key, shard_of
from swrly.keys.tokens import rewrap_bound, token_key_id
from swrly.keys.usage import count_seals
from swrly.redis_urls import primaries

BATCH_SIZE = 1000
MALFORMED = "malformed"  # the count_live_tokens bucket for values that are not tokens

# KEYS[1] the token's Redis key; ARGV[1] the token as read; ARGV[2] the rewrapped token.
# Returns 1 when swapped, 0 when the token changed meanwhile, -1 when it is gone.
COMPARE_AND_SWAP = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
COMPARE_AND_SWAP_SHA = hashlib.sha1(COMPARE_AND_SWAP.encode(), usedforsecurity=False).hexdigest()


@dataclass
class RewrapReport:
    scanned: int = 0
    rewrapped: int = 0
    already_current: int = 0
    already_consumed: int = 0
    changed: int = 0
    failed: int = 0
    from_key_ids: set[str] = field(default_factory=set)
    rewrapped_by_tenant: Counter[str] = field(default_factory=Counter)


class RewrappedToken(NamedTuple):
    """One stored key a batch rewrapped (its swap applied): which run's, from which key id."""

    tenant_id: str
    run_id: str
    provider: str
    from_key_id: str  # hex


def _batches(client: redis.Redis, batch_size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in client.scan_iter(match=KEY_PATTERN, count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(client: redis.Redis, keys: list[bytes]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return pipe.execute()


def count_live_tokens(batch_size: int = BATCH_SIZE) -> Counter[str]:
    """Live tokens per key id (hex); tokens gone between SCAN and GET are not counted."""
    counts: Counter[str] = Counter()
    try:
        for node in primaries(get_client()):
            for keys in _batches(node, batch_size):
                for token in _read(node, keys):
                    if token is None:
                        continue
                    try:
                        counts[token_key_id(token).hex()] += 1
                    except KeyServiceError:
                        counts[MALFORMED] += 1
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store could not be read") from exc
    return counts


def idle_live_tokens(
    *, min_idle: int, batch_size: int = BATCH_SIZE
) -> Iterator[tuple[str, str, str]]:
    """(tenant_id, run_id, provider) of every token untouched for at least `min_idle` seconds.

    Redis' OBJECT IDLETIME tells how long ago a key was last written or read: a token deposited
    moments ago by a request still in flight is never among them. Values that are not token
    keys are skipped.
    """
    try:
        for node in primaries(get_client()):
            for keys in _batches(node, batch_size):
                pipe = node.pipeline(transaction=False)
                for key in keys:
                    pipe.object("idletime", key)
                for key, idle in zip(keys, pipe.execute(raise_on_error=False), strict=True):
                    if not isinstance(idle, int) or idle < min_idle:
                        continue  # gone meanwhile, or fresh
                    try:
                        yield parse_redis_key(key)
                    except ValueError:
                        continue
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store could not be read") from exc


def rewrap_live_tokens(
    *,
    keyring: Keyring | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[RewrapReport], None] | None = None,
    report: RewrapReport | None = None,
    rewrapped: Callable[[list[RewrappedToken]], None] | None = None,
) -> RewrapReport:
    """Rewrap every live token not under the current key to the current key.

    Counts go into `report` as the batches complete, so a caller keeps the partial counts of a
    rotation the key store interrupted. `rewrapped`, when given, is called after each batch
    (on every primary of a Cluster alike) with the tokens whose swap applied: the caller
    records those facts per batch, at a cost per batch rather than per token. (Overlapping one
    batch's swaps with the next batch's crypto in a writer thread was measured slower: both
    halves are CPU-bound under the GIL.)
    """
    keyring = keyring or get_keyring()
    report = report if report is not None else RewrapReport()
    key_id_hex = keyring.current.key_id_hex

    def write(node: redis.Redis, pending: list[_Rewrapped]) -> list[Any]:
        # The batch's seals are counted (swrly.keys.usage) before the swaps that store them, in
        # the usage hash of its first token's shard: a hash tag of a slot on this very node.
        count_seals(node, shard_of(pending[0].key), key_id_hex, len(pending))
        pipe = node.pipeline(transaction=False)
        for item in pending:
            _queue_swap(pipe, item)
        return _retry_unloaded_swaps(node, pending, pipe.execute(raise_on_error=False))

    def tally(pending: list[_Rewrapped], results: list[int]) -> list[RewrappedToken]:
        done = []
        for item, result in zip(pending, results, strict=True):
            if result == 1:
                report.rewrapped += 1
                report.rewrapped_by_tenant[item.tenant_id] += 1
                done.append(item.fact)
            elif result == -1:
                report.already_consumed += 1
            else:
                report.changed += 1
        return done

    try:
        for node in primaries(get_client()):
            node.script_load(COMPARE_AND_SWAP)
            for keys in _batches(node, batch_size):
                pending = _prepare(keyring, keys, _read(node, keys), report)
                if pending:
                    done = tally(pending, write(node, pending))
                    if done and rewrapped is not None:
                        rewrapped(done)
                if progress is not None:
                    progress(report)
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store failed during rotation") from exc
    return report


def _queue_swap(pipe: Any, item: _Rewrapped) -> None:
    """Queue the compare-and-swap of one token on a pipeline, by the script's SHA."""
    pipe.evalsha(COMPARE_AND_SWAP_SHA, 1, item.key, item.old, item.new)


def _retry_unloaded_swaps(
    client: redis.Redis, pending: list[_Rewrapped], results: list[Any]
) -> list[Any]:
    """The swaps' results, with those that found no script (the script cache was flushed
    since SCRIPT LOAD: NOSCRIPT, so they did not run) loaded and run again; any other error
    raised. The swaps go by SHA in the batch's pipeline: no SCRIPT EXISTS per batch."""
    again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, NoScriptError):
            raise result
    if again:
        client.script_load(COMPARE_AND_SWAP)
        pipe = client.pipeline(transaction=False)
        for i in again:
            _queue_swap(pipe, pending[i])
        for i, result in zip(again, pipe.execute(), strict=True):
            results[i] = result
    return results


class _Rewrapped(NamedTuple):
    key: bytes
    old: bytes
    new: bytes
    tenant_id: str
    fact: RewrappedToken


def _prepare(
    keyring: Keyring, keys: list[bytes], tokens: list[bytes | None], report: RewrapReport
) -> list[_Rewrapped]:
    """The batch's tokens that need a rewrap, rewrapped; the others counted in `report`."""
    current_id = keyring.current.key_id
    pending = []
    from_key_ids: set[bytes] = set()
    for key, token in zip(keys, tokens, strict=True):
        report.scanned += 1
        if token is None:
            report.already_consumed += 1
            continue
        try:
            key_id = token_key_id(token)
            if key_id == current_id:
                report.already_current += 1
                continue
            binding = parse_bound_key(key)  # the ids checked once, for the key and the token
            new = rewrap_bound(keyring, token, binding, key_id)
        except (KeyServiceError, ValueError):  # malformed, unknown key id, tampered
            report.failed += 1
            continue
        from_key_ids.add(key_id)
        fact = RewrappedToken(binding.tenant_id, binding.run_id, binding.provider, key_id.hex())
        pending.append(_Rewrapped(key, token, new, binding.tenant_id, fact))
    report.from_key_ids.update(key_id.hex() for key_id in from_key_ids)
    return pending
