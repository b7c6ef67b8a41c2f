"""Real `celery worker` processes against a broker the test owns (and may restart).

The fault tests need what the in-process worker of `celery_worker` cannot give: worker
processes that can die, and a broker that can go away under them. `broker` starts a Valkey
server of its own (append-only, so queued messages outlive a restart, as on a production
broker), or with SWRLY_TEST_BROKER=amqp a RabbitMQ virtual host of its own (tests/runs/rabbitmq.py);
`workers` starts `python -m celery -A swrly worker` subprocesses that use this test's
database, key store and sandbox provider, and stops them after the test.

Every wait is a poll with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from swrly.celery import app
from swrly.dev.devstack import start_embedded_valkey
from tests.runs.rabbitmq import RabbitMQBroker

# Which broker `broker` gives the real-worker tests: "redis" (a Valkey of the test's own, the
# default) or "amqp" (a RabbitMQ virtual host; .ci/run runs the run-engine tests so).
BROKER_KIND = os.environ.get("SWRLY_TEST_BROKER", "redis")

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class Broker:
    """A Valkey server on a fixed loopback port that can be stopped and started again."""

    kind = "redis"

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: Any = None
        self.port: int | None = None
        self.start()

    def start(self) -> None:
        server = start_embedded_valkey(
            {
                "appendonly": "yes",
                "appendfsync": "always",
                "save": "",
                "maxmemory-policy": "noeviction",
            },
            port=self.port,
            data_dir=self._data_dir,
            persist=True,
        )
        if self.port is not None and server.port != self.port:
            server.stop()
            raise AssertionError(f"the broker came back on port {server.port}, not {self.port}")
        self._server, self.port = server, server.port

    def stop(self) -> None:
        self._server.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unheard_url(self) -> str:
        """Another database of this server, where no worker listens."""
        return f"redis://127.0.0.1:{self.port}/9"

    def message_count(self, queue: str) -> int:
        import redis

        return int(redis.Redis.from_url(self.url).llen(queue))

    @contextlib.contextmanager
    def hang(self) -> Iterator[None]:
        """While inside, the server is stopped (SIGSTOP): it accepts and never answers."""
        pid = self._server._process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.stop()


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Make this process's Celery app publish to `url` (and go back afterwards)."""
    old = app.conf.get("broker_write_url")

    def switch(to: str | None) -> None:
        # Drop the references only: kombu keeps one pool per broker URL for the process, and
        # a closed one would refuse every later publish to that URL.
        app._pool = None
        app.amqp._producer_pool = None
        app.conf.broker_write_url = to

    switch(url)
    try:
        assert app.conf.broker_write_url == url, "this process would publish elsewhere"
        yield
    finally:
        switch(old)


def database_url() -> str:
    """A DATABASE_URL naming the test database this test is using."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(*, broker_url: str, provider_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process: this test's database, key store and sandbox."""
    env = {
        **os.environ,
        "SWRLY_ENV_FILE": os.devnull,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "BYOK_REDIS_URL": settings.BYOK_REDIS_URL,
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "True",
        "PROVIDER_BASE_URLS": f"sandbox={provider_url}",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    for name in ("DJANGO_ALLOW_ASYNC_UNSAFE", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL"):
        env.pop(name, None)
    return env


class Workers:
    """Real worker processes; each logs to its own file (shown when an assertion fails)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, env: dict[str, str], *args: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "swrly", *args],
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        return process

    def worker(self, name: str, env: dict[str, str], *args: str) -> subprocess.Popen:
        """`celery worker` named `name`@…, with `args` (pool, concurrency, queues) added."""
        return self.start(
            name,
            env,
            "worker",
            f"--hostname={name}@%h",
            "--loglevel=INFO",
            *args,
        )

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-6000:]}" for name in self.processes)

    def dead(self) -> dict[str, int]:
        return {
            name: process.returncode
            for name, process in self.processes.items()
            if process.poll() is not None
        }

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, on_fail=None) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"gave up waiting for {what}\n{detail}")
        time.sleep(0.1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker | RabbitMQBroker]:
    """A broker owned by this test (SWRLY_TEST_BROKER), published to by this process meanwhile."""
    server = RabbitMQBroker() if BROKER_KIND == "amqp" else Broker(tmp_path / "broker")
    try:
        with publishing_to(server.url):
            yield server
    finally:
        server.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop()
