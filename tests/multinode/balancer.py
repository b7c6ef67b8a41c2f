"""A small HTTP load balancer for the multi-node test: what a real one does, and no more.

Round-robin over the web nodes; it appends the client's address to `X-Forwarded-For` (the web
nodes trust it: TRUSTED_PROXIES is its address); a node that refuses the connection is marked
down for a moment and the request goes to the next one (nothing was sent, so even a POST is
safe to send elsewhere). A node that fails *after* the request was sent answers the client 502
for a POST (it may have been applied: the client retries with its Idempotency-Key) and is
retried on the next node for GET and HEAD. It counts what it did, for the test's figures.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
DOWN_FOR = 1.0  # seconds a node that refused a connection is skipped
UPSTREAM_TIMEOUT = 60.0


@dataclass
class Backend:
    host: str
    port: int
    down_until: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class BalancerStats:
    """What the balancer did: answers by node and status, retries on another node, 502s."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the clients, as a load balancer does
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the test prints figures, not access lines

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_PATCH(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() != "x-forwarded-for"
        }
        previous = self.headers.get("X-Forwarded-For")
        client = self.client_address[0]
        headers["X-Forwarded-For"] = f"{previous}, {client}" if previous else client
        stats = self.server.stats
        idempotent = self.command in ("GET", "HEAD")
        for backend in self.server.choose():
            try:
                connection = http.client.HTTPConnection(
                    backend.host, backend.port, timeout=UPSTREAM_TIMEOUT
                )
                connection.connect()
            except OSError:
                backend.down_until = time.monotonic() + DOWN_FOR
                stats.add("connect_failed")
                stats.add("retried_elsewhere")
                continue
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                backend.down_until = time.monotonic() + DOWN_FOR
                stats.add("failed_after_send")
                if idempotent:
                    stats.add("retried_elsewhere")
                    continue
                self._answer(502, b'{"detail": "bad gateway"}', [])
                stats.add("answered_502")
                return
            connection.close()
            stats.add(f"{backend.name} {response.status}")
            self._answer(response.status, payload, response.getheaders())
            return
        self._answer(502, b'{"detail": "no web node answered"}', [])
        stats.add("answered_502")

    def _answer(self, status: int, payload: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backends: list[Backend]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.backends = backends
        self.stats = BalancerStats()
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def choose(self) -> list[Backend]:
        """Every node once, starting with the next in turn; nodes marked down go last."""
        with self._lock:
            start = next(self._turn) % len(self.backends)
        ordered = self.backends[start:] + self.backends[:start]
        now = time.monotonic()
        return [b for b in ordered if b.down_until <= now] + [
            b for b in ordered if b.down_until > now
        ]


class LoadBalancer:
    """`LoadBalancer([(host, port), …]).start()`; `url`; `stats`; `stop()`."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._server = _Server([Backend(host, port) for host, port in backends])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="multinode-balancer",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def stats(self) -> BalancerStats:
        return self._server.stats

    def start(self) -> LoadBalancer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
