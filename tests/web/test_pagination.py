"""The one keyset pagination (swrly/web/pagination.py): cursors, both directions over the API,
and a deep page that PostgreSQL reads from its index bound rather than filters up to.
"""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.models import Run
from runs.selectors import PAGE_SIZE, RUN_KEYSET, run_page
from swrly.audit.models import AuditEvent
from swrly.web.pagination import Cursor, Keyset
from tenants.access import scoped
from tenants.models import Role
from tenants.selectors import AUDIT_KEYSET


def _runs(world, count: int) -> list[Run]:
    workflow = world.workflow()
    return Run.objects.bulk_create(
        Run(
            tenant=world.tenant,
            workflow=workflow,
            workflow_name=workflow.name,
            triggered_by="tests",
        )
        for _ in range(count)
    )


def test_a_cursor_round_trips_and_a_foreign_or_malformed_one_is_refused():
    at = datetime(2025, 3, 3, 9, 0, 0, 123456, tzinfo=UTC)
    pk = uuid.uuid4()
    for cursor in (Cursor((at, pk)), Cursor((at, pk), reverse=True)):
        assert RUN_KEYSET.decode(RUN_KEYSET.encode(cursor), Run) == cursor
    assert AUDIT_KEYSET.decode(AUDIT_KEYSET.encode(Cursor((42,))), AuditEvent) == Cursor((42,))
    encoded = RUN_KEYSET.encode(Cursor((at, pk)))
    assert AUDIT_KEYSET.decode(encoded, AuditEvent) is None  # another list's cursor
    naive = base64.urlsafe_b64encode(f"o|2025-03-03T09:00:00|{pk}".encode()).decode()
    for text in ("", "AAAA", "not-a-cursor", "x" * 300, naive, encoded[:-4]):
        assert RUN_KEYSET.decode(text, Run) is None, text


def test_a_keyset_is_one_or_two_fields():
    with pytest.raises(ValueError, match="one or two"):
        Keyset("a", "b", "c")


@pytest.mark.django_db
def test_the_api_pages_forward_and_back_over_ties(acme):
    runs = _runs(acme, 7)
    Run.objects.filter(pk__in=[r.pk for r in runs[:4]]).update(
        created_at=datetime(2025, 3, 3, tzinfo=UTC)
    )
    api = acme.api(Role.OWNER)
    expected = [
        str(pk)
        for pk in Run.objects.filter(tenant=acme.tenant)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    ]
    pages, url = [], "/api/v1/runs/?page_size=3"
    while url:
        body = api.get(url).json()
        pages.append(([run["id"] for run in body["results"]], body["previous"]))
        url = body["next"]
    assert [ids for ids, _ in pages] == [expected[:3], expected[3:6], expected[6:]]
    assert pages[0][1] is None
    back = api.get(pages[2][1]).json()
    assert [run["id"] for run in back["results"]] == expected[3:6]
    first = api.get(back["previous"]).json()
    assert [run["id"] for run in first["results"]] == expected[:3]
    assert first["previous"] is None


def _index_names(plan: dict) -> set[str]:
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    return names.union(*(_index_names(child) for child in plan.get("Plans", [])))


def _rows_removed_by_filter(plan: dict) -> int:
    removed = plan.get("Rows Removed by Filter", 0) * plan.get("Actual Loops", 1)
    return removed + sum(_rows_removed_by_filter(child) for child in plan.get("Plans", []))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
@pytest.mark.django_db
def test_a_deep_runs_page_is_read_from_the_index_bound_not_filtered_to(acme):
    # Not ANALYZEd: the planner then walks the (tenant, -created_at, -id) index, as it does for
    # a tenant with many runs; over it, the plain OR form filters the 1,961 newer rows.
    _runs(acme, 2000)
    ordered = list(
        Run.objects.filter(tenant=acme.tenant)
        .order_by("-created_at", "-pk")
        .values_list("created_at", "pk")
    )
    deep = Cursor(ordered[1960])
    with CaptureQueriesContext(connection) as queries:
        page = run_page(tenant=acme.tenant, runs=scoped(Run, acme.tenant), cursor=deep)
    assert [run.pk for run in page.rows] == [pk for _, pk in ordered[1961:]]
    (query,) = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query["sql"])
        (raw,) = cursor.fetchone()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    assert "run_tenant_time" in _index_names(plan)
    removed = _rows_removed_by_filter(plan)
    assert removed <= PAGE_SIZE + 10, json.dumps(plan, indent=1)
