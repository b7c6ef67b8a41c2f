"""Benchmark of the run engine: in-process counts, the executor, and the real processes end to end.

    .venv/bin/python bench/runs.py [--runs 120] [--clients 4] [--concurrency 4]
                                   [--sample 20] [--steps-runs 50] [--tenant-runs 96]
    .venv/bin/python bench/runs.py --baseline DIR [--rounds 2] [--runs 120]

1. SQL statements and durable commits per POST /api/v1/runs/ and per execution of a 3-step run,
   counted in-process on a sample (a connection execute_wrapper; see _setup.statement_counter).
2. The executor's cost per step: `run_execute()` on queued runs against the same number of
   direct httpx calls to the same sandbox on one reused client.
3. End to end through the real processes: gunicorn (swrly.wsgi) and a Celery run worker
   (threads), `--clients` HTTP clients posting 3-step runs; runs/s from the first POST until the
   last run has finished, and CPU ms per run by process (web: gunicorn's tree; worker).
4. One tenant against sixteen at 16 concurrent clients, the worker running: runs/s and, on
   PostgreSQL, lock wait per POST (pg_stat_activity sampled; see sample_lock_waits).

With --baseline DIR (another checkout, e.g. `git -C /work/main archive 9ab06de | tar -x -C DIR`)
only phase 3 runs, alternately for this checkout and DIR in subprocesses, and the ratio is
printed. Each side imports its own code (SWRLY_BENCH_ROOT, PYTHONPATH; the path of the imported
`runs.executor` is printed) and has its own database (BENCH_DATABASE_URL, and the same name with
`_baseline` appended for DIR, created if missing; or a fresh SQLite file each).

It uses a fresh SQLite database in a temporary directory (or BENCH_DATABASE_URL: an empty
scratch database it migrates and fills), its own embedded Valkey (unless REDIS_URL is set, whose
database it FLUSHES), and the sandbox provider in its own process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _setup
from _setup import configure, percentile, stop

STEPS = [
    {
        "name": "outline",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Outline {{ input.topic }}",
    },
    {
        "name": "draft",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Draft {{ steps.outline.output }}",
    },
    {
        "name": "review",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Review {{ steps.draft.output }}",
    },
]
KEY = "sk-sandbox-bench-key-000000000001"
TENANTS = 16


def prepare(workdir: Path) -> None:
    # BENCH_DATABASE_URL: an empty scratch database to migrate and fill (e.g. PostgreSQL).
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}"
    )
    os.environ["DEBUG"] = "True"  # plain http to the loopback sandbox
    os.environ.setdefault("STATIC_MANIFEST", "False")
    # Django's test client (the samples) and the real server (127.0.0.1) talk to the views.
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
    os.environ["SECURE_SSL_REDIRECT"] = "False"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # The limits are still checked on every request (their Redis round trips are measured);
    # they are only set high enough that the benchmark's own load is not refused.
    os.environ["API_RATE_PER_TOKEN"] = os.environ["API_RATE_PER_IP"] = "100000000/min"  # noqa: S105
    # Likewise a tenant's queued runs (counted on every POST): the one-tenant phases post more
    # than the default 100 before the worker has started them.
    os.environ.setdefault("RUN_MAX_QUEUED_PER_TENANT", "1000000")
    configure()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_sandbox(workdir: Path) -> tuple[subprocess.Popen, str]:
    from django.conf import settings

    process, url = _setup.start_sandbox(_setup.child_env(), workdir / "sandbox.log")
    os.environ["PROVIDER_BASE_URLS"] = f"sandbox={url}"
    settings.PROVIDER_BASE_URLS = {**settings.PROVIDER_BASE_URLS, "sandbox": url}
    return process, url


def world(tenants: int = 1) -> list[tuple[object, str, object]]:
    """`tenants` tenants, each with a developer token and the 3-step workflow: (tenant, token,
    workflow) each."""
    from runs.services import workflow_create
    from swrly.audit.writer import Actor
    from tenants.authority import Principal
    from tenants.models import Role
    from tenants.services import api_token_create, tenant_create

    actor = Actor.system("bench")
    made = []
    for number in range(tenants):
        slug = f"bench-{os.getpid()}-{time.monotonic_ns()}-{number}"
        tenant, _, _ = tenant_create(
            slug=slug[:50],
            name=f"Bench {number}",
            owner_email=f"b{number}@bench.example",
            actor=actor,
        )
        _, token = api_token_create(
            tenant=tenant, name="bench", role=Role.DEVELOPER, by=Principal.console("bench")
        )
        workflow = workflow_create(tenant=tenant, name="three", steps=STEPS, actor=actor)
        made.append((tenant, token, workflow))
    return made


def body(workflow) -> dict:
    return {
        "workflow": str(workflow.pk),
        "input": {"topic": "BYOK"},
        "provider_keys": {"sandbox": KEY},
    }


def wait_all(ids: list[str], timeout: float = 600) -> None:
    from django.db import connection

    from runs.models import FINISHED, Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Run.objects.filter(pk__in=ids, status__in=FINISHED).count() == len(ids):
            connection.close()  # a long poll must not hold its snapshot/connection between rounds
            return
        time.sleep(0.02)
    raise SystemExit("runs did not finish in time")


def queue_in_process(token: str, workflow, runs: int) -> list[str]:
    """Queued runs with their keys deposited, made through the real view; no worker takes them."""
    from django.test import Client

    client = Client(headers={"Authorization": f"Bearer {token}"})
    ids = []
    for _ in range(runs):
        response = client.post("/api/v1/runs/", body(workflow), "application/json")
        if response.status_code != 202:
            raise SystemExit(f"POST /api/v1/runs/ answered {response.status_code}")
        ids.append(response.json()["id"])
    return ids


def bench_counts(token: str, workflow, sample: int) -> dict:
    """Statements and commits per POST and per execution, averaged over `sample` of each."""
    from django.test import Client

    from runs.executor import run_execute

    client = Client(headers={"Authorization": f"Bearer {token}"})
    queue_in_process(token, workflow, 2)  # warm-up: first-request caches, connections
    ids = []
    with _setup.statement_counter() as post:
        for _ in range(sample):
            response = client.post("/api/v1/runs/", body(workflow), "application/json")
            ids.append(response.json()["id"])
    with _setup.statement_counter() as execution:
        for run_id in ids:
            run_execute(run_id=run_id, worker="bench")
    result = {
        "post_statements": post["statements"] / sample,
        "post_commits": post["commits"] / sample,
        "execution_statements": execution["statements"] / sample,
        "execution_commits": execution["commits"] / sample,
    }
    print(f"in process, {sample} POSTs and {sample} executions of {len(STEPS)} steps:")
    print(
        f"  per POST        {result['post_statements']:5.1f} SQL statements, "
        f"{result['post_commits']:4.1f} commits"
    )
    print(
        f"  per execution   {result['execution_statements']:5.1f} SQL statements, "
        f"{result['execution_commits']:4.1f} commits"
    )
    return result


def bench_executor(token: str, workflow, runs: int, sandbox_url: str) -> None:
    import httpx

    from runs.executor import run_execute
    from swrly.providers import PROVIDERS

    ids = queue_in_process(token, workflow, runs)
    started = time.perf_counter()
    for run_id in ids:
        run_execute(run_id=run_id, worker="bench")
    executor = (time.perf_counter() - started) / (runs * len(STEPS))

    url = sandbox_url + PROVIDERS["sandbox"].wire.path
    headers = PROVIDERS["sandbox"].wire.auth_headers(KEY)
    prompt = {
        "model": "sandbox-1",
        "messages": [{"role": "user", "content": "Outline BYOK"}],
        "max_tokens": 1024,
    }
    with httpx.Client() as http:
        http.post(url, json=prompt, headers=headers)  # warm the connection
        started = time.perf_counter()
        for _ in range(runs * len(STEPS)):
            http.post(url, json=prompt, headers=headers).raise_for_status()
        direct = (time.perf_counter() - started) / (runs * len(STEPS))
    print(f"executor per step, {runs} runs x {len(STEPS)} steps, one thread:")
    print(f"  run_execute()   {executor * 1e3:7.2f} ms per step")
    print(f"  direct httpx    {direct * 1e3:7.2f} ms per call")
    print(f"  overhead        {(executor - direct) * 1e3:7.2f} ms per step")


class Stack:
    """gunicorn + a Celery run worker over this process's database, Valkey and sandbox."""

    def __init__(self, workdir: Path, concurrency: int) -> None:
        from django.conf import settings

        url = os.environ["DATABASE_URL"]
        self.postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

        def named(name: str) -> str:  # application_name tells the web's waits from the worker's
            if not self.postgres:
                return url
            return url + ("&" if "?" in url else "?") + f"application_name={name}"

        self.web, self.base_url = _setup.start_web(
            _setup.child_env(DATABASE_URL=named("bench-web")), log=workdir / "web.log"
        )
        try:
            self.worker = _setup.start_worker(
                _setup.child_env(DATABASE_URL=named("bench-worker")),
                concurrency=concurrency,
                log=workdir / "worker.log",
            )
        except BaseException:
            _setup.end([self.web])
            raise
        try:
            _setup.wait_worker_ready(os.environ["REDIS_URL"])
        except BaseException:  # a failed start must not leave the servers behind
            self.stop()
            raise

    def stop(self) -> None:
        _setup.end([self.web, self.worker])


def post_all(base_url: str, jobs: list[tuple[str, object]], clients: int) -> tuple[list, list]:
    """POST every (token, workflow) job from `clients` threads, one keep-alive httpx client
    each; returns (run ids, POST latencies in seconds)."""
    import httpx

    ids: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    pending = list(jobs)
    failures: list[str] = []

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            while True:
                with lock:
                    if not pending or failures:
                        return
                    token, workflow = pending.pop()
                started = time.perf_counter()
                response = http.post(
                    "/api/v1/runs/",
                    json=body(workflow),
                    headers={"Authorization": f"Bearer {token}"},
                )
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code != 202:
                        failures.append(f"POST /api/v1/runs/ answered {response.status_code}")
                        return
                    ids.append(response.json()["id"])
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(failures[0])
    return ids, latencies


def sample_lock_waits(stop_event: threading.Event, into: dict, interval: float = 0.005) -> None:
    """Sample PostgreSQL's pg_stat_activity every `interval` s: each sample adds `interval` s of
    lock wait for every web (application_name bench-web) backend waiting on a heavyweight lock
    (wait_event_type 'Lock': a row lock such as the audit chain head's shows as 'transactionid'
    or 'tuple'). Summed over the phase and divided by the POSTs, it estimates the time a POST
    spends waiting for locks, with a resolution of the interval; the waiting statements are
    counted too, to show which lock it is."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"],
        dbname=db["NAME"],
        password=db["PASSWORD"] or None,
        autocommit=True,
    ) as connection:
        while not stop_event.is_set():
            rows = connection.execute(
                "SELECT application_name, left(query, 60) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchall()
            for application, query in rows:
                into[application] = into.get(application, 0.0) + interval
                into.setdefault("queries", {}).setdefault(query, 0)
                into["queries"][query] += 1
            into["samples"] = into.get("samples", 0) + 1
            time.sleep(interval)


def bench_end_to_end(stack: Stack, jobs: list, clients: int, label: str) -> dict:
    """POST every job through the real server and wait for every run's end; runs/s, CPU."""
    web_cpu, worker_cpu = _setup.tree_cpu(stack.web), _setup.tree_cpu(stack.worker)
    waits: dict = {}
    stop_event = threading.Event()
    sampler = None
    if stack.postgres:
        sampler = threading.Thread(target=sample_lock_waits, args=(stop_event, waits))
        sampler.start()
    started = time.perf_counter()
    try:
        ids, latencies = post_all(stack.base_url, jobs, clients)
        submitted = time.perf_counter() - started
        wait_all(ids)
        elapsed = time.perf_counter() - started
    finally:
        stop_event.set()
        if sampler is not None:
            sampler.join()
    from runs.models import Run, RunStatus

    runs = len(ids)
    ok = Run.objects.filter(pk__in=ids, status=RunStatus.SUCCEEDED).count()
    result = {
        "label": label,
        "runs": runs,
        "clients": clients,
        "runs_per_s": runs / elapsed,
        "posts_per_s": runs / submitted,
        "elapsed": elapsed,
        "submitted": submitted,
        "post_p50_ms": percentile(latencies, 0.5) * 1e3,
        "post_p95_ms": percentile(latencies, 0.95) * 1e3,
        "web_cpu_ms": (_setup.tree_cpu(stack.web) - web_cpu) * 1e3 / runs,
        "worker_cpu_ms": (_setup.tree_cpu(stack.worker) - worker_cpu) * 1e3 / runs,
        "succeeded": ok,
        "lock_wait_ms_per_post": waits.get("bench-web", 0.0) * 1e3 / runs
        if stack.postgres
        else None,
        "worker_lock_wait_ms_per_run": waits.get("bench-worker", 0.0) * 1e3 / runs
        if stack.postgres
        else None,
        "waiting_statements": sorted(waits.get("queries", {}).items(), key=lambda item: -item[1])[
            :3
        ],
    }
    print(f"end to end, {label}: {runs} runs of {len(STEPS)} steps, {clients} HTTP clients:")
    print(
        f"  {result['runs_per_s']:8.1f} runs/s   ({elapsed:.2f} s in all; POSTs done at "
        f"{submitted:.2f} s; succeeded {ok} of {runs})"
    )
    print(f"  {result['posts_per_s']:8.1f} POSTs/s while the worker runs")
    print(
        f"  POST latency    p50 {result['post_p50_ms']:.1f} ms, p95 {result['post_p95_ms']:.1f} ms"
    )
    print(
        f"  CPU per run     web {result['web_cpu_ms']:.1f} ms, worker "
        f"{result['worker_cpu_ms']:.1f} ms (process trees, /proc)"
    )
    if stack.postgres:
        print(
            f"  lock wait       {result['lock_wait_ms_per_post']:.1f} ms per POST (web), "
            f"{result['worker_lock_wait_ms_per_run']:.1f} ms per run (worker); "
            f"{waits.get('samples', 0)} samples of pg_stat_activity"
        )
        for query, count in result["waiting_statements"]:
            print(f"    waited in {count:5d} samples: {query}")
    return result


def phase_end_to_end(workdir: Path, args, made: list) -> list[dict]:
    """Phase 3 (and 4 unless `only_e2e`): one stack, started once."""
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # nothing queued by earlier phases
    stack = Stack(workdir, args.concurrency)
    results = []
    try:
        _, token, workflow = made[0]
        warm = [(token, workflow)] * 4
        post_all(stack.base_url, warm, 2)  # gunicorn workers' first requests, not measured
        results.append(
            bench_end_to_end(stack, [(token, workflow)] * args.runs, args.clients, "main")
        )
        if not args.only_e2e and args.tenant_runs:
            one = [(token, workflow)] * args.tenant_runs
            many = [(t, w) for _, t, w in made] * (args.tenant_runs // len(made))
            for label, jobs in (("1 tenant", one), (f"{len(made)} tenants", many)):
                results.append(bench_end_to_end(stack, jobs, TENANTS, label))
            single, spread = results[-2], results[-1]
            print(
                f"one tenant / {len(made)} tenants at {TENANTS} clients (target >= 0.9): "
                f"runs/s {single['runs_per_s'] / spread['runs_per_s']:.2f}, "
                f"POSTs/s {single['posts_per_s'] / spread['posts_per_s']:.2f}"
            )
    finally:
        stack.stop()
    return results


def imported_from() -> str:
    import runs.executor

    return str(Path(runs.executor.__file__).resolve())


def child(args) -> None:
    """--child: the end-to-end phase only, its result as one JSON line at the end."""
    with tempfile.TemporaryDirectory(prefix="swrly-bench-") as workdir:
        prepare(Path(workdir))
        print(f"imported runs.executor from {imported_from()}")
        sandbox, _ = start_sandbox(Path(workdir))
        try:
            made = world(1)
            result = phase_end_to_end(Path(workdir), args, made)[0]
        finally:
            _setup.end([sandbox])
            stop()
    result["imported"] = imported_from()
    print("RESULT " + json.dumps(result))


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database `url` names if it does not exist."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def baseline(args) -> None:
    """This checkout and DIR, alternately, in subprocesses: runs/s and the ratio."""
    base = Path(args.baseline).resolve()
    if not (base / "runs" / "executor.py").exists():
        raise SystemExit(f"{base} is not a checkout of the project")
    here = Path(__file__).resolve()
    sides = {"this checkout": _setup.ROOT, "baseline": base}
    databases = {}
    url = os.environ.get("BENCH_DATABASE_URL")
    for name in sides:
        if url:
            databases[name] = url if name == "this checkout" else url + "_baseline"
            ensure_database(databases[name])
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for round_number in range(args.rounds):
        for name, root in sides.items():
            env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTHONPATH")}
            env.update(SWRLY_BENCH_ROOT=str(root), PYTHONPATH=str(root))
            if name in databases:
                env["BENCH_DATABASE_URL"] = databases[name]
            command = [
                sys.executable,
                str(here),
                "--child",
                f"--runs={args.runs}",
                f"--clients={args.clients}",
                f"--concurrency={args.concurrency}",
            ]
            completed = subprocess.run(  # noqa: S603
                command, env=env, cwd=root, text=True, capture_output=True, check=False
            )
            lines = completed.stdout.splitlines()
            if completed.returncode or not lines or not lines[-1].startswith("RESULT "):
                print(completed.stdout[-3000:], completed.stderr[-3000:])
                raise SystemExit(f"the {name} run failed ({completed.returncode})")
            result = json.loads(lines[-1][len("RESULT ") :])
            results[name].append(result)
            print(
                f"round {round_number + 1}, {name}: {result['runs_per_s']:.1f} runs/s "
                f"(web {result['web_cpu_ms']:.1f} + worker {result['worker_cpu_ms']:.1f} "
                f"CPU ms per run; code from {Path(result['imported']).parent.parent})"
            )
    for how, pick in (("best", max), ("median", statistics.median)):
        rate = {name: pick([r["runs_per_s"] for r in rs]) for name, rs in results.items()}
        print(
            f"{how} runs/s: this checkout {rate['this checkout']:.1f}, baseline "
            f"{rate['baseline']:.1f}; ratio {rate['this checkout'] / rate['baseline']:.2f} "
            "(target >= 4)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=120, help="runs end to end")
    parser.add_argument("--clients", type=int, default=4, help="HTTP clients end to end")
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads")
    parser.add_argument("--sample", type=int, default=20, help="POSTs/executions counted")
    parser.add_argument("--steps-runs", type=int, default=50, help="runs for the per-step cost")
    parser.add_argument("--tenant-runs", type=int, default=96, help="runs per tenancy phase")
    parser.add_argument("--baseline", metavar="DIR", help="compare end to end with checkout DIR")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (--baseline)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.only_e2e = args.child
    if args.child:
        child(args)
        return
    if args.baseline:
        baseline(args)
        return
    with tempfile.TemporaryDirectory(prefix="swrly-bench-") as workdir:
        prepare(Path(workdir))
        print(f"imported runs.executor from {imported_from()}")
        sandbox, url = start_sandbox(Path(workdir))
        try:
            made = world(TENANTS)
            _, token, workflow = made[0]

            _setup.unread_broker()  # the in-process POSTs' tasks: where no worker reads
            bench_counts(token, workflow, args.sample)
            bench_executor(token, workflow, args.steps_runs, url)
            phase_end_to_end(Path(workdir), args, made)
        finally:
            _setup.end([sandbox])
            stop()


if __name__ == "__main__":
    main()
