"""Shared set-up for the benchmarks: settings, secrets, a Redis server, and the real processes.

A benchmark starts its own embedded Valkey (no persistence) unless REDIS_URL is set, and
generates its own secrets; it never reads .env.

SWRLY_BENCH_ROOT names the checkout whose code is imported (default: the one this file is in),
so bench/runs.py --baseline can run the same benchmark against another checkout: its own
modules first on sys.path, and first on PYTHONPATH for the processes started from here.
"""

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(os.environ.get("SWRLY_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

_valkey = None


def configure() -> str:
    """Prepare the environment, start Redis if needed, set up Django; returns the Redis URL."""
    global _valkey
    import secrets

    from swrly.keys.keyring import generate_key

    os.environ["SWRLY_ENV_FILE"] = os.devnull
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("BYOK_ENCRYPTION_KEY", generate_key())
    os.environ.setdefault("AUDIT_CHAIN_KEY", generate_key())
    os.environ.setdefault("AUDIT_SIGNING_KEY", generate_key())
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    if not os.environ.get("REDIS_URL"):
        from swrly.dev.devstack import start_embedded_valkey

        # start_embedded_valkey retries by itself; a --baseline checkout's older one may not.
        for attempt in range(3):
            try:
                _valkey = start_embedded_valkey()
                break
            except Exception:
                if attempt == 2:
                    raise
        os.environ["REDIS_URL"] = _valkey.connection_url + "/0"
    import django

    django.setup()
    return os.environ["REDIS_URL"]


def stop() -> None:
    if _valkey is not None:
        _valkey.stop()


def best_rate(run: Callable[[], int], rounds: int) -> tuple[float, float]:
    """(best, median) operations per second over `rounds` runs of `run` (which returns ops)."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        ops = run()
        rates.append(ops / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)


def median_seconds(run: Callable[[], object], rounds: int) -> float:
    """Median seconds of `run()` over `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction 0.5 = median, 0.95 = p95) of a non-empty list."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    """Until something accepts connections on 127.0.0.1:port (or the process has died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    end([process])  # not left behind
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:.0f} s")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (secrets, DATABASE_URL, REDIS_URL) for a child process that
    must import the benchmarked checkout's code, plus `extra`."""
    env = {**os.environ, **extra}
    if "CELERY_BROKER_URL" not in extra:  # see unread_broker(): never the children's broker
        env.pop("CELERY_BROKER_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["SWRLY_BENCH_ROOT"] = str(ROOT)
    return env


def spawn(command: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """A child in ROOT; its output goes to `log` (or nowhere), never into the figures."""
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (owned by the child)
    return subprocess.Popen(  # noqa: S603
        command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
    )


def end(processes: list[subprocess.Popen]) -> None:
    """Terminate the processes this benchmark started (and only those), then reap them."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_sandbox(env: dict[str, str], log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """The sandbox provider in its own process (as a real provider is: not sharing this
    process's interpreter lock with the code measured); returns (process, base URL)."""
    port = free_port()
    process = spawn([sys.executable, "-m", "swrly.dev.sandbox", "--port", str(port)], env, log)
    wait_for_port(port, process, "the sandbox provider")
    return process, f"http://127.0.0.1:{port}"


def start_web(
    env: dict[str, str], *, workers: int = 2, threads: int = 4, log: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """gunicorn (a project dependency, as in production: docs/operations.md) serving
    swrly.wsgi with gthread workers; returns (process, base URL)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "swrly.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        f"--chdir={ROOT}",
        # Clients keep connections open between requests (as a load balancer does); gunicorn's
        # default of 2 s would close them under a client waiting for a run.
        "--keep-alive=75",
        "--log-level=warning",
    ]
    process = spawn(command, env, log)
    wait_for_port(port, process, "gunicorn")
    return process, f"http://127.0.0.1:{port}"


def start_worker(
    env: dict[str, str], *, concurrency: int = 4, log: Path | None = None
) -> subprocess.Popen:
    """A real Celery run worker (threads pool, the run queue) as `make run` starts it."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "swrly",
        "worker",
        "--hostname=bench-runs@%h",
        "--queues=celery",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
    ]
    return spawn(command, env, log)


def wait_worker_ready(broker_url: str, timeout: float = 90) -> None:
    """Until a worker answers a ping on the broker (so its start-up is not measured)."""
    from celery import Celery

    # Celery prefers CELERY_BROKER_URL from the environment (see unread_broker) to `broker`.
    moved = os.environ.pop("CELERY_BROKER_URL", None)
    try:
        probe = Celery("bench-probe", broker=broker_url, set_as_current=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe.control.ping(timeout=1.0):
                return
        raise SystemExit("the Celery worker did not answer a ping")
    finally:
        if moved is not None:
            os.environ["CELERY_BROKER_URL"] = moved


def unread_broker(database: int = 15) -> str:
    """Point this process's task publishing at a Redis database no worker reads (the runs it
    queues are executed here, by run_execute), leaving the children's broker alone. Celery
    reads CELERY_BROKER_URL from the environment before its configuration."""
    from celery import current_app

    url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{database}"
    os.environ["CELERY_BROKER_URL"] = url
    if current_app.conf.broker_url != url:
        raise SystemExit("could not move this process's broker to an unread database")
    return url


def tree_cpu(process: subprocess.Popen) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants alive now
    (gunicorn's workers, for instance), from /proc through psutil."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def statement_counter() -> Iterator[dict[str, int]]:
    """Count this thread's SQL statements and durable commits on the default connection.

    Statements: every execute/executemany Django sends (savepoints included; BEGIN and COMMIT
    are not statements the driver is asked to run). Commits: transactions that wrote something
    and were committed — an outermost atomic block's commit after a write, or a write in
    autocommit mode (its own transaction). Read-only transactions are not counted: they make
    nothing durable.
    """
    from django.db import connection

    counts = {"statements": 0, "commits": 0}
    dirty = {"value": False}
    writes = ("INSERT", "UPDATE", "DELETE")

    def wrapper(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        counts["statements"] += 1
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head in writes or (head == "WITH" and any(w in sql.upper() for w in writes)):
            if connection.in_atomic_block:
                dirty["value"] = True
            else:
                counts["commits"] += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    original_commit = connection.commit

    def commit() -> None:
        if dirty["value"]:
            counts["commits"] += 1
            dirty["value"] = False
        original_commit()

    def rollback() -> None:
        dirty["value"] = False  # rolled back: nothing became durable
        original_rollback()

    original_rollback = connection.rollback
    connection.commit = commit  # type: ignore[method-assign]
    connection.rollback = rollback  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield counts
    finally:
        del connection.commit  # back to the class's methods
        del connection.rollback
