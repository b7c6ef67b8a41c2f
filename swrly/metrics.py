"""Prometheus metrics: what the run engine, the key store and the audit log did, and how fast.

A foundation: it imports no app. The apps call the small functions below from their existing
seams (the audit writer, the key store, the provider client, the executor), and the runs app
registers the gauges that are computed when scraped (`register_scrape_gauges`).

Labels are bounded by construction: a provider label is one of the registry's providers (else
`other`), an event, status, outcome or error code is a code the platform wrote (checked against
a short identifier pattern, else `other`). No label ever carries a tenant, a run id, a key, a
fingerprint or any other value a user chose: those would be unbounded (one series per tenant or
run) and the metrics would disclose who uses the platform to anyone who can read them.

Processes. gunicorn workers and Celery workers are separate processes. With
`PROMETHEUS_MULTIPROC_DIR` set in the environment of every process of a node (before it starts),
prometheus-client writes each process's values to files there, and a scrape adds up every
process of the node, dead ones included (counters and histograms never go back). Without it, a
scrape shows the one process that answered it (fine for `make run`, not for production). Gauges
are never stored: they are computed when scraped, so no dead process leaves a stale value.

Endpoints. `GET /metrics` on a web node, through the application (its host and HTTPS rules),
and `python -m swrly.metrics`, a small HTTP server on METRICS_HOST:METRICS_PORT for any node (a
worker-only node has no web server), answer the same: this node's processes, and the queue
gauges (cluster-wide values from the database, the same on every node). Both answer only
`Authorization: Bearer <METRICS_TOKEN>` (compared in constant time): 404 while METRICS_TOKEN is
unset (metrics off), 401 without the right token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from swrly.providers import PROVIDER_NAMES

log = logging.getLogger(__name__)

OTHER = "other"
_CODE = re.compile(r"[a-z0-9_]{1,40}")

# The metrics below, in a registry of their own: `python -m swrly.metrics` runs this module as
# __main__ and then imports it again (django.setup()), which would register every name twice in
# prometheus-client's global registry. (In multiprocess mode the values go to files anyway.)
_REGISTRY = CollectorRegistry()

# Seconds. Provider calls and steps take from a few ms (a cached answer) to minutes.
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
# Redis round trips and audit writes: sub-millisecond to a stalled server's timeout.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

RUNS_FINISHED = Counter(
    "swrly_runs_finished",
    "Runs that ended, by status and error code (counted when the run's end is committed).",
    ["status", "error_code"],
    registry=_REGISTRY,
)
KEY_EVENTS = Counter(
    "swrly_key_events",
    "Key events by kind (deposited, consumed, expired, missing, rejected, discarded, "
    "leak_blocked) and provider, counted when their audit event is committed.",
    ["event", "provider"],
    registry=_REGISTRY,
)
STEP_DURATION = Histogram(
    "swrly_step_duration_seconds",
    "A run step's provider call, retries and back-off included, by provider and outcome "
    "(succeeded, or the step's error code).",
    ["provider", "outcome"],
    buckets=_SLOW_BUCKETS,
    registry=_REGISTRY,
)
PROVIDER_REQUEST_DURATION = Histogram(
    "swrly_provider_request_duration_seconds",
    "One HTTP attempt to a provider, by provider and outcome (2xx, 3xx, 4xx, 429, 5xx, "
    "timeout, connect_error, transport_error).",
    ["provider", "outcome"],
    buckets=_SLOW_BUCKETS,
    registry=_REGISTRY,
)
KEY_STORE_DURATION = Histogram(
    "swrly_key_store_duration_seconds",
    "One key-store round trip, by operation (deposit, consume) and outcome.",
    ["op", "outcome"],
    buckets=_FAST_BUCKETS,
    registry=_REGISTRY,
)
AUDIT_WRITE_DURATION = Histogram(
    "swrly_audit_write_duration_seconds",
    "Appending audit events: a transaction's batch before its commit, or a single event.",
    ["mode"],
    buckets=_FAST_BUCKETS,
    registry=_REGISTRY,
)
RUNS_REFUSED = Counter(
    "swrly_runs_refused",
    "Runs refused at submission before any key was deposited, by reason (queue_full: the "
    "tenant's queued-runs limit; the API answered 429).",
    ["reason"],
    registry=_REGISTRY,
)
RUNS_DEFERRED = Counter(
    "swrly_runs_deferred",
    "Claims a worker gave back because the run's tenant was at its running-runs limit: the run "
    "stayed queued with its keys and was enqueued again.",
    registry=_REGISTRY,
)
RUNS_RELEASED = Counter(
    "swrly_runs_released",
    "Claims a worker gave back because the key store did not answer its first GETDEL (no key "
    "taken): the run stayed queued with its keys and was tried again.",
    registry=_REGISTRY,
)

_RUN_END = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled"}
_KEY_EVENTS = {
    f"key.{kind}": kind
    for kind in ("deposited", "consumed", "expired", "missing", "rejected", "discarded")
} | {"key.leak_blocked": "leak_blocked"}
# The audit actions the writer reports to count_audited() once their transaction commits.
COUNTED_ACTIONS = frozenset(_RUN_END) | frozenset(_KEY_EVENTS)


def _provider(value: object) -> str:
    return value if isinstance(value, str) and value in PROVIDER_NAMES else OTHER


def _code(value: object) -> str:
    return value if isinstance(value, str) and _CODE.fullmatch(value) else OTHER


# --- What the seams call -------------------------------------------------------------------


def count_audited(action: str, metadata: Mapping[str, Any]) -> None:
    """Count a committed run end or key event (the audit writer calls it on commit).

    Every run end and key event is audited exactly once, in the transaction that makes it true,
    wherever it happens (executor, reaper, cancellation, creation): counting it when that
    transaction commits keeps the metrics in step with the audit log.
    """
    if action in _RUN_END:
        RUNS_FINISHED.labels(
            status=_RUN_END[action], error_code=_code(metadata.get("error_code") or "none")
        ).inc()
    elif action in _KEY_EVENTS:
        KEY_EVENTS.labels(
            event=_KEY_EVENTS[action], provider=_provider(metadata.get("provider"))
        ).inc()


def step_finished(provider: str, outcome: str, latency_ms: int | None) -> None:
    """A step's call ended: `outcome` is `succeeded` or its error code."""
    if latency_ms is not None:
        STEP_DURATION.labels(provider=_provider(provider), outcome=_code(outcome)).observe(
            latency_ms / 1000
        )


def provider_request(
    provider: str, started: float, *, status: int | None = None, failure: str | None = None
) -> None:
    """One HTTP attempt ended (`started`: its time.monotonic()): an answer's status, or how
    the transport failed (a code, or None when the connection never opened)."""
    if status is not None:
        outcome = "429" if status == 429 else f"{min(max(status // 100, 1), 5)}xx"
    elif failure is None:
        outcome = "connect_error"
    else:
        outcome = "timeout" if failure == "timeout" else "transport_error"
    PROVIDER_REQUEST_DURATION.labels(provider=_provider(provider), outcome=outcome).observe(
        time.monotonic() - started
    )


def run_refused(reason: str) -> None:
    """A run was refused at submission (`reason`: a code such as `queue_full`)."""
    RUNS_REFUSED.labels(reason=_code(reason)).inc()


def run_deferred() -> None:
    """A worker left a run queued: its tenant was at its running limit."""
    RUNS_DEFERRED.inc()


def run_released() -> None:
    """A worker put a claimed run back in the queue: the key store did not answer."""
    RUNS_RELEASED.inc()


def key_store_op(op: str, outcome: str, started: float) -> None:
    """A key-store round trip ended (`started`: its time.perf_counter())."""
    KEY_STORE_DURATION.labels(op=op, outcome=outcome).observe(time.perf_counter() - started)


@contextmanager
def audit_write(mode: str) -> Iterator[None]:
    """Time an audit append (`batch` or `single`), whether or not it raised."""
    started = time.perf_counter()
    try:
        yield
    finally:
        AUDIT_WRITE_DURATION.labels(mode=mode).observe(time.perf_counter() - started)


# --- Gauges computed when scraped ----------------------------------------------------------

# Functions that read gauges at each scrape: {name: (help, value)}; a value of None, or an
# exception, leaves the gauges out of that scrape.
_scrape_gauges: list[Callable[[], Mapping[str, tuple[str, float | None]]]] = []


def register_scrape_gauges(read: Callable[[], Mapping[str, tuple[str, float | None]]]) -> None:
    """Report what `read()` returns as gauges at each scrape (an app registers it in ready()).

    Computed when scraped, never stored: a value no process keeps cannot go stale when the
    process that wrote it dies (multiprocess mode).
    """
    if read not in _scrape_gauges:
        _scrape_gauges.append(read)


class _ScrapeGauges:
    def collect(self) -> Iterator[Metric]:
        for read in _scrape_gauges:
            try:
                gauges = read()
            except Exception as exc:  # a scrape must answer even when the database does not
                log.warning("gauges could not be read (%s)", type(exc).__name__)
                continue
            for name, (documentation, value) in sorted(gauges.items()):
                if value is not None:
                    yield GaugeMetricFamily(name, documentation, value=value)


class _ThisProcess:
    """This process's metrics (no multiprocess directory)."""

    def collect(self) -> Iterable[Metric]:
        return _REGISTRY.collect()


def multiprocess_dir() -> str:
    """The directory prometheus-client's multiprocess mode uses ('' when not in that mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def exposition(*, scrape_gauges: bool = True) -> bytes:
    """The text exposition: every process of the node (multiprocess mode) or this one."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    if scrape_gauges:
        registry.register(_ScrapeGauges())
    return generate_latest(registry)


# --- Access --------------------------------------------------------------------------------


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def authorized(header: str | None, token: str) -> bool:
    """Whether `header` is `Bearer <token>`; compared in constant time (over digests, so the
    token's length does not show either)."""
    given = header[len("Bearer ") :] if header and header.startswith("Bearer ") else ""
    return hmac.compare_digest(_digest(given), _digest(token)) and bool(given)


def metrics_token() -> str:
    token: str = getattr(settings, "METRICS_TOKEN", "") or ""
    return token


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: 404 when METRICS_TOKEN is unset, 401 without the bearer token."""
    token = metrics_token()
    if not token:
        return HttpResponse(status=404)
    if not authorized(request.headers.get("Authorization"), token):
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def _wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """`python -m swrly.metrics`: what metrics_view answers, under the same rules."""
    token = metrics_token()
    if not token or environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b""]
    if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b""]
    try:
        body = exposition()
    finally:
        close_old_connections()  # the queue gauges' connection: as a request's end would
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [body]


def serve(host: str, port: int) -> None:  # pragma: no cover  (a process of its own)
    """Serve this node's metrics on host:port until killed (`python -m swrly.metrics`)."""
    from wsgiref.simple_server import make_server

    with make_server(host, port, _wsgi_app) as server:
        server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    django.setup()
    serve(settings.METRICS_HOST, settings.METRICS_PORT)
