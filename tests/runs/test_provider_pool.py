"""The pooled provider clients: one per process and provider, reused across runs, sharing
nothing between runs but open connections.

Real HTTP on loopback: the sandbox, and for cookies a small server of this module's own that
sets one on every answer and counts the connections it accepts.
"""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

import http.server
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from runs.providers import ModelCall, call_provider, provider_client
from runs.providers.anthropic import ANTHROPIC
from runs.providers.client import ProviderClients, pooled_client, send
from tests.forking import true_in_forked_child
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    make_secret,
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "model-1",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


class _CookieServer(http.server.ThreadingHTTPServer):
    """Answers every POST with a valid Anthropic message and a Set-Cookie; records the Cookie
    header of every request and counts accepted TCP connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        self.accepted = 0
        self.cookies_seen: list[str | None] = []
        super().__init__(("127.0.0.1", 0), _CookieHandler)

    def get_request(self):  # type: ignore[no-untyped-def]
        request = super().get_request()
        self.accepted += 1
        return request


class _CookieHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, format, *args):  # type: ignore[no-untyped-def]
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        server = self.server
        assert isinstance(server, _CookieServer)
        server.cookies_seen.append(self.headers.get("cookie"))
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "affinity=tenant-a-session; Path=/; HttpOnly")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def cookie_server(settings) -> Iterator[_CookieServer]:
    server = _CookieServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.DEBUG = True  # plain http on loopback needs it
    settings.PROVIDER_BASE_URLS = {"anthropic": f"http://127.0.0.1:{server.server_port}"}
    yield server
    server.shutdown()
    server.server_close()


def _run(secret_value: str) -> httpx.Response:
    """One run's provider call, the way the executor makes it."""
    with provider_client() as clients, make_secret(secret_value) as secret:
        body = ANTHROPIC.build_body(ModelCall(model="model-1", prompt="hi"))
        return send(
            "anthropic", protocol=ANTHROPIC, secret=secret, body=body, client=clients
        ).response


def _local_port(response: httpx.Response) -> int:
    """The client-side port of the TCP connection that carried `response`."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_two_runs_reuse_one_tcp_connection_to_the_sandbox(provider_server):
    first = _run("sk-sandbox-" + "a" * 24)
    second = _run("sk-sandbox-" + "b" * 24)

    assert _local_port(first) == _local_port(second)
    assert [r.headers["x-api-key"] for r in provider_server.requests[-2:]] == [
        "sk-sandbox-" + "a" * 24,
        "sk-sandbox-" + "b" * 24,
    ]


def test_a_cookie_set_by_the_provider_is_never_sent_back_across_runs(cookie_server):
    for index in range(3):
        with provider_client() as clients, make_secret(f"sk-tenant-{index}-" + "k" * 20) as s:
            result = call_provider(
                "anthropic", secret=s, call=ModelCall(model="model-1", prompt="hi"), client=clients
            )
        assert result.text == "hello"

    assert cookie_server.cookies_seen == [None, None, None]
    assert cookie_server.accepted == 1  # the same keep-alive connection all three times
    assert len(pooled_client("anthropic").cookies.jar) == 0


def test_a_cookie_set_by_hand_on_the_pooled_client_is_dropped(cookie_server):
    client = pooled_client("anthropic")
    client.cookies.set("planted", "x", domain="127.0.0.1")
    _run("sk-sandbox-" + "c" * 24)

    assert len(client.cookies.jar) == 0
    assert cookie_server.cookies_seen == [None]


def test_keys_travel_only_in_each_requests_own_headers(provider_server):
    key = "sk-sandbox-" + "d" * 24
    _run(key)
    client = pooled_client("anthropic")

    assert provider_server.requests[-1].headers["x-api-key"] == key
    assert key not in repr(dict(client.headers))
    assert not {"x-api-key", "authorization"} & {name.lower() for name in client.headers}
    assert client.auth is None


def test_provider_client_lends_the_process_wide_clients_and_closes_nothing(provider_server):
    with provider_client() as clients:
        assert isinstance(clients, ProviderClients)
        lent = clients.for_provider("anthropic")
    assert lent is pooled_client("anthropic")
    assert not lent.is_closed
    assert pooled_client("openai") is not lent  # one client per provider
    assert not lent.follow_redirects
    assert not lent.trust_env


def test_pooled_clients_are_shared_by_threads():
    found: list[httpx.Client] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        found.append(pooled_client("sandbox"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 8
    assert all(client is found[0] for client in found)


def test_a_forked_child_never_uses_its_parents_client():
    parent = pooled_client("anthropic")

    def child_has_its_own() -> bool:
        own = pooled_client("anthropic")
        return own is not parent and not own.is_closed and pooled_client("anthropic") is own

    assert true_in_forked_child(child_has_its_own)
    assert pooled_client("anthropic") is parent
    assert not parent.is_closed
