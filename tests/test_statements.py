"""Statement counts on the hot paths (issue 13): they can be asserted, timings cannot."""

from datetime import timedelta

import time_machine
from django.db import connection
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
