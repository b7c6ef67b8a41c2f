"""Liveness and readiness for load balancers and orchestrators: GET /healthz and /readyz.

Both are unauthenticated and answer before host validation, the HTTPS redirect and sessions (a
load balancer probes by address, over plain HTTP). They reveal nothing but which parts are
down: no host names, versions or error messages.
"""

from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

PROBE_TIMEOUT = 2.0  # seconds per dependency


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


def _key_store() -> list[str]:
    """[] when the key store answers and neither persists nor evicts tokens."""
    from swrly.checks import check_key_store

    found = {message.id for message in check_key_store()}
    if "swrly.W010" in found:
        return ["key_store"]
    if found & {"swrly.W011", "swrly.W012", "swrly.W013"}:
        return ["key_store_config"]
    return []  # swrly.I010 (a managed Redis that refuses CONFIG) cannot be checked: ready


def _broker() -> bool:
    from swrly.celery import app

    timeouts = {"socket_timeout": PROBE_TIMEOUT, "socket_connect_timeout": PROBE_TIMEOUT}
    try:
        # The connection runs are published on (broker_write_url, else broker_url).
        with app.connection_for_write(
            connect_timeout=PROBE_TIMEOUT, transport_options=timeouts
        ) as conn:
            conn.ensure_connection(max_retries=0, timeout=PROBE_TIMEOUT)
            client = getattr(conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):  # Redis: ask, don't assume
                client.ping()
        return True
    except Exception:  # any failure means: not ready
        return False


def readiness_problems() -> list[str]:
    """The parts a web node needs that do not answer (or are unsafe): [] when ready."""
    problems = [] if _database() else ["database"]
    problems += _key_store()
    if not _broker():
        problems.append("broker")
    return problems


class HealthMiddleware:
    """Answers /healthz (the process is alive) and /readyz (its dependencies answer)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            if request.path == "/healthz":
                return _no_store(JsonResponse({"status": "ok"}))
            if request.path == "/readyz":
                problems = readiness_problems()
                body = (
                    {"status": "unready", "failing": problems} if problems else {"status": "ready"}
                )
                return _no_store(JsonResponse(body, status=503 if problems else 200))
        return self.get_response(request)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
