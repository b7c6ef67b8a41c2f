"""Liveness and readiness for load balancers and orchestrators: GET /healthz and /readyz.

Both are unauthenticated and answer before host validation, the HTTPS redirect, sessions and
the API rate limits (a load balancer probes by address, over plain HTTP, and often). They reveal
nothing but which named check failed: no host names, versions or error messages.

/readyz runs its checks in parallel, each in a thread of its own with its own client and socket
timeouts, and answers after READYZ_TIMEOUT seconds at most: a check that has not answered by
then is failed, so a hanging dependency cannot hang the probe (a load balancer that times out
would otherwise count it as a plain failure after its own, longer, timeout). One result is
shared by every probe for READYZ_CACHE_SECONDS, so probing often, or an anonymous flood of
/readyz, costs at most one round of checks per second per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse

CHECKS = ("database", "key_store", "key_store_hygiene", "broker")
CACHE_SECONDS = 1.0  # how long one round of checks answers every probe

_lock = threading.Lock()
_last: tuple[float, dict[str, bool]] | None = None


def _timeout() -> float:
    return float(getattr(settings, "READYZ_TIMEOUT", 2.0))


def _database(database: dict[str, Any]) -> dict[str, bool]:
    """A connection of its own (closed after), with a connect timeout, to `database`."""
    settings_dict = dict(database)
    options = dict(settings_dict.get("OPTIONS") or {})
    options.pop("pool", None)  # one plain connection, never a pool per probe
    engine = settings_dict["ENGINE"]
    if "postgresql" in engine:
        options["connect_timeout"] = max(1, int(_timeout()))
    elif "sqlite3" in engine:
        options["timeout"] = _timeout()
    settings_dict["OPTIONS"] = options
    wrapper = load_backend(engine).DatabaseWrapper(settings_dict, "readyz")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            return {"database": cursor.fetchone() == (1,)}
    finally:
        wrapper.close()


def _key_store(database: dict[str, Any]) -> dict[str, bool]:
    """Reachable, and neither persisting nor evicting tokens: swrly.checks.check_key_store."""
    from swrly.checks import check_key_store

    found = {message.id for message in check_key_store()}
    reachable = "swrly.W010" not in found
    # swrly.I010 (a managed Redis that refuses CONFIG GET) cannot be verified: counted as ok,
    # as `manage.py check` reports it (docs/operations.md).
    hygienic = reachable and not found & {"swrly.W011", "swrly.W012", "swrly.W013"}
    return {"key_store": reachable, "key_store_hygiene": hygienic}


def _broker(database: dict[str, Any]) -> dict[str, bool]:
    from swrly.celery import app

    timeout = _timeout()
    # Each transport reads its own: Redis the socket_*, py-amqp (RabbitMQ) read/write_timeout.
    timeouts = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "read_timeout": timeout,
        "write_timeout": timeout,
    }
    # The connection runs are published on (broker_write_url, else broker_url). On RabbitMQ,
    # connecting is the AMQP handshake and opening the channel one more round trip.
    with app.connection_for_write(connect_timeout=timeout, transport_options=timeouts) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        client = getattr(conn.default_channel, "client", None)
        if client is not None and hasattr(client, "ping"):  # Redis: ask, don't assume
            client.ping()
    return {"broker": True}


# Each probe gets the database settings of the asking thread (Django's connections are per
# thread) and answers for its checks by name.
_PROBES: tuple[Callable[[dict[str, Any]], dict[str, bool]], ...] = (_database, _key_store, _broker)


def readiness() -> dict[str, bool]:
    """Every check by name, True when it passed within READYZ_TIMEOUT seconds."""
    results: dict[str, bool] = dict.fromkeys(CHECKS, False)
    done: dict[str, bool] = {}
    threads = []

    database = dict(connections["default"].settings_dict)

    def run(probe: Callable[[dict[str, Any]], dict[str, bool]]) -> None:
        try:
            outcome = probe(database)
        except Exception:  # any failure means: not ready (and says nothing more)
            return
        done.update(outcome)

    for probe in _PROBES:
        thread = threading.Thread(target=run, args=(probe,), name="swrly-readyz", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + _timeout()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    # A late thread may still write to `done`; only what was there at the deadline counts.
    results.update({name: bool(ok) for name, ok in dict(done).items() if name in results})
    return results


def cached_readiness() -> dict[str, bool]:
    """readiness(), computed at most once per CACHE_SECONDS; concurrent probes share a round."""
    global _last
    with _lock:
        now = time.monotonic()
        if _last is not None and now - _last[0] < CACHE_SECONDS:
            return _last[1]
        result = readiness()
        _last = (time.monotonic(), result)
        return result


class HealthMiddleware:
    """Answers /healthz (the process is alive) and /readyz (its dependencies answer)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            if request.path == "/healthz":
                return _no_store(JsonResponse({"status": "ok"}))
            if request.path == "/readyz":
                checks = cached_readiness()
                ready = all(checks.values())
                body = {
                    "status": "ready" if ready else "unready",
                    "checks": {name: "ok" if ok else "fail" for name, ok in checks.items()},
                }
                return _no_store(JsonResponse(body, status=200 if ready else 503))
        return self.get_response(request)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
