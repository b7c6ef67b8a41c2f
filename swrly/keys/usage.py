"""How many tokens each encryption key has sealed: the AES-GCM usage budget.

AES-GCM with random 96-bit nonces is safe for about 2**32 encryptions under one key (NIST SP
800-38D, 8.3): past that, the chance that two tokens share a nonce (which exposes the
authentication key and the XOR of the two plaintexts) exceeds 2**-32. Every seal, a deposit or
a rewrap, is counted here, in the key-store Redis, *before* the write it goes with:
`HINCRBY swrly:byok-usage:v2:{<shard>} <key id> n`. A deposit counts and stores in one Lua
script (DEPOSIT_SCRIPT, one EVALSHA: atomic, so a seal is never left uncounted); a rewrap batch
sends its HINCRBY, then the batch's swaps. A seal whose
write then fails (SET NX refused, the token consumed meanwhile) still counts: it used a nonce.
Redis increments are atomic, so the count is exact across processes and nodes, and no database
row is locked by a deposit.

The counts are kept in SHARDS hashes, one per token-key shard (swrly.keys.store.shard): a
deposit's counter carries its token's hash tag, so on a Redis Cluster the script's two keys
share a slot, and the counters spread over the primaries like the tokens. A reading
(`pending_seals`) sums every shard and remembers what it read in each; settling subtracts each
shard's own reading, on the node that holds it, with no command retried.

The key-store Redis keeps nothing on disk (docs/security.md), so these counts are *pending*:
the custody app moves them into a database ledger every minute (`record-key-usage`) and
whenever `rotate-keys` runs. A move adds the read counts to the ledger, commits, and only then
subtracts them here (HINCRBY -n): the total, ledger plus pending, is right at every moment; two
concurrent moves each add and subtract their own reading, so the total stays right; a crash
between the two halves counts some seals twice (never zero times). A key-store restart loses at
most the seals since the last move.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import redis

from swrly.keys.errors import KeyStoreUnavailable
from swrly.redis_urls import Client, clients_by_key

# Hashes: key id (hex) -> seals not yet in the ledger, one per shard. Outside `swrly:byok:*`,
# where only tokens live (the sweeps, rotate-keys and the canary test scan it); an ACL user
# limited to `~swrly:byok*` reaches both.
SHARDS = 256
USAGE_KEY_PREFIX = "swrly:byok-usage:v2:"
# The one unsharded hash of releases before v2: still read and settled, so the seals counted
# by a process of the previous release during an upgrade are never lost.
LEGACY_USAGE_KEY = "swrly:byok-usage:v1"
SAFE_LIMIT = 2**32  # seals per key: NIST SP 800-38D's bound for random 96-bit nonces
DEFAULT_WARN_AT = 2**30


# KEYS[1] the usage hash, KEYS[2] the token's Redis key; ARGV[1] the key id (hex), ARGV[2] the
# token, ARGV[3] the TTL in seconds. Counts the seal, then SET NX EX; 1 when stored, 0 when a
# token was already there (never overwritten). One round trip and one command for redis-py to
# build and parse, where a pipeline of HINCRBY + SET cost more in redis-py than on the wire.
# Both keys in one script carry the same hash tag (the token's shard): one slot on a cluster.
DEPOSIT_SCRIPT = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3], 'NX') then return 1 end
return 0
"""


def usage_key(tag: str) -> str:
    """The usage hash of a shard (two hex digits; the token keys' hash tag)."""
    return f"{USAGE_KEY_PREFIX}{{{tag}}}"


USAGE_KEYS = (*(usage_key(f"{index:02x}") for index in range(SHARDS)), LEGACY_USAGE_KEY)


def count_seals(client: redis.Redis, tag: str, key_id_hex: str, seals: int) -> None:
    """Count `seals` tokens sealed under `key_id_hex` in shard `tag`'s hash (one HINCRBY, on the
    node that holds it: call before writing the tokens)."""
    if seals:
        client.hincrby(usage_key(tag), key_id_hex, seals)


class PendingSeals(dict[str, int]):
    """Seals per key id (hex), summed over the shards; `readings` keeps each hash's own."""

    def __init__(self, readings: dict[str, dict[str, int]]) -> None:
        totals: dict[str, int] = {}
        for counts in readings.values():
            for key_id, seals in counts.items():
                totals[key_id] = totals.get(key_id, 0) + seals
        super().__init__((key_id, seals) for key_id, seals in totals.items() if seals)
        self.readings = readings


def _per_node(client: Client, keys: Iterable[str], queue: Any) -> list[tuple[str, Any]]:
    """Run `queue(pipe, key)` for every key, one pipeline per node holding keys (no command of
    it retried); (key, reply) pairs."""
    replies: list[tuple[str, Any]] = []
    for node, node_keys in clients_by_key(client, keys):
        pipe = node.pipeline(transaction=False)
        for key in node_keys:
            queue(pipe, key)
        replies += zip(node_keys, pipe.execute(), strict=True)
    return replies


def pending_seals(client: Client) -> PendingSeals:
    """Seals counted in the key store and not yet moved to the ledger, per key id (hex)."""
    try:
        replies = _per_node(client, USAGE_KEYS, lambda pipe, key: pipe.hgetall(key))
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store did not answer the usage count") from exc
    readings = {}
    for key, raw in replies:
        counts = {k.decode(): int(v) for k, v in cast("dict[bytes, bytes]", raw).items() if int(v)}
        if counts:
            readings[key] = counts
    return PendingSeals(readings)


def settle_seals(client: Client, moved: PendingSeals) -> None:
    """Subtract a reading's counts, each from the hash it was read in (call only once they
    were added to the ledger and that has committed)."""
    if not moved.readings:
        return

    def subtract(pipe: Any, key: str) -> None:
        for key_id_hex, seals in moved.readings[key].items():
            pipe.hincrby(key, key_id_hex, -seals)

    try:
        for node, keys in clients_by_key(client, moved.readings):
            pipe = node.pipeline(transaction=False)
            for key in keys:
                subtract(pipe, key)
            pipe.execute()
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store did not answer the usage settlement") from exc
