"""Benchmark of the evidence bundle: streaming memory and time, and the offline verifier's time.

    .venv/bin/python bench/evidence.py [--events 10000]
    BENCH_DATABASE_URL=postgres://…/scratch .venv/bin/python bench/evidence.py

Fills one tenant's chain with `--events` keyed events (bench/audit.py's fill: real HMACs, a real
head), signs a checkpoint, then downloads `GET /api/v1/evidence/` for today through the real
view with an auditor token, measuring the peak of Python's traced memory while the response
streams (tracemalloc: it slows the export, so the time is an upper bound), and runs
swrly/evidence/verify_evidence.py on the bundle in a subprocess. (The verifier's own memory is
measured apart, with `/usr/bin/time -f %M`: a child forked from this process inherits its peak
RSS, so getrusage cannot tell.)
"""

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from _setup import ROOT, stop
from audit import fill, prepare


def run(args: argparse.Namespace, workdir: Path) -> None:
    from django.test import Client
    from django.utils import timezone

    from swrly.audit.checkpoints import audit_checkpoint_chain
    from swrly.audit.writer import Actor, chain_for
    from tenants.authority import Principal
    from tenants.models import Role
    from tenants.services import api_token_create, tenant_create

    tenant, _, _ = tenant_create(
        slug="bench", name="Bench", owner_email="b@bench.example", actor=Actor.system("bench")
    )
    _, token = api_token_create(
        tenant=tenant, name="bench", role=Role.AUDITOR, by=Principal.console("bench")
    )
    fill(tenant, args.events)
    audit_checkpoint_chain(chain_for(tenant))
    api = Client(headers={"Authorization": f"Bearer {token}"})
    keys = workdir / "audit-keys.json"
    keys.write_bytes(Client().get("/api/v1/audit-keys/").content)
    day = timezone.now().date().isoformat()

    bundle = workdir / "bundle.zip"
    tracemalloc.start()
    started = time.perf_counter()
    response = api.get("/api/v1/evidence/", {"from": day, "to": day})
    if response.status_code != 200:
        raise SystemExit(f"unexpected: {response.status_code} {response.content[:200]!r}")
    with bundle.open("wb") as out:
        for chunk in response.streaming_content:
            out.write(chunk)
    exported = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    started = time.perf_counter()
    verdict = subprocess.run(  # noqa: S603 (our own interpreter and file)
        [
            sys.executable,
            str(ROOT / "swrly/evidence/verify_evidence.py"),
            str(bundle),
            "--public-keys",
            str(keys),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    verified = time.perf_counter() - started
    if verdict.returncode != 0:
        raise SystemExit(f"unexpected: the verifier failed:\n{verdict.stdout}")
    print(
        f"{args.events} events: bundle {bundle.stat().st_size / 1e6:.1f} MB, exported in "
        f"{exported:.1f} s (under tracemalloc), peak traced memory {peak / 1e6:.1f} MB; "
        f"verified offline in {verified:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        prepare(Path(workdir))
        try:
            run(args, Path(workdir))
        finally:
            stop()


if __name__ == "__main__":
    main()
