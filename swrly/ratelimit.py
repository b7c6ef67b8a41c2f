"""API rate limits: fixed windows counted atomically in the shared cache Redis.

Every web process counts in the same Redis with INCR, so a limit holds across any number of
web instances (DRF's own throttles read, modify and write back a list, and lose counts when
two instances race). One round trip per request, whatever the number of limits that apply: the
INCR and EXPIRE of every counter go in one pipeline (`over_limits`). If the cache Redis is
down, requests are let through rather than refused (the limit protects capacity; it is not an
authorisation).
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Limit:
    """One counter a request counts against: `rate` ("N/period") per `ident` within `scope`."""

    scope: str
    ident: str
    rate: str | None


def over_limits(limits: Sequence[Limit]) -> tuple[Limit, float] | None:
    """Count one request against every limit in one round trip; None when within all of them,
    else the first limit exceeded and the seconds until its window ends.

    Every counter is incremented, even when an earlier one is already over: each limit counts
    the requests made, not the requests let through.
    """
    now = time.time()
    counted: list[tuple[Limit, int, int, int]] = []  # limit, allowed, period, window
    for limit in limits:
        parsed = parse_rate(limit.rate)
        if parsed is not None:
            allowed, period = parsed
            counted.append((limit, allowed, period, int(now // period)))
    if not counted:
        return None
    try:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        for limit, _, period, window in counted:
            key = f"swrly:ratelimit:{limit.scope}:{limit.ident}:{window}"
            pipe.incr(key)
            pipe.expire(key, period + 1)
        replies = pipe.execute()
    except redis.RedisError:
        log.warning("rate limit not checked: the cache Redis did not answer")
        return None
    for (limit, allowed, period, window), count in zip(counted, replies[::2], strict=True):
        if count > allowed:
            return limit, max((window + 1) * period - now, 0.001)
    return None


def over_limit(*, scope: str, ident: str, rate: str | None) -> float | None:
    """Count one request against one limit; None when within the rate, else the seconds until
    the window ends."""
    exceeded = over_limits([Limit(scope, ident, rate)])
    return None if exceeded is None else exceeded[1]
