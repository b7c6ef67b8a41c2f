"""API rate limits: fixed windows counted atomically in the shared cache Redis.

Every web process counts in the same Redis with INCR, so a limit holds across any number of
web instances (DRF's own throttles read, modify and write back a list, and lose counts when
two instances race). One round trip per check: INCR and EXPIRE pipelined. If the cache Redis is
down, requests are let through rather than refused (the limit protects capacity; it is not an
authorisation).
"""

import logging
import time

import redis
from django_redis import get_redis_connection

log = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """("N/period") → (N, seconds); None when empty (no limit). Periods: s, min, hour, day."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[:1]]


def over_limit(*, scope: str, ident: str, rate: str | None) -> float | None:
    """Count one request; None when within the rate, else the seconds until the window ends."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    limit, period = parsed
    now = time.time()
    window = int(now // period)
    key = f"swrly:ratelimit:{scope}:{ident}:{window}"
    try:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, period + 1)
        count, _ = pipe.execute()
    except redis.RedisError:
        log.warning("rate limit not checked: the cache Redis did not answer")
        return None
    if count <= limit:
        return None
    return max((window + 1) * period - now, 0.001)
