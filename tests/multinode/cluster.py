"""The multi-node topology of tests/multinode/, on loopback ports, every server real.

- PostgreSQL through a real PgBouncer in transaction mode (tests/pgbouncer/server.py), on a
  database of this run's own, created here, migrated once through PgBouncer, dropped at the end;
- the key store (BYOK_REDIS_URL): a Sentinel group (primary, replica, three sentinels) when
  `swrly.dev.valkey_ha` is there, else one Valkey (see `key_store()`); the one thing faulted;
- a separate Valkey for REDIS_URL (cache and rate limits), never faulted;
- RabbitMQ as the broker, on a vhost of this run's own, never faulted;
- two web nodes (gunicorn, gthread) behind tests/multinode/balancer.py, TRUSTED_PROXIES set to
  the balancer's address;
- two run-worker nodes, one maintenance worker and beat (Celery processes, as in production);
- the sandbox provider, in this process so that the test reads what it received.

Each node is one process (the test's "node"); every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import psycopg
import psycopg.sql

from swrly.dev.devstack import start_embedded_valkey
from swrly.dev.sandbox import SandboxServer
from tests.multinode.balancer import LoadBalancer, free_port
from tests.pgbouncer.server import PgBouncer, pgbouncer_missing, start_pgbouncer
from tests.runs import rabbitmq

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"

# Short enough that recovery shows within the test's bound (production: docs/operations.md).
TIMINGS = {
    "BYOK_TOKEN_TTL": "120",  # > RUN_REQUEUE_AFTER + 60 (swrly.E005)
    "RUN_INTERRUPTED_AFTER": "20",  # a step here takes well under a second
    "RUN_REQUEUE_AFTER": "10",
    "CELERY_VISIBILITY_TIMEOUT": "60",  # Redis brokers only; RabbitMQ redelivers at once
}
RUN_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def missing_services() -> list[str]:
    """What this machine lacks to run the topology (empty: everything is there)."""
    missing = []
    if reason := pgbouncer_missing():
        missing.append(reason)
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.OperationalError:
        missing.append("PostgreSQL does not answer on 127.0.0.1:5432 (trust, user postgres)")
    if not rabbitmq.reachable():
        missing.append("RabbitMQ does not answer (SWRLY_TEST_AMQP_URL)")
    return missing


# --- the key store -------------------------------------------------------------------------


class KeyStore(Protocol):
    """The key-store role: a URL for BYOK_REDIS_URL, and the fault the test injects."""

    kind: str
    url: str

    def fault(self) -> str:
        """Lose the key store's primary; returns what was done (for the figures)."""

    def stop(self) -> None: ...


class PlainKeyStore:
    """One Valkey (no persistence, no eviction). Its fault: the server restarts, empty — every
    token deposited and not yet consumed is lost, as with a primary lost without a replica."""

    kind = "plain"

    def __init__(self) -> None:
        self._server = start_embedded_valkey()
        self.port: int = self._server.port
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def fault(self) -> str:
        self._server.stop()
        self._server = start_embedded_valkey(port=self.port)
        return "key-store Valkey restarted empty (no replica: its tokens are lost)"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.stop()


class SentinelKeyStore:
    """A primary, a replica and three sentinels (swrly.dev.valkey_ha). Its fault: the primary
    is killed and the sentinels promote the replica."""

    kind = "sentinel"

    def __init__(self) -> None:
        from swrly.dev.valkey_ha import start_sentinel_group

        self._group = start_sentinel_group()
        self.url = self._group.url

    def fault(self) -> str:
        started = time.monotonic()
        self._group.kill_primary()
        self._group.wait_for_failover()
        took = time.monotonic() - started
        return f"key-store primary killed; sentinels promoted the replica ({took:.1f} s)"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._group.stop()


def key_store() -> KeyStore:
    """The Sentinel group when this checkout has it (or SWRLY_MULTINODE_KEY_STORE=sentinel),
    else one plain Valkey (SWRLY_MULTINODE_KEY_STORE=plain forces it)."""
    wanted = os.environ.get("SWRLY_MULTINODE_KEY_STORE", "")
    if wanted == "plain":
        return PlainKeyStore()
    try:
        import swrly.dev.valkey_ha  # noqa: F401
    except ImportError:
        if wanted == "sentinel":
            raise
        return PlainKeyStore()
    return SentinelKeyStore()


# --- RabbitMQ and PostgreSQL ---------------------------------------------------------------


def create_database(name: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def drop_database(bouncer: PgBouncer | None, name: str) -> None:
    """Close PgBouncer's connections to `name`, then drop it on PostgreSQL itself."""
    if bouncer is not None:
        with contextlib.suppress(psycopg.Error):
            bouncer.admin(f"KILL {name}")
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


# --- the nodes -----------------------------------------------------------------------------


@dataclass
class Node:
    """One process of the topology, logging to its own file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Cluster:
    """Everything started by `start_cluster()`; stopped in reverse order by `stop()`."""

    workdir: Path
    database: str
    env: dict[str, str] = field(default_factory=dict)
    bouncer: PgBouncer | None = None
    keys: KeyStore | None = None
    cache: Any = None
    broker: rabbitmq.Vhost | None = None
    sandbox: SandboxServer | None = None
    web: list[Node] = field(default_factory=list)
    run_workers: list[Node] = field(default_factory=list)
    maintenance: list[Node] = field(default_factory=list)
    balancer: LoadBalancer | None = None

    # -- processes

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def web_node(self, index: int) -> Node:
        port = free_port()
        node = Node(
            name=f"web{index}",
            command=[
                sys.executable,
                "-m",
                "gunicorn",
                "swrly.wsgi:application",
                f"--bind=127.0.0.1:{port}",
                "--worker-class=gthread",
                "--workers=1",
                "--threads=4",
                "--keep-alive=75",
                "--graceful-timeout=20",
                "--log-level=warning",
            ],
            env=self.env,
            log_path=self.workdir / f"web{index}.log",
            port=port,
        )
        node.start()
        return node

    def wait_web(self, node: Node) -> None:
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{node.port}/healthz") or not node.alive(),
            timeout=90,
            what=f"{node.name} to answer /healthz",
        )
        assert node.alive(), f"{node.name} exited:\n{node.log()[-3000:]}"

    def celery(self, name: str, *args: str) -> Node:
        node = Node(
            name=name,
            command=[sys.executable, "-m", "celery", "-A", "swrly", *args],
            env={**self.env, "LOG_LEVEL": "INFO"},  # its "ready." line says it consumes
            log_path=self.workdir / f"{name}.log",
        )
        node.start()
        return node

    def run_worker(self, index: int) -> Node:
        return self.celery(
            f"worker{index}",
            "worker",
            f"--hostname=runs{index}@%h",
            f"--queues={RUN_QUEUE}",
            "--pool=threads",
            "--concurrency=4",
            "--loglevel=INFO",
        )

    def wait_ready(self, node: Node) -> None:
        wait_until(
            lambda: re.search(r"@\S+ ready\.", node.log()) or not node.alive(),
            timeout=90,
            what=f"{node.name} to be ready",
        )
        assert node.alive(), f"{node.name} exited:\n{node.log()[-3000:]}"

    def restart_web(self, index: int) -> None:
        """SIGTERM (gunicorn finishes the requests it holds), wait, start it again."""
        old = self.web[index]
        old.stop()
        node = Node(
            name=old.name, command=old.command, env=old.env, log_path=old.log_path, port=old.port
        )
        node.start()
        self.web[index] = node
        self.wait_web(node)

    def kill_worker(self, index: int) -> None:
        """SIGKILL a run-worker node: no goodbye, its runs and messages left as they are."""
        node = self.run_workers[index]
        node.signal(signal.SIGKILL)
        assert node.process is not None
        node.process.wait(timeout=15)

    def maintain(self) -> None:
        """Send the reaper/sweeper and the orphan-token sweep to the maintenance queue, as beat
        does every MAINTENANCE_INTERVAL (60 s, too long for this test): the maintenance worker
        runs them."""
        from celery import Celery
        from django.conf import settings

        sender = Celery("multinode-beat", broker=self.broker_url, set_as_current=False)
        # The queues as the nodes declare them (quorum queues on RabbitMQ): a sender that
        # declared a classic queue of the same name would be refused (PRECONDITION_FAILED).
        sender.conf.task_queues = settings.CELERY_TASK_QUEUES
        try:
            for task in ("runs.tasks.reap_runs", "runs.tasks.sweep_orphan_tokens"):
                sender.send_task(task, queue=MAINTENANCE_QUEUE)
        finally:
            sender.close()

    @property
    def broker_url(self) -> str:
        assert self.broker is not None
        return self.broker.url

    def logs(self) -> str:
        nodes = [*self.web, *self.run_workers, *self.maintenance]
        return "\n".join(f"--- {node.name} ---\n{node.log()[-4000:]}" for node in nodes)

    # -- the database, read directly (not through PgBouncer) for the test's assertions

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        url = f"postgres://postgres@127.0.0.1:5432/{self.database}"
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def stop(self) -> None:
        for node in [*self.web, *self.run_workers, *self.maintenance]:
            with contextlib.suppress(Exception):
                node.stop()
        for part in (self.balancer, self.sandbox, self.keys, self.cache):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.broker is not None:
            self.broker.close()
        with contextlib.suppress(Exception):
            drop_database(self.bouncer, self.database)
        if self.bouncer is not None:
            self.bouncer.stop()


class CpuSampler:
    """CPU seconds (user + system) of every node's process tree, by role (web, worker,
    maintenance) from `start()` on, sampled every second so that a killed or restarted node
    keeps what it used (up to its last sample; a restarted node's start-up is counted)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._seen: dict[int, tuple[str, float]] = {}  # pid → (role, CPU seconds so far)
        self._baseline: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="multinode-cpu", daemon=True)

    def start(self) -> CpuSampler:
        self._sample()
        self._baseline = {pid: seconds for pid, (_, seconds) in self._seen.items()}
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(1.0):
            self._sample()

    def _sample(self) -> None:
        cluster = self._cluster
        nodes = [*cluster.web, *cluster.run_workers, *cluster.maintenance]
        for node in nodes:
            if node.process is None:
                continue
            role = (
                "web"
                if node.name.startswith("web")
                else ("worker" if node.name.startswith("worker") else "maintenance")
            )
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(node.process.pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        self._seen[process.pid] = (role, times.user + times.system)

    def stop(self) -> dict[str, float]:
        """CPU seconds by role since `start()`."""
        self._done.set()
        self._thread.join()
        self._sample()
        totals: dict[str, float] = {}
        for pid, (role, seconds) in self._seen.items():
            totals[role] = totals.get(role, 0.0) + seconds - self._baseline.get(pid, 0.0)
        return totals


def node_env(**values: str) -> dict[str, str]:
    """Every node's environment: this session's secrets (the same on every node, as in
    production), nothing of pytest's, and `values`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "CELERY_", "DJANGO_ALLOW"))
        and name not in ("DATABASE_URL", "REDIS_URL", "BYOK_REDIS_URL")
    }
    env.update(
        {
            "SWRLY_ENV_FILE": os.devnull,
            "PYTHONUNBUFFERED": "1",
            # PROVIDER_BASE_URLS names the sandbox over plain http on loopback: DEBUG allows it.
            "DEBUG": "True",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "False",
            "LOG_LEVEL": "WARNING",
            # The clients' own addresses decide their rate limits; no limits in this test.
            "API_RATE_PER_IP": "",
            "API_RATE_PER_TOKEN": "",
            **TIMINGS,
            **values,
        }
    )
    return env


@contextlib.contextmanager
def start_cluster(workdir: Path) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    cluster = Cluster(workdir=workdir, database=f"swrly_multinode_{suffix}")
    try:
        cluster.bouncer = start_pgbouncer(pool_size=20)
        create_database(cluster.database)
        cluster.keys = key_store()
        cluster.cache = start_embedded_valkey()
        cluster.broker = rabbitmq.Vhost("swrly-multinode")
        cluster.sandbox = SandboxServer().start()
        cluster.env = node_env(
            DATABASE_URL=cluster.bouncer.url(cluster.database),
            DATABASE_POOL_MODE="transaction",
            BYOK_REDIS_URL=cluster.keys.url,
            REDIS_URL=f"{cluster.cache.connection_url}/0",
            CELERY_BROKER_URL=cluster.broker.url,
            PROVIDER_BASE_URLS=f"sandbox={cluster.sandbox.url}",
            TRUSTED_PROXIES="127.0.0.1/32",  # the balancer; the clients are 127.0.0.2 and up
        )
        cluster.manage("migrate", "--noinput")
        cluster.web = [cluster.web_node(index) for index in (1, 2)]
        cluster.run_workers = [cluster.run_worker(index) for index in (1, 2)]
        cluster.maintenance = [
            cluster.celery(
                "maintenance",
                "worker",
                "--hostname=maintenance@%h",
                f"--queues={MAINTENANCE_QUEUE}",
                "--pool=threads",
                "--concurrency=1",
                "--loglevel=INFO",
            ),
            cluster.celery(
                "beat", "beat", f"--schedule={workdir / 'celerybeat-schedule'}", "--loglevel=INFO"
            ),
        ]
        for node in cluster.web:
            cluster.wait_web(node)
        for node in [*cluster.run_workers, cluster.maintenance[0]]:
            cluster.wait_ready(node)
        cluster.balancer = LoadBalancer([("127.0.0.1", node.port or 0) for node in cluster.web])
        cluster.balancer.start()
    except BaseException:
        print(cluster.logs())  # noqa: T201
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
