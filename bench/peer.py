"""Swrly's cost per model call against LiteLLM's proxy, in front of the same sandbox, in one run.

    .venv/bin/python bench/peer.py [--rounds 3] [--calls 24] [--concurrency 1 8]
    BENCH_DATABASE_URL=postgres://…/scratch .venv/bin/python bench/peer.py

LiteLLM is never a project dependency: it is installed into its own virtualenv
(~/.cache/swrly-bench/litellm-venv, reused when present; --litellm-venv, --litellm-version) and
runs as its own process. The sandbox provider runs in its own process too; LiteLLM routes the
model `sandbox-1` to the sandbox's OpenAI-compatible endpoint with the bench's key in its config
and a master key the clients present (it refuses to start without one), no database: the
proxy's lightest set-up.

Per call, the overhead over a direct httpx call to the sandbox (p50 and p95 of each, the
direct call's percentile subtracted) at each concurrency, from rounds that alternate:

  direct   httpx POST to the sandbox (one keep-alive client per thread)
  litellm  httpx POST to LiteLLM's proxy (same body, one keep-alive client per thread)
  (b)      Swrly, one step of a 3-step run: run_execute() time ÷ 3, in this process
  (c)      Swrly, a 1-step run: run_execute() only, in this process
  (d)      Swrly, a 1-step run: POST /api/v1/runs/ to gunicorn until the run has finished
           (a real Celery worker executes it; the end is seen by polling the run's row every
           2 ms, so (d) includes up to 2 ms of polling delay)

The runs for (b) and (c) are queued beforehand through the real view (not timed) on a broker
database no worker reads, then executed by `concurrency` threads here.
"""

import argparse
import importlib.util
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _setup
from _setup import percentile

LITELLM_VERSION = "1.108.7"  # the version issue 13 measured
DEFAULT_VENV = Path.home() / ".cache" / "swrly-bench" / "litellm-venv"
MODEL = "sandbox-1"
ONE_STEP = [
    {"name": "only", "provider": "sandbox", "model": MODEL, "prompt": "Outline {{ input.topic }}"}
]
POLL = 0.002
MASTER_KEY = "sk-" + secrets.token_hex(32)

# bench/runs.py's helpers (prepare, world, Stack...), loaded under another name: `runs` is the
# project's app package.
_spec = importlib.util.spec_from_file_location("bench_runs", Path(__file__).with_name("runs.py"))
if _spec is None or _spec.loader is None:
    raise ImportError("bench/runs.py not found beside bench/peer.py")
bench_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_runs)


def litellm_python(venv: Path, version: str) -> tuple[Path, str]:
    """The throwaway venv's python with litellm[proxy] installed; (python, installed version)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False)  # noqa: S603
        if found.returncode == 0 and found.stdout.strip() == version:
            return python, version
    print(f"installing litellm[proxy]=={version} into {venv} (not a project dependency)...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={version}"], check=True
    )
    found = subprocess.run(probe, capture_output=True, text=True, check=True)  # noqa: S603
    return python, found.stdout.strip()


def start_litellm(python: Path, sandbox_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {sandbox_url}/v1\n"
        "      api_key: os.environ/BENCH_SANDBOX_KEY\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n",
        encoding="utf-8",
    )
    port = _setup.free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "BENCH_SANDBOX_KEY": bench_runs.KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        # It refuses to start without one; with it (and no database) each request's key is
        # checked against the master key, as a gateway in front of customers would.
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    command = [
        str(python.parent / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    log = open(workdir / "litellm.log", "ab")  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    _setup.wait_for_port(port, process, "LiteLLM's proxy", timeout=180)
    return process, f"http://127.0.0.1:{port}"


def in_threads(concurrency: int, units: int, work: Callable[[int], float]) -> list[float]:
    """Run `work(i)` for i in range(units) from `concurrency` threads; the latencies (s)."""
    from django.db import connection

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(units))

    def loop() -> None:
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                latency = work(index)
                with lock:
                    latencies.append(latency)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return latencies


def http_calls(url: str, headers: dict[str, str], concurrency: int, units: int) -> list[float]:
    import httpx

    local = threading.local()
    prompt = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Outline BYOK"}],
        "max_tokens": 1024,
    }

    def call(_: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
            local.client.post(url, json=prompt, headers=headers)  # warm the connection
        started = time.perf_counter()
        local.client.post(url, json=prompt, headers=headers).raise_for_status()
        return time.perf_counter() - started

    return in_threads(concurrency, units, call)  # the clients close with their threads


def executions(token: str, workflow, steps: int, concurrency: int, units: int) -> list[float]:
    from runs.executor import run_execute
    from runs.models import Run, RunStatus

    ids = bench_runs.queue_in_process(token, workflow, units)  # not timed

    def execute(index: int) -> float:
        started = time.perf_counter()
        run_execute(run_id=ids[index], worker="bench")
        return (time.perf_counter() - started) / steps

    latencies = in_threads(concurrency, units, execute)
    ok = Run.objects.filter(pk__in=ids, status=RunStatus.SUCCEEDED).count()
    if ok != units:
        ended = list(
            Run.objects.filter(pk__in=ids).values_list("status", "error_code", "error_message")[:3]
        )
        raise SystemExit(f"only {ok} of {units} runs succeeded: {ended}")
    return latencies


def posted_runs(base_url: str, token: str, workflow, concurrency: int, units: int) -> list[float]:
    import httpx

    from runs.models import FINISHED, Run, RunStatus

    local = threading.local()
    body = bench_runs.body(workflow)
    headers = {"Authorization": f"Bearer {token}"}

    def run(_: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=60)
        started = time.perf_counter()
        response = local.client.post("/api/v1/runs/", json=body, headers=headers)
        if response.status_code != 202:
            raise SystemExit(f"POST /api/v1/runs/ answered {response.status_code}")
        run_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
            if status in FINISHED:
                elapsed = time.perf_counter() - started
                if status != RunStatus.SUCCEEDED:
                    raise SystemExit(f"run {run_id} ended {status}")
                return elapsed
            time.sleep(POLL)
        raise SystemExit(f"run {run_id} did not finish in 120 s")

    return in_threads(concurrency, units, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds")
    parser.add_argument("--calls", type=int, default=24, help="calls (runs) per kind per round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--worker-concurrency", type=int, default=4, help="Celery worker threads")
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--litellm-version", default=LITELLM_VERSION)
    args = parser.parse_args()

    python, version = litellm_python(args.litellm_venv, args.litellm_version)
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="swrly-peer-") as directory:
        workdir = Path(directory)
        bench_runs.prepare(workdir)
        print(f"imported runs.executor from {bench_runs.imported_from()}")
        stack = None
        try:
            sandbox, sandbox_url = bench_runs.start_sandbox(workdir)
            processes.append(sandbox)
            proxy, proxy_url = start_litellm(python, sandbox_url, workdir)
            processes.append(proxy)
            print(f"LiteLLM proxy {version} on {proxy_url}, sandbox on {sandbox_url}")
            from runs.services import workflow_create
            from swrly.audit.writer import Actor

            tenant, token, three = bench_runs.world(1)[0]
            one = workflow_create(
                tenant=tenant, name="one", steps=ONE_STEP, actor=Actor.system("bench")
            )
            stack = bench_runs.Stack(workdir, args.worker_concurrency)
            _setup.unread_broker()  # the in-process POSTs' tasks: where no worker reads

            from swrly.providers import PROVIDERS

            wire = PROVIDERS["sandbox"].wire
            kinds: dict[str, Callable[[int, int], list[float]]] = {
                "direct": lambda c, n: http_calls(
                    sandbox_url + wire.path, wire.auth_headers(bench_runs.KEY), c, n
                ),
                "litellm": lambda c, n: http_calls(
                    proxy_url + "/v1/chat/completions",
                    {"Authorization": f"Bearer {MASTER_KEY}"},
                    c,
                    n,
                ),
                "b": lambda c, n: executions(token, three, 3, c, n),
                "c": lambda c, n: executions(token, one, 1, c, n),
                "d": lambda c, n: posted_runs(stack.base_url, token, one, c, n),
            }
            for measure in kinds.values():  # warm-up: connections, first requests
                measure(1, 2)
            samples = {(kind, c): [] for kind in kinds for c in args.concurrency}
            started = time.monotonic()
            for number in range(args.rounds):
                for c in args.concurrency:
                    for kind, measure in kinds.items():
                        samples[kind, c] += measure(c, args.calls)
                print(
                    f"round {number + 1} of {args.rounds} done ({time.monotonic() - started:.0f} s)"
                )
            report(samples, args.concurrency, version, args.calls * args.rounds)
        finally:
            if stack is not None:
                stack.stop()
            _setup.end(processes)
            _setup.stop()


def report(samples: dict, concurrencies: list[int], version: str, count: int) -> None:
    labels = {
        "b": "one step of a 3-step run (`run_execute` ÷ 3)",
        "c": "a 1-step run, `run_execute` only",
        "d": "a 1-step run, POST → finished (gunicorn + Celery)",
    }
    print()
    print(f"per call, overhead over a direct httpx call ({count} samples each; ms)")
    print(
        f"| per call | concurrency | Swrly p50 | Swrly p95 | LiteLLM proxy {version} p50 | p95 "
        "| Swrly ÷ LiteLLM p50 | p95 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in concurrencies:
        direct = {q: percentile(samples["direct", c], q) for q in (0.5, 0.95)}
        litellm = {q: percentile(samples["litellm", c], q) - direct[q] for q in (0.5, 0.95)}
        for kind, label in labels.items():
            swrly = {q: percentile(samples[kind, c], q) - direct[q] for q in (0.5, 0.95)}
            print(
                f"| {label} | {c} | +{swrly[0.5] * 1e3:.1f} | +{swrly[0.95] * 1e3:.1f} "
                f"| +{litellm[0.5] * 1e3:.1f} | +{litellm[0.95] * 1e3:.1f} "
                f"| {swrly[0.5] / litellm[0.5]:.2f} | {swrly[0.95] / litellm[0.95]:.2f} |"
            )
    for c in concurrencies:
        print(
            f"direct httpx call at concurrency {c}: p50 "
            f"{percentile(samples['direct', c], 0.5) * 1e3:.2f} ms, p95 "
            f"{percentile(samples['direct', c], 0.95) * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
