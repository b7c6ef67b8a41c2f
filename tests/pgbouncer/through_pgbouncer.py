"""The important database paths, run by test_pgbouncer.py through a real PgBouncer.

Not collected by the suite itself (not a test_*.py file): test_pgbouncer.py runs it in a pytest
of its own with DATABASE_URL pointing at PgBouncer in transaction mode. The test database was
created and migrated through it. Every test runs outside a wrapping transaction
(`transaction=True`), so each statement or atomic block is pooled on its own, as in production.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.executor import run_execute
from runs.models import Run, RunStatus
from swrly.audit import chunked
from swrly.audit.models import AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import Actor, audit_record, chain_for
from tenants.models import Role
from tests.evidence.conftest import today
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("audit_test_event"),
]
KEY = "sk-ant-api03-canary-pgbouncer-0123456789"
SYSTEM = Actor.system("tests")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 7 rows, so every export and verification below reads several chunks."""
    monkeypatch.setattr(chunked, "CHUNK_SIZE", 7)


def _events(world, n: int = 30) -> None:
    for i in range(n):
        audit_record(tenant=world.tenant, action="test.event", actor=SYSTEM, metadata={"i": i})


def test_connected_through_pgbouncer_in_transaction_mode():
    settings_dict = connection.settings_dict
    assert int(settings_dict["PORT"]) == int(os.environ["SWRLY_PGBOUNCER_PORT"])
    assert settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True
    connection.ensure_connection()
    assert connection.connection.prepare_threshold is None  # psycopg never prepares


def test_every_migration_was_applied_through_pgbouncer():
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []


@pytest.mark.usefixtures("key_store", "provider_server")
def test_a_run_created_through_the_api_executes(acme):
    api = acme.api(Role.DEVELOPER)
    steps = [{"name": "s0", "provider": "anthropic", "model": "m", "prompt": "hello"}]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {"anthropic": KEY}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    run = run_execute(run_id=response.json()["id"])
    assert run.status == RunStatus.SUCCEEDED, (run.status, run.error_code)
    assert Run.objects.get(pk=run.pk).step_runs.get().status == "succeeded"
    # The run list, its detail page and the API list, on the pooled connection.
    client = acme.client(Role.DEVELOPER)
    page = client.get(reverse("runs:run-list", args=["acme"]))
    assert page.status_code == 200
    assert str(run.pk) in page.content.decode()
    detail = client.get(reverse("runs:run-detail", args=["acme", run.pk]))
    assert detail.status_code == 200
    listed = api.get("/api/v1/runs/")
    assert listed.status_code == 200
    assert str(run.pk) in listed.content.decode()


def test_the_audit_chain_verifies_in_chunks(acme):
    _events(acme)
    with CaptureQueriesContext(connection) as queries:
        report = audit_verify_chain(chain_for(acme.tenant), full=True)
    assert report.ok, report
    assert report.checked == AuditEvent.objects.filter(tenant=acme.tenant).count()
    reads = [q["sql"] for q in queries if "LIMIT 7" in q["sql"] and "auditevent" in q["sql"]]
    assert len(reads) >= report.checked // 7  # keyset chunks, no cursor
    assert not any("DECLARE" in q["sql"].upper() for q in queries)
    call_command("verify-audit", "--tenant", "acme")  # raises when the chain is broken


@contextmanager
def another_client_in_a_transaction():
    """Another PgBouncer client inside an open transaction: it takes the server connection the
    Django connection last released, so Django's next statement runs on another one. A cursor
    held across chunks would be lost there; keyset chunks do not care."""
    url = f"postgres://postgres@127.0.0.1:{os.environ['SWRLY_PGBOUNCER_PORT']}/postgres"
    with psycopg.connect(url, prepare_threshold=None) as other:
        other.execute("SELECT 1")
        yield
        other.rollback()


def _consume(chunks) -> tuple[bytes, list[str]]:
    """The streamed body, read one piece, then the rest while another client holds a pooled
    connection; and the statements run while streaming."""
    chunks = iter(chunks)
    with CaptureQueriesContext(connection) as queries:
        body = next(chunks)
        with another_client_in_a_transaction():
            body += b"".join(chunks)
    return body, [query["sql"] for query in queries]


def _streamed_in_chunks(statements: list[str], rows: int) -> None:
    assert not any("DECLARE" in sql.upper() for sql in statements)  # no server-side cursor
    chunks = [sql for sql in statements if "auditevent" in sql and "LIMIT 7" in sql]
    assert len(chunks) >= rows // 7


@pytest.mark.parametrize("export_format", ["csv", "jsonl"])
def test_the_audit_export_streams_every_event(acme, export_format):
    _events(acme)
    url = reverse(f"tenants:audit-export-{export_format}", args=["acme"])
    response = acme.client(Role.OWNER).get(url)
    assert response.status_code == 200
    raw, statements = _consume(response.streaming_content)
    body = raw.decode()
    exported = AuditEvent.objects.get(tenant=acme.tenant, action="audit.exported")
    if export_format == "csv":
        seqs = [int(row["seq"]) for row in csv.DictReader(io.StringIO(body))]
    else:
        seqs = [json.loads(line)["seq"] for line in body.splitlines()]
    assert seqs == list(range(1, exported.seq))
    _streamed_in_chunks(statements, len(seqs))


def test_the_evidence_bundle_holds_every_event(acme):
    _events(acme)
    response = acme.api(Role.AUDITOR).get(
        reverse("api:evidence-list"), {"from": today(), "to": today()}
    )
    assert response.status_code == 200, response.content
    data, statements = _consume(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        names = bundle.namelist()
        events = [json.loads(line) for line in bundle.read("events.jsonl").splitlines()]
        manifest = json.loads(bundle.read("manifest.json"))
    assert "checkpoints.jsonl" in names
    exported = AuditEvent.objects.get(tenant=acme.tenant, action="evidence.exported")
    assert [event["seq"] for event in events] == list(range(1, exported.seq))
    assert manifest["chain"] == chain_for(acme.tenant)
    _streamed_in_chunks(statements, len(events))


def test_the_key_history_page(acme):
    page = acme.client(Role.OWNER).get(reverse("custody:key-history", args=["acme"]))
    assert page.status_code == 200
