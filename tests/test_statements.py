"""Statement counts on the hot paths (issue 13): they can be asserted, timings cannot."""

from datetime import timedelta
from unittest import mock

import time_machine
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.services import workflow_create
from swrly.audit.writer import Actor
from swrly.custody.models import ProviderKey
from tenants.models import Role


def _sql(context, table):
    return [q["sql"] for q in context.captured_queries if table in q["sql"]]


def test_a_token_records_its_last_use_at_most_once_a_minute(acme):
    api = acme.api(Role.AUDITOR)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        with CaptureQueriesContext(connection) as first:
            assert api.get("/api/v1/me/").status_code == 200
        with CaptureQueriesContext(connection) as again:
            assert api.get("/api/v1/me/").status_code == 200
    with (
        time_machine.travel(start + timedelta(seconds=61), tick=False),
        CaptureQueriesContext(connection) as later,
    ):
        assert api.get("/api/v1/me/").status_code == 200
    updates = [sql for sql in _sql(first, "tenants_apitoken") if sql.startswith("UPDATE")]
    assert len(updates) == 1
    assert not [sql for sql in _sql(again, "tenants_apitoken") if sql.startswith("UPDATE")]
    assert len([sql for sql in _sql(later, "tenants_apitoken") if sql.startswith("UPDATE")]) == 1


def test_a_run_counts_its_key_in_one_statement(acme, key_store, settings):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    workflow = workflow_create(
        tenant=acme.tenant,
        name="one",
        steps=[{"name": "a", "provider": "sandbox", "model": "sandbox-1", "prompt": "Hi"}],
        actor=Actor.system("tests"),
    )
    api = acme.api(Role.DEVELOPER)
    body = {
        "workflow": str(workflow.pk),
        "provider_keys": {"sandbox": "sk-sandbox-count-0123456789"},
    }
    for expected_uses in (1, 2):
        with CaptureQueriesContext(connection) as post:
            assert api.post("/api/v1/runs/", body, "application/json").status_code == 202
        assert len(_sql(post, "tenants_providerkey")) == 1  # INSERT … ON CONFLICT DO UPDATE
        assert ProviderKey.objects.get(tenant=acme.tenant).use_count == expected_uses


class _Ledger:
    """Every statement of the default connection, whether it ran inside a transaction, and the
    commits: explicit ones (the end of an atomic block) and writes outside any transaction
    (autocommit, each its own commit)."""

    def __init__(self) -> None:
        self.statements: list[tuple[bool, str]] = []
        self.explicit_commits = 0

    def __call__(self, execute, sql, params, many, context):
        self.statements.append((connection.in_atomic_block, sql))
        return execute(sql, params, many, context)

    @property
    def commits(self) -> int:
        autocommitted = [
            sql
            for in_transaction, sql in self.statements
            if not in_transaction and sql.lstrip().split()[0].upper() in _WRITES
        ]
        return self.explicit_commits + len(autocommitted)


_WRITES = {"INSERT", "UPDATE", "DELETE"}


def _table(select: str) -> str:
    """The table a SELECT reads (its main FROM, not a subquery's in the select list)."""
    depth = 0
    for i, char in enumerate(select):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and select.startswith(" FROM ", i):
            return select[i + 6 :].split()[0]
    raise AssertionError(select)


def test_a_run_post_costs_two_statements_outside_run_create_and_one_commit(
    acme, key_store, settings, transactional_db
):
    """POST /api/v1/runs/ of a 1-provider workflow with an API token (issue 13: 19 statements
    and 2 commits before). Outside run_create only the token (with its tenant, in one SELECT)
    and the workflow are read: no last_used_at write within the minute, no SELECT to build the
    response, no salt lookup once the tenant's salt is known, no second commit."""
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    workflow = acme.workflow()
    api = acme.api(Role.DEVELOPER)
    body = {"workflow": str(workflow.pk), "provider_keys": {"sandbox": "sk-sandbox-count-0123"}}
    assert api.post("/api/v1/runs/", body, "application/json").status_code == 202  # warm

    import runs.services as run_views

    ledger = _Ledger()
    spans: list[tuple[int, int]] = []
    real_run_create = run_views.run_create

    def counted_run_create(**kwargs):
        start = len(ledger.statements)
        try:
            return real_run_create(**kwargs)
        finally:
            spans.append((start, len(ledger.statements)))

    wrapper = type(connections["default"])
    real_commit = wrapper._commit

    def commit(self):
        ledger.explicit_commits += 1
        return real_commit(self)

    with (
        mock.patch.object(run_views, "run_create", counted_run_create),
        mock.patch.object(wrapper, "_commit", commit),
        connection.execute_wrapper(ledger),
    ):
        response = api.post("/api/v1/runs/", body, "application/json")
    assert response.status_code == 202
    assert response.json()["steps"][0]["name"] == "greet"  # built from the objects in hand
    [(start, end)] = spans
    outside = ledger.statements[:start] + ledger.statements[end:]
    inside = ledger.statements[start:end]
    assert [_table(sql) for _, sql in outside] == [
        '"tenants_apitoken"',
        '"runs_workflow"',
    ], outside
    assert "custody_fingerprintsalt" not in " ".join(sql for _, sql in inside)
    assert ledger.commits == 1
    # run_create's own statements (13 before issue 13's rewrite): the blocklist checked before
    # the deposit, the run and its step inserted, the key counted, and its events appended
    # under the chain head (advance, the blocklist again under the lock, insert, hash and MAC).
    # Issue 14 §3 adds two: the tenant's queued runs counted before anything is deposited (a
    # full queue refused without touching the key store) and again under the chain head (the
    # race-safe count). SQLite adds its BEGIN IMMEDIATE.
    counted = [sql for _, sql in inside if not sql.startswith("BEGIN")]
    assert len(counted) <= 10, [sql[:80] for sql in counted]
    assert len([sql for sql in counted if "COUNT(" in sql and '"runs_run"' in sql]) == 2
