"""RabbitMQ for the tests: a virtual host of their own on the machine's broker, reached through a
loopback TCP relay the test owns.

RabbitMQ is a shared machine service (127.0.0.1:5672 here and in CI), so a test never restarts
it. Each test gets a fresh virtual host (its own queues and exchanges; parallel tests and other
checkouts never share one), made with `rabbitmqctl` (root on this machine) or, where that is not
available, the management HTTP API, and deleted after the test. Its connections go through
`Relay`, which stands in for the broker's network presence: `stop()` drops every connection and
refuses new ones (a broker that went away: clients see what a restart shows them, the quorum
queues keep their messages), `start()` listens again on the same port, and `hang()` keeps
accepting and never answers (a hung broker).

SWRLY_TEST_AMQP_URL names the broker (default amqp://guest:guest@127.0.0.1:5672/);
SWRLY_TEST_RABBITMQ_API its management API when rabbitmqctl cannot be used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

AMQP_URL = os.environ.get("SWRLY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_API = os.environ.get("SWRLY_TEST_RABBITMQ_API", "http://127.0.0.1:15672")


def reachable(url: str = AMQP_URL, timeout: float = 2.0) -> bool:
    """Whether the broker's AMQP port accepts a connection."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 5672), timeout=timeout):
            return True
    except OSError:
        return False


class _Ctl:
    """Adds and deletes virtual hosts: rabbitmqctl, else the management HTTP API."""

    def __init__(self) -> None:
        parts = urlsplit(AMQP_URL)
        self.user = parts.username or "guest"
        self.password = parts.password or "guest"
        self.use_rabbitmqctl = bool(shutil.which("rabbitmqctl")) and self._rabbitmqctl_works()

    @staticmethod
    def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["rabbitmqctl", "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def _rabbitmqctl_works(self) -> bool:
        try:
            return self._rabbitmqctl("list_vhosts").returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _api(self, method: str, path: str, body: dict | None = None) -> None:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (a loopback management API)
            MANAGEMENT_API + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass

    def add(self, vhost: str) -> None:
        if self.use_rabbitmqctl:
            for args in (
                ("add_vhost", vhost),
                ("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*"),
            ):
                done = self._rabbitmqctl(*args)
                if done.returncode != 0:
                    raise AssertionError(f"rabbitmqctl {' '.join(args)}: {done.stderr}")
            return
        self._api("PUT", f"/api/vhosts/{quote(vhost, safe='')}")
        self._api(
            "PUT",
            f"/api/permissions/{quote(vhost, safe='')}/{quote(self.user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete(self, vhost: str) -> None:
        if self.use_rabbitmqctl:
            self._rabbitmqctl("delete_vhost", vhost)
        else:
            with contextlib.suppress(OSError):
                self._api("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")


class Relay:
    """A loopback TCP relay to (host, port) that can drop, refuse and hang connections."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port or 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close the listener and every relayed connection: the broker is gone."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @contextlib.contextmanager
    def hang(self) -> Iterator[None]:
        """While inside: connections are accepted and nothing is relayed either way."""
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets -= {source, sink}


class Vhost:
    """A virtual host of its own on the machine's RabbitMQ (`url` reaches it directly);
    `close()` deletes it and every queue in it."""

    def __init__(self, prefix: str = "swrly-test") -> None:
        if not reachable():
            raise AssertionError(f"RabbitMQ does not answer at {urlsplit(AMQP_URL).netloc}")
        self._ctl = _Ctl()
        self.name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self._ctl.add(self.name)

    def url_via(self, host: str, port: int) -> str:
        """The AMQP URL of this virtual host through `host:port` (the broker or a relay)."""
        credentials = f"{self._ctl.user}:{self._ctl.password}"
        return f"amqp://{credentials}@{host}:{port}/{quote(self.name, safe='')}"

    @property
    def url(self) -> str:
        parts = urlsplit(AMQP_URL)
        return self.url_via(parts.hostname or "127.0.0.1", parts.port or 5672)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl.delete(self.name)


class RabbitMQBroker:
    """A virtual host of its own on the machine's RabbitMQ, reached through a `Relay`.

    The same interface as real_workers.Broker: `url`, `stop()`, `start()`, `restart()`,
    `message_count(queue)`, `unheard_url` (where a message is accepted and no worker listens),
    `hang()`.
    """

    kind = "amqp"

    def __init__(self) -> None:
        self._vhosts = [Vhost()]
        parts = urlsplit(AMQP_URL)
        self._relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5672)

    @property
    def port(self) -> int | None:
        return self._relay.port

    @property
    def vhost(self) -> str:
        return self._vhosts[0].name

    @property
    def url(self) -> str:
        return self._vhosts[0].url_via("127.0.0.1", self._relay.port)

    @property
    def unheard_url(self) -> str:
        """A second virtual host of this broker, where no worker consumes."""
        if len(self._vhosts) == 1:
            self._vhosts.append(Vhost("swrly-test-unheard"))
        return self._vhosts[1].url_via("127.0.0.1", self._relay.port)

    def start(self) -> None:
        self._relay.start()

    def stop(self) -> None:
        self._relay.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def hang(self) -> contextlib.AbstractContextManager[None]:
        return self._relay.hang()

    def message_count(self, queue: str) -> int:
        """Messages ready in `queue` of this test's virtual host (a passive declare)."""
        from kombu import Connection

        with Connection(self.url, connect_timeout=10) as conn:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        return int(count)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._relay.stop()
        for vhost in self._vhosts:
            vhost.close()


@pytest.fixture
def rabbitmq() -> Iterator[RabbitMQBroker]:
    """A RabbitMQ virtual host of the test's own; skipped where RabbitMQ does not answer, unless
    SWRLY_REQUIRE_RABBITMQ is set (.ci/run sets it: there, a missing broker is a failure)."""
    if not reachable():
        missing = f"RabbitMQ does not answer at {urlsplit(AMQP_URL).netloc}"
        if os.environ.get("SWRLY_REQUIRE_RABBITMQ"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = RabbitMQBroker()
    try:
        yield server
    finally:
        server.close()
