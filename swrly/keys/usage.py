"""How many tokens each encryption key has sealed: the AES-GCM usage budget.

AES-GCM with random 96-bit nonces is safe for about 2**32 encryptions under one key (NIST SP
800-38D, 8.3): past that, the chance that two tokens share a nonce (which exposes the
authentication key and the XOR of the two plaintexts) exceeds 2**-32. Every seal, a deposit or
a rewrap, is counted here, in the key-store Redis, in the same round trip as the write it goes
with: `HINCRBY swrly:byok-usage:v1 <key id> n`, *before* the write. A deposit counts and stores
in one Lua script (DEPOSIT_SCRIPT, one EVALSHA: atomic, so a seal is never left uncounted); a
rewrap batch queues its HINCRBY ahead of the batch's swaps in the same pipeline. A seal whose
write then fails (SET NX refused, the token consumed meanwhile) still counts: it used a nonce.
Redis increments are atomic, so the count is exact across processes and nodes, and no database
row is locked by a deposit.

The key-store Redis keeps nothing on disk (docs/security.md), so these counts are *pending*:
the custody app moves them into a database ledger every minute (`record-key-usage`) and
whenever `rotate-keys` runs. A move adds the read counts to the ledger, commits, and only then
subtracts them here (HINCRBY -n): the total, ledger plus pending, is right at every moment; two
concurrent moves each add and subtract their own reading, so the total stays right; a crash
between the two halves counts some seals twice (never zero times). A key-store restart loses at
most the seals since the last move.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from swrly.keys.errors import KeyStoreUnavailable

# A hash: key id (hex) -> seals not yet in the ledger. Outside `swrly:byok:*`, where only tokens
# live (the sweeps, rotate-keys and the canary test scan it); an ACL user limited to
# `~swrly:byok*` reaches both.
USAGE_KEY = "swrly:byok-usage:v1"
SAFE_LIMIT = 2**32  # seals per key: NIST SP 800-38D's bound for random 96-bit nonces
DEFAULT_WARN_AT = 2**30


# KEYS[1] the usage hash, KEYS[2] the token's Redis key; ARGV[1] the key id (hex), ARGV[2] the
# token, ARGV[3] the TTL in seconds. Counts the seal, then SET NX EX; 1 when stored, 0 when a
# token was already there (never overwritten). One round trip and one command for redis-py to
# build and parse, where a pipeline of HINCRBY + SET cost more in redis-py than on the wire.
# Both keys in one script: under Redis Cluster they would need one hash slot (not supported).
DEPOSIT_SCRIPT = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3], 'NX') then return 1 end
return 0
"""


def count_seals(pipe: Any, key_id_hex: str, seals: int) -> None:
    """Queue the count of `seals` tokens sealed under `key_id_hex` on a pipeline (or client)."""
    if seals:
        pipe.hincrby(USAGE_KEY, key_id_hex, seals)


def pending_seals(client: redis.Redis) -> dict[str, int]:
    """Seals counted in the key store and not yet moved to the ledger, per key id (hex)."""
    try:
        raw = cast("dict[bytes, bytes]", client.hgetall(USAGE_KEY))
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store did not answer the usage count") from exc
    return {key.decode(): int(value) for key, value in raw.items() if int(value)}


def settle_seals(client: redis.Redis, moved: dict[str, int]) -> None:
    """Subtract counts that were added to the ledger (call only once that has committed)."""
    if not moved:
        return
    pipe = client.pipeline(transaction=False)
    for key_id_hex, seals in moved.items():
        pipe.hincrby(USAGE_KEY, key_id_hex, -seals)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        raise KeyStoreUnavailable("the key store did not answer the usage settlement") from exc
