"""Benchmark of the run engine, against direct httpx calls to the same sandbox, in the same run.

    .venv/bin/python bench/runs.py [--runs 200] [--steps-runs 100] [--concurrency 4]

1. Runs per second through the whole path for a 3-step workflow: POST /api/v1/runs/ (real
   views, key deposit) → Celery broker → a real worker (threads) → GETDEL → 3 sandbox calls →
   done, measured from the first request until the last run has finished.
2. The executor's cost per step: `run_execute()` on queued runs (claim, GETDEL, render, call,
   record, audit) against the same number of direct httpx calls to the same sandbox on one
   reused client. Printed as time per step and as a ratio.

It uses a fresh SQLite database in a temporary directory (or BENCH_DATABASE_URL: an empty
scratch database it migrates and fills), its own embedded Valkey (unless REDIS_URL is set, whose
database it FLUSHES), and an in-process sandbox provider.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from _setup import configure, stop

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


def prepare(workdir: Path) -> None:
    # BENCH_DATABASE_URL: an empty scratch database to migrate and fill (e.g. PostgreSQL).
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}"
    )
    os.environ["DEBUG"] = "True"  # plain http to the loopback sandbox
    os.environ.setdefault("STATIC_MANIFEST", "False")
    os.environ["ALLOWED_HOSTS"] = "testserver"  # Django's test client talks to the real views
    os.environ["SECURE_SSL_REDIRECT"] = "False"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    configure()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def world():
    from django.conf import settings

    from runs.services import workflow_create
    from swrly.audit.writer import Actor
    from swrly.dev.sandbox import SandboxServer
    from tenants.authority import Principal
    from tenants.models import Role
    from tenants.services import api_token_create, tenant_create

    server = SandboxServer().start()
    settings.PROVIDER_BASE_URLS = {"sandbox": server.url}
    actor = Actor.system("bench")
    tenant, _, _ = tenant_create(
        slug="bench", name="Bench", owner_email="b@bench.example", actor=actor
    )
    _, token = api_token_create(
        tenant=tenant, name="bench", role=Role.DEVELOPER, by=Principal.console("bench")
    )
    workflow = workflow_create(tenant=tenant, name="three", steps=STEPS, actor=actor)
    return server, tenant, token, workflow


def wait_all(ids: list[str], timeout: float = 600) -> None:
    from runs.models import FINISHED, Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Run.objects.filter(pk__in=ids, status__in=FINISHED).count() == len(ids):
            return
        time.sleep(0.02)
    raise SystemExit("runs did not finish in time")


def bench_end_to_end(token: str, workflow, runs: int, concurrency: int) -> None:
    from celery.contrib.testing.worker import start_worker
    from django.test import Client

    from runs.models import Run, RunStatus
    from swrly.celery import app

    client = Client(headers={"Authorization": f"Bearer {token}"})
    body = {
        "workflow": str(workflow.pk),
        "input": {"topic": "BYOK"},
        "provider_keys": {"sandbox": KEY},
    }
    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False):
        started = time.perf_counter()
        ids = []
        for _ in range(runs):
            response = client.post("/api/v1/runs/", body, "application/json")
            if response.status_code != 202:
                raise SystemExit(f"POST /api/v1/runs/ answered {response.status_code}")
            ids.append(response.json()["id"])
        submitted = time.perf_counter() - started
        wait_all(ids)
        elapsed = time.perf_counter() - started
    ok = Run.objects.filter(pk__in=ids, status=RunStatus.SUCCEEDED).count()
    print(f"end to end, {runs} runs of 3 steps, worker threads {concurrency}:")
    print(f"  {runs / elapsed:8.1f} runs/s   ({elapsed:.2f} s in all)")
    print(f"  submitting the {runs} POSTs took {submitted:.2f} s")
    print(f"  succeeded {ok} of {runs}")


def bench_executor(tenant, workflow, token: str, runs: int) -> None:
    import httpx
    from django.test import Client

    from runs.executor import run_execute
    from swrly.providers import PROVIDERS

    client = Client(headers={"Authorization": f"Bearer {token}"})
    body = {
        "workflow": str(workflow.pk),
        "input": {"topic": "BYOK"},
        "provider_keys": {"sandbox": KEY},
    }
    ids = [
        client.post("/api/v1/runs/", body, "application/json").json()["id"] for _ in range(runs)
    ]  # queued, keys deposited; nothing consumes them (no worker)
    started = time.perf_counter()
    for run_id in ids:
        run_execute(run_id=run_id, worker="bench")
    executor = (time.perf_counter() - started) / (runs * len(STEPS))

    from django.conf import settings

    url = settings.PROVIDER_BASE_URLS["sandbox"] + PROVIDERS["sandbox"].wire.path
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
    print(f"  ratio           {direct / executor:7.2f} (direct / executor)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps-runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swrly-bench-") as workdir:
        prepare(Path(workdir))
        server, tenant, token, workflow = world()
        try:
            from swrly.keys.store import get_client

            get_client().flushdb()
            bench_end_to_end(token, workflow, args.runs, args.concurrency)
            bench_executor(tenant, workflow, token, args.steps_runs)
        finally:
            server.stop()
            stop()


if __name__ == "__main__":
    main()
