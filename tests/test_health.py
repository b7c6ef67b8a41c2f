"""/healthz and /readyz: unauthenticated, before host checks, redirects and rate limits,
revealing nothing but which named check failed; /readyz follows real servers going down and
coming back, and gives up on one that hangs."""

import contextlib
import socket
import threading

import pytest
import time_machine
from django.db import connections
from django.test import Client

from swrly import health
from swrly.dev.devstack import start_embedded_valkey
from tests.runs.real_workers import publishing_to

ALL_OK = {"database": "ok", "key_store": "ok", "key_store_hygiene": "ok", "broker": "ok"}
CLEAN = {"save": "", "appendonly": "no", "maxmemory-policy": "noeviction"}


@pytest.fixture(autouse=True)
def fresh_readiness(monkeypatch):
    """Every probe runs its checks (no result shared from an earlier probe)."""
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(health, "_last", None)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _failing(response):
    return {name for name, state in response.json()["checks"].items() if state != "ok"}


@contextlib.contextmanager
def _silent_server():
    """A TCP server that accepts connections and never answers: a hanging dependency."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_an_address_host_over_plain_http(db, settings, path):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["swrly.example"]
    response = Client().get(path, HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    # Anything else at that Host is still refused.
    assert Client().get("/accounts/login/", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_healthz_says_ok_without_touching_the_database(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.json() == {"status": "ok"}


def test_readyz_lists_its_checks_by_name_and_nothing_else(db, settings):
    settings.ALLOWED_HOSTS = ["swrly.example"]
    response = Client().get("/readyz", HTTP_HOST="swrly.example")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": ALL_OK}


def test_only_reads_are_probes(db):
    assert Client().post("/healthz").status_code == 404
    assert Client().post("/readyz").status_code == 404


@time_machine.travel("2026-06-01 12:02:30+00:00", tick=False)  # one rate window for the test
def test_probing_often_is_never_throttled(db, settings):
    settings.API_RATE_PER_IP = "2/min"
    balancer = Client(REMOTE_ADDR="198.51.100.4")
    assert [balancer.get("/api/v1/me/").status_code for _ in range(3)] == [401, 401, 429]
    for _ in range(20):
        assert balancer.get("/readyz").status_code == 200
        assert balancer.get("/healthz").status_code == 200


def test_probes_in_a_burst_share_one_round_of_checks(db, monkeypatch):
    monkeypatch.setattr(health, "CACHE_SECONDS", 60.0)
    rounds = []
    real = health.readiness
    monkeypatch.setattr(health, "readiness", lambda: rounds.append(1) or real())
    for _ in range(10):
        assert Client().get("/readyz").status_code == 200
    assert len(rounds) == 1


def test_readyz_goes_unready_when_the_key_store_is_down_and_ready_when_it_returns(db, settings):
    server = start_embedded_valkey(CLEAN)
    port = server.port
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/0"
    try:
        assert Client().get("/readyz").json() == {"status": "ready", "checks": ALL_OK}
        server.stop()
        down = Client().get("/readyz")
        assert down.status_code == 503
        assert down.json()["status"] == "unready"
        assert _failing(down) == {"key_store", "key_store_hygiene"}
        assert str(port) not in down.content.decode()
        assert Client().get("/healthz").status_code == 200  # alive all the same
        server = start_embedded_valkey(CLEAN, port=port)
        assert Client().get("/readyz").status_code == 200
    finally:
        server.stop()


def test_a_key_store_that_would_evict_tokens_is_not_ready(db, settings):
    server = start_embedded_valkey(
        {"save": "", "maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}
    )
    settings.BYOK_REDIS_URL = f"{server.connection_url}/0"
    try:
        response = Client().get("/readyz")
        assert response.status_code == 503
        assert _failing(response) == {"key_store_hygiene"}
    finally:
        server.stop()


def test_a_key_store_that_persists_tokens_is_not_ready(db, settings):
    server = start_embedded_valkey({**CLEAN, "appendonly": "yes"})
    settings.BYOK_REDIS_URL = f"{server.connection_url}/0"
    try:
        assert _failing(Client().get("/readyz")) == {"key_store_hygiene"}
    finally:
        server.stop()


def test_readyz_goes_unready_when_the_broker_is_down_and_ready_when_it_returns(db):
    server = start_embedded_valkey(CLEAN)
    port = server.port
    try:
        with publishing_to(f"redis://127.0.0.1:{port}/0"):
            assert Client().get("/readyz").status_code == 200
            server.stop()
            down = Client().get("/readyz")
            assert down.status_code == 503
            assert _failing(down) == {"broker"}
            assert "127.0.0.1" not in down.content.decode()
            server = start_embedded_valkey(CLEAN, port=port)
            assert Client().get("/readyz").json() == {"status": "ready", "checks": ALL_OK}
    finally:
        server.stop()


def test_readyz_with_rabbitmq_is_ready_and_unready_when_it_is_gone_or_hangs(db, rabbitmq):
    with publishing_to(rabbitmq.url):
        assert Client().get("/readyz").json() == {"status": "ready", "checks": ALL_OK}
        rabbitmq.stop()  # its port closed: nothing listens
        down = Client().get("/readyz")
        assert down.status_code == 503
        assert _failing(down) == {"broker"}
        assert rabbitmq.vhost not in down.content.decode()
        rabbitmq.start()
        assert Client().get("/readyz").status_code == 200
        with rabbitmq.hang():  # accepts, never answers: failed at the deadline
            assert _failing(Client().get("/readyz")) == {"broker"}
        assert Client().get("/readyz").status_code == 200


def test_readyz_is_unready_when_no_rabbitmq_listens(db):
    with publishing_to(f"amqp://guest:guest@127.0.0.1:{_free_port()}//"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == {"broker"}


def test_readyz_is_unready_when_the_database_does_not_answer(db, monkeypatch):
    closed = {
        **connections["default"].settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "swrly",
        "USER": "swrly",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": str(_free_port()),
        "OPTIONS": {},
    }
    monkeypatch.setattr(connections["default"], "settings_dict", closed)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == {"database"}
    assert "swrly" not in response.content.decode()
    monkeypatch.undo()
    assert Client().get("/readyz").status_code == 200


def test_a_hanging_dependency_fails_its_check_at_the_deadline(db, settings):
    settings.READYZ_TIMEOUT = 0.5
    with _silent_server() as port, publishing_to(f"redis://127.0.0.1:{port}/0"):
        settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/0"
        response = Client().get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == {"key_store", "key_store_hygiene", "broker"}


def test_a_check_that_answers_after_the_deadline_counts_as_failed(db, settings, monkeypatch):
    settings.READYZ_TIMEOUT = 0.2
    release = threading.Event()

    def hangs(database):
        release.wait(5)
        return {"database": True}

    probes = (hangs, *health._PROBES[1:])
    monkeypatch.setattr(health, "_PROBES", probes)
    try:
        checks = health.readiness()
    finally:
        release.set()
    assert checks["database"] is False
    assert checks["broker"] is True
