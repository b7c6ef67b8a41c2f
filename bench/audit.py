"""Benchmark of audit chain verification: the whole chain (before) against the newest checkpoint.

    .venv/bin/python bench/audit.py [--events 10000] [--since 100] [--rounds 5]
    BENCH_DATABASE_URL=postgres://…/scratch .venv/bin/python bench/audit.py

It fills one tenant's chain with `--events` keyed (v2) events, made in bulk with their real
HMACs and a real chain head, then times, through the real views with an auditor token:

1. `GET /api/v1/audit-events/verify/` and the audit page with no checkpoint: every event is
   recomputed, which is what both did before checkpoints (and what `verify-audit --full` does);
2. the same after `audit-checkpoint` signed the head and `--since` more events were appended:
   the checkpoint signatures, then only the events after the newest checkpoint.

A fresh SQLite database in a temporary directory (or BENCH_DATABASE_URL: an empty scratch
database it migrates and fills), and its own embedded Valkey unless REDIS_URL is set.
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from _setup import configure, stop


def prepare(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}"
    )
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "False"
    os.environ.setdefault("STATIC_MANIFEST", "False")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("API_RATE_PER_TOKEN", "")
    os.environ.setdefault("API_RATE_PER_IP", "")
    configure()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def fill(tenant, events: int) -> None:
    """Append `events` keyed events in bulk, chained exactly as audit_record chains them."""
    from django.db import connection
    from django.utils import timezone

    from swrly.audit.events import check_event
    from swrly.audit.keys import chain_keyring
    from swrly.audit.models import AuditChainHead, AuditEvent
    from swrly.audit.writer import chain_for, event_hash, head_mac

    keyring = chain_keyring()
    chain = chain_for(tenant)
    head = AuditChainHead.objects.get(chain=chain)
    seq, prev = head.seq, head.last_hash
    start = timezone.now()
    batch = []
    for i in range(events):
        seq += 1
        fields = {
            "chain": chain,
            "seq": seq,
            "created_at": start + timedelta(microseconds=i),
            "actor": "system:bench",
            "actor_user_id": None,
            "action": "key.consumed",
            "target": f"run:{i}",
            "metadata": {"provider": "anthropic", "worker": f"bench-{i}"},
            "ip": None,
            "user_agent": "",
            "prev_hash": prev,
            "hash_version": 2,
            "key_id": keyring.current_id,
        }
        check_event(fields["action"], fields["metadata"])  # the shape the writer would accept
        prev = event_hash(**fields, chain_key=keyring.current)
        batch.append(AuditEvent(tenant=tenant, hash=prev, **fields))
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    AuditChainHead.objects.filter(chain=chain).update(
        seq=seq, last_hash=prev, mac=head_mac(keyring.current, chain, seq, prev)
    )
    if connection.vendor == "postgresql":
        # fresh statistics after a bulk load, as autovacuum would make them: without them the
        # planner may sort a million rows for the page's newest-first listing
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tenants_auditevent")


def _require(condition: bool, detail: object) -> None:
    if not condition:
        raise SystemExit(f"unexpected: {detail}")


def timed(call, rounds: int) -> tuple[float, float]:
    """(best, median) milliseconds of `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--since", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        prepare(Path(workdir))
        try:
            run(args)
        finally:
            stop()


def run(args: argparse.Namespace) -> None:
    from django.db import connection
    from django.test import Client

    from swrly.audit.checkpoints import audit_checkpoint_chain
    from swrly.audit.models import AuditEvent
    from swrly.audit.writer import Actor, chain_for
    from tenants.authority import Principal
    from tenants.models import Role
    from tenants.services import api_token_create, tenant_create

    actor = Actor.system("bench")
    tenant, owner, _ = tenant_create(
        slug="bench", name="Bench", owner_email="b@bench.example", actor=actor
    )
    _, token = api_token_create(
        tenant=tenant, name="bench", role=Role.AUDITOR, by=Principal.console("bench")
    )
    started = time.perf_counter()
    fill(tenant, args.events)
    filled = time.perf_counter() - started
    api = Client(headers={"Authorization": f"Bearer {token}"})
    page = Client()
    page.force_login(owner)
    total = AuditEvent.objects.filter(tenant=tenant).count()

    def verify() -> dict:
        response = api.get("/api/v1/audit-events/verify/")
        _require(response.status_code == 200, response.content)
        return response.json()

    def audit_page() -> None:
        _require(page.get("/t/bench/audit/").status_code == 200, "audit page")

    print(f"{connection.vendor}: {total} events in the chain (filled in {filled:.1f} s)")
    before = verify()
    _require(before["ok"] and before["checkpoint_seq"] is None, before)
    rows = [("endpoint, whole chain (before)", timed(verify, args.rounds), before["checked"])]
    rows.append(("page, whole chain (before)", timed(audit_page, args.rounds), before["checked"]))
    audit_checkpoint_chain(chain_for(tenant))
    fill(tenant, args.since)
    after = verify()
    _require(after["ok"] and after["checkpoint_seq"] is not None, after)
    rows.append(("endpoint, from checkpoint", timed(verify, args.rounds), after["checked"]))
    rows.append(("page, from checkpoint", timed(audit_page, args.rounds), after["checked"]))
    for label, (best, median), checked in rows:
        print(f"{label:34} {best:9.1f} ms best {median:9.1f} ms median  ({checked} recomputed)")
    print(f"ratio endpoint before/after (median): {rows[0][1][1] / rows[2][1][1]:.0f}x")


if __name__ == "__main__":
    main()
