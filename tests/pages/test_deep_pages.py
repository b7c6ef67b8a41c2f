"""Lists at depth (issue 13): a deep page of the runs list, of a key's runs (the key history's
link) and of the audit log reads about a page of rows from its index, not every newer row.

PostgreSQL only (its plans are what production runs); tens of thousands of rows are copied in
with one INSERT … SELECT generate_series each, then ANALYZEd as autovacuum would, and the page's
own query is run again under EXPLAIN (ANALYZE, FORMAT JSON).
"""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Max, Q
from django.test.utils import CaptureQueriesContext

from runs.models import Run, RunStatus
from runs.selectors import PAGE_SIZE, RUN_KEYSET
from swrly.audit.models import AuditEvent
from swrly.audit.writer import chain_for
from swrly.custody.models import ProviderKey
from swrly.custody.services import provider_key_seen
from swrly.web.pagination import Cursor
from tenants.models import Role
from tenants.selectors import AUDIT_KEYSET, AUDIT_PAGE_SIZE, audit_event_page, audit_events
from tests.pages.conftest import KEY_A, KEY_B, T0, key_print

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plans"),
    pytest.mark.django_db,
]

ROWS = 20_000  # per tenant
DEPTH = 15_000  # the deep page starts after this many rows
SLACK = 10  # rows a plan may read beyond one page (+1 for "is there more") and still pass


def _copies(model, template_pk, count: int, overrides: dict[str, str]) -> None:
    """`count` copies of one row, in one statement; `overrides` are SQL expressions of the
    template row `t` and the series value `g`, per column (the others are copied)."""
    q = connection.ops.quote_name
    columns = [
        f.column for f in model._meta.concrete_fields if f.column != "id" or "id" in overrides
    ]
    values = [overrides.get(column, f"t.{q(column)}") for column in columns]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {q(model._meta.db_table)} ({', '.join(q(c) for c in columns)}) "  # noqa: S608
            f"SELECT {', '.join(values)} FROM {q(model._meta.db_table)} t, "
            f"generate_series(1, %s) g WHERE t.id = %s",
            [count, template_pk],
        )
        cursor.execute(f"ANALYZE {q(model._meta.db_table)}")


def _fill_runs(world, *, offset_ms: int) -> str:
    """ROWS runs of `world`, one a second back from T0 (another tenant's interleaved), all with
    KEY_A; returns its fingerprint."""
    print_ = key_print(KEY_A)
    workflow = world.workflow()
    template = Run.objects.create(
        tenant=world.tenant,
        workflow=workflow,
        workflow_name=workflow.name,
        status=RunStatus.SUCCEEDED,
        triggered_by="tests",
        key_fingerprints={"anthropic": {"fingerprint": print_.value, "hint": print_.hint}},
    )
    Run.objects.filter(pk=template.pk).update(created_at=T0)
    provider_key_seen(
        tenant=world.tenant, provider="anthropic", fingerprint=print_.value, hint=print_.hint
    )
    ProviderKey.objects.filter(tenant=world.tenant).update(
        first_seen_at=T0 - timedelta(seconds=ROWS + 1), last_seen_at=T0
    )
    _copies(
        Run,
        template.pk,
        ROWS - 1,
        {
            "id": "gen_random_uuid()",
            "created_at": f"t.created_at - g * interval '1 second' + interval '{offset_ms} ms'",
        },
    )
    return print_.value


def _plan_of(sql: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        (raw,) = cursor.fetchone()
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def _scans(plan: dict, table: str) -> list[dict]:
    """The plan's nodes that read `table` (outside subqueries of other tables)."""
    found = [plan] if plan.get("Relation Name") == table else []
    for child in plan.get("Plans", []):
        found += _scans(child, table)
    return found


def _rows_read(scan: dict) -> int:
    """Rows the node produced plus those it read and threw away, over all its loops."""
    per_loop = (
        scan["Actual Rows"]
        + scan.get("Rows Removed by Filter", 0)
        + scan.get("Rows Removed by Index Recheck", 0)
    )
    return per_loop * scan.get("Actual Loops", 1)


def _page_query(queries: CaptureQueriesContext, table: str, size: int) -> str:
    (sql,) = [
        q["sql"]
        for q in queries.captured_queries
        if f'FROM "{table}"' in q["sql"] and f"LIMIT {size + 1}" in q["sql"]
    ]
    return sql


def _assert_reads_about_a_page(sql: str, table: str, indexes: set[str], size: int) -> dict:
    plan = _plan_of(sql)
    scans = _scans(plan, table)
    assert len(scans) == 1, json.dumps(plan, indent=1)
    assert scans[0].get("Index Name") in indexes, json.dumps(plan, indent=1)
    read = _rows_read(scans[0])
    assert read <= size + 1 + SLACK, json.dumps(plan, indent=1)
    return {"read": read, "produced": scans[0]["Actual Rows"]}


def _deep_runs_cursor(runs, depth: int = DEPTH) -> tuple[str, list[str]]:
    """The cursor after the `depth` newest of `runs`, and the ids of the page past it."""
    ordered = list(
        runs.order_by("-created_at", "-pk").values_list("created_at", "pk")[
            depth - 1 : depth + PAGE_SIZE
        ]
    )
    return RUN_KEYSET.encode(Cursor(ordered[0])), [str(pk) for _, pk in ordered[1:]]


def _run_ids(response) -> list[str]:
    assert response.status_code == 200
    return re.findall(r'<tr data-run-id="([0-9a-f-]+)"', response.content.decode())


def test_a_deep_page_of_the_runs_list_reads_one_page_of_the_index(acme, globex):
    _fill_runs(acme, offset_ms=0)
    _fill_runs(globex, offset_ms=500)
    cursor, expected = _deep_runs_cursor(Run.objects.filter(tenant=acme.tenant))
    client = acme.client(Role.AUDITOR)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/t/acme/runs/?before={cursor}")
    assert _run_ids(response) == expected
    sql = _page_query(queries, "runs_run", PAGE_SIZE)
    _assert_reads_about_a_page(sql, "runs_run", {"run_tenant_time"}, PAGE_SIZE)
    # For contrast, the plain OR form of the same position reads every newer row of the tenant.
    at, pk = RUN_KEYSET.decode(cursor, Run).position
    plain = (
        Run.objects.filter(tenant=acme.tenant)
        .filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))
        .order_by("-created_at", "-pk")[: PAGE_SIZE + 1]
    )
    with CaptureQueriesContext(connection) as contrast:
        assert len(list(plain)) == PAGE_SIZE + 1
    scans = _scans(_plan_of(contrast.captured_queries[0]["sql"]), "runs_run")
    assert sum(_rows_read(scan) for scan in scans) > DEPTH


def test_a_deep_page_of_a_keys_runs_reads_one_page_of_the_index(acme, globex):
    # The key history links each key to the runs list filtered by its fingerprint.
    fingerprint = _fill_runs(acme, offset_ms=0)
    _fill_runs(globex, offset_ms=500)
    # two runs in three of the tenant used another key: the listed key is the rarer one
    other = key_print(KEY_B)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE runs_run SET key_fingerprints = %s::jsonb WHERE tenant_id = %s "
            "AND ('x' || substr(md5(id::text), 1, 8))::bit(32)::int %% 3 <> 0",
            [
                json.dumps({"anthropic": {"fingerprint": other.value, "hint": other.hint}}),
                acme.tenant.pk,
            ],
        )
        cursor.execute("ANALYZE runs_run")
    key_runs = Run.objects.filter(
        tenant=acme.tenant, key_fingerprints__anthropic__fingerprint=fingerprint
    )
    cursor, expected = _deep_runs_cursor(key_runs, depth=DEPTH // 3)
    client = acme.client(Role.AUDITOR)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/t/acme/runs/?fingerprint={fingerprint}&before={cursor}")
    assert _run_ids(response) == expected
    sql = _page_query(queries, "runs_run", PAGE_SIZE)
    # its own index (tenant, fingerprint, -created_at, -id), or the tenant's when the key ran
    # most of the tenant's runs: a page either way, never every run in the key's lifetime
    _assert_reads_about_a_page(sql, "runs_run", {"run_key_anthropic", "run_tenant_time"}, PAGE_SIZE)


def test_a_deep_page_of_the_audit_log_reads_one_page_of_the_index(acme, globex):
    for world in (acme, globex):
        # Written directly (not through the audit writer): the chain's hashes do not matter
        # to the list's plan, and the page reads no chain head.
        template = AuditEvent.objects.create(
            tenant=world.tenant,
            chain=chain_for(world.tenant),
            seq=AuditEvent.objects.filter(chain=chain_for(world.tenant)).aggregate(m=Max("seq"))[
                "m"
            ]
            + 1,
            created_at=T0,
            actor="system:tests",
            action="run.created",
            target="run:template",
            prev_hash="0" * 64,
            hash="0" * 64,
        )
        _copies(
            AuditEvent,
            template.pk,
            ROWS,
            {"seq": "t.seq + g", "created_at": "t.created_at + g * interval '1 ms'"},
        )
    events = audit_events(tenant=acme.tenant)
    newest = events.order_by("-seq").values_list("seq", flat=True).first()
    deep = Cursor((newest - DEPTH,))
    assert AUDIT_KEYSET.decode(AUDIT_KEYSET.encode(deep), AuditEvent) == deep
    with CaptureQueriesContext(connection) as queries:
        page = audit_event_page(events=events, cursor=deep)
    assert [event.seq for event in page.rows] == list(
        range(newest - DEPTH - 1, newest - DEPTH - 1 - AUDIT_PAGE_SIZE, -1)
    )
    sql = _page_query(queries, "tenants_auditevent", AUDIT_PAGE_SIZE)
    _assert_reads_about_a_page(
        sql, "tenants_auditevent", {"auditevent_chain_seq_unique"}, AUDIT_PAGE_SIZE
    )
