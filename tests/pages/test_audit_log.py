"""The audit log page: filters, keyset pages, the chain's status, and streamed exports."""

import csv
import io
import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record
from tenants.models import Role
from tests.pages.conftest import T0, make_run

pytestmark = pytest.mark.usefixtures("audit_test_event")

URL = "/t/acme/audit/"
CSV_URL = "/t/acme/audit/export.csv"
JSONL_URL = "/t/acme/audit/export.jsonl"


def _seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', html)]


def _get(client, query: str = "") -> str:
    response = client.get(URL + (f"?{query}" if query else ""))
    assert response.status_code == 200
    return response.content.decode()


def _expected(tenant, **filters) -> list[int]:
    events = AuditEvent.objects.filter(tenant=tenant, **filters).order_by("-seq")
    return list(events.values_list("seq", flat=True))


def _tamper(sql, params):
    """What an attacker with database access does: bypass the ORM and the trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")


@pytest.fixture
def trail(acme):
    """Runs on three days, each with its audit trail, and a few events by other actors."""
    for day in range(3):
        make_run(acme, at=T0 + timedelta(days=day), events=True)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        audit_record(
            tenant=acme.tenant,
            action="token.created",
            actor=Actor(label="user:alice@acme.example"),
            target="token:1234",
            metadata={"name": "deploy"},
        )
    return acme


def test_the_chain_status_says_verified_with_the_event_count(trail):
    html = _get(trail.client(Role.AUDITOR))
    total = AuditEvent.objects.filter(tenant=trail.tenant).count()
    assert f"Verified: events #1 to #{total} ({total} events), hash chain intact." in html
    assert "No signed checkpoint yet: every event was recomputed" in html
    assert 'data-ok="true"' in html


def test_the_chain_status_shows_broken_after_a_tamper(trail):
    victim = AuditEvent.objects.filter(tenant=trail.tenant, action="key.consumed").first()
    _tamper(
        "UPDATE tenants_auditevent SET metadata = %s WHERE id = %s",
        ['{"provider": "openai"}', victim.pk],
    )
    html = _get(trail.client(Role.AUDITOR))
    assert f"BROKEN at #{victim.seq}: content does not match its hash" in html
    assert 'role="alert" data-ok="false"' in html
    assert "Verified:" not in html


def test_filters_by_action_actor_target_and_dates(trail):
    client = trail.client(Role.AUDITOR)
    tenant = trail.tenant
    assert _seqs(_get(client, "action=key.consumed")) == _expected(tenant, action="key.consumed")
    assert _seqs(_get(client, "action=key.*")) == _expected(tenant, action__startswith="key.")
    assert len(_expected(tenant, action__startswith="key.")) == 6
    assert _seqs(_get(client, "actor=ALICE")) == _expected(tenant, actor__icontains="alice")
    run_target = AuditEvent.objects.filter(tenant=tenant, action="run.created").first().target
    assert _seqs(_get(client, f"target={run_target[4:12]}")) == _expected(tenant, target=run_target)
    day_two = _seqs(_get(client, "from=2025-03-04&to=2025-03-04"))
    assert day_two == _expected(
        tenant,
        created_at__gte=T0 + timedelta(days=1) - timedelta(hours=9),
        created_at__lt=T0 + timedelta(days=2) - timedelta(hours=9),
    )
    assert len(day_two) == 6  # five for the run, one token.created
    combined = _seqs(_get(client, "action=key.*&from=2025-03-04&to=2025-03-04"))
    assert len(combined) == 2


def test_an_invalid_action_filter_is_reported_and_ignored(trail):
    html = _get(trail.client(Role.AUDITOR), "action=<script>")
    assert "An action looks like key.deposited" in html
    assert "&lt;script&gt;" in html or "<script>" not in html.split("<main")[1]
    assert _seqs(html) == _expected(trail.tenant)


def test_keyset_pages_are_disjoint_and_the_next_cursor_is_stable(acme):
    system = Actor.system("tests")
    for i in range(120):
        audit_record(tenant=acme.tenant, action="test.event", actor=system, metadata={"i": i})
    client = acme.client(Role.AUDITOR)
    pages, query = [], "action=test.event"
    while True:
        html = _get(client, query)
        pages.append(_seqs(html))
        link = re.search(r'<a id="older" rel="next" href="\?([^"]+)"', html)
        if not link:
            break
        again = re.search(r'<a id="older" rel="next" href="\?([^"]+)"', _get(client, query))
        assert again.group(1) == link.group(1)
        query = link.group(1).replace("&amp;", "&")
        assert "action=test.event" in query
    assert [len(page) for page in pages] == [50, 50, 20]
    seen = [seq for page in pages for seq in page]
    assert seen == sorted(seen, reverse=True)
    assert len(set(seen)) == 120


def test_the_query_count_is_the_same_for_5_and_60_events(acme):
    client = acme.client(Role.AUDITOR)
    system = Actor.system("tests")

    def count(total):
        while AuditEvent.objects.filter(tenant=acme.tenant, action="test.event").count() < total:
            audit_record(tenant=acme.tenant, action="test.event", actor=system)
        client.get(URL)
        with CaptureQueriesContext(connection) as queries:
            html = _get(client, "action=test.event")
        return len(queries), len(_seqs(html))

    few, rows_few = count(5)
    many, rows_many = count(60)
    assert (rows_few, rows_many) == (5, 50)
    assert few == many, f"{few} queries for 5 events, {many} for 60"


def _download(response) -> str:
    assert response.status_code == 200
    assert response.streaming is True
    assert response["Content-Disposition"].startswith('attachment; filename="swrly-audit-acme-')
    return b"".join(response.streaming_content).decode()


def test_the_csv_export_streams_exactly_the_filtered_events_and_is_audited(trail):
    client = trail.client(Role.AUDITOR)
    expected = sorted(_expected(trail.tenant, action__startswith="key."))

    response = client.get(CSV_URL + "?action=key.*&actor=worker")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(_download(response))))

    consumed = sorted(_expected(trail.tenant, action="key.consumed"))
    assert [int(row["seq"]) for row in rows] == consumed
    assert all(row["action"] == "key.consumed" for row in rows)
    assert json.loads(rows[0]["metadata"])["worker"] == "worker-7"
    assert len(expected) > len(consumed)
    exported = AuditEvent.objects.filter(tenant=trail.tenant, action="audit.exported").get()
    assert exported.actor == f"user:{trail.users[Role.AUDITOR].username}"
    assert exported.metadata == {
        "format": "csv",
        "filters": {"action": "key.*", "actor": "worker"},
    }


def test_the_jsonl_export_is_one_valid_object_per_line_oldest_first(trail):
    client = trail.client(Role.OWNER)
    before = set(_expected(trail.tenant))
    response = client.get(JSONL_URL)
    assert response["Content-Type"].startswith("application/jsonl")
    lines = _download(response).splitlines()
    records = [json.loads(line) for line in lines]
    # every event up to the export, and not the export's own event
    assert [r["seq"] for r in records] == sorted(before)
    assert {
        "seq",
        "created_at",
        "actor",
        "action",
        "target",
        "metadata",
        "hash",
        "prev_hash",
    } <= set(records[0])
    assert records[1]["prev_hash"] == records[0]["hash"]
    exported = AuditEvent.objects.get(tenant=trail.tenant, action="audit.exported")
    assert exported.seq > max(before)
    assert exported.metadata == {"format": "jsonl", "filters": {}}


def test_a_csv_cell_that_a_spreadsheet_would_run_is_neutralised(acme):
    audit_record(
        tenant=acme.tenant,
        action="test.event",
        actor=Actor.system("tests"),
        target='=HYPERLINK("http://evil")',
    )
    body = _download(acme.client(Role.AUDITOR).get(CSV_URL + "?action=test.event"))
    row = next(csv.DictReader(io.StringIO(body)))
    assert row["target"] == '\'=HYPERLINK("http://evil")'


def test_an_export_with_invalid_filters_exports_nothing(trail):
    response = trail.client(Role.AUDITOR).get(CSV_URL + "?from=someday")
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_developers_can_neither_read_nor_export_the_audit_log(trail):
    client = trail.client(Role.DEVELOPER)
    for url in (URL, CSV_URL, JSONL_URL):
        assert client.get(url).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_export_links_carry_the_current_filters(trail):
    html = _get(trail.client(Role.AUDITOR), "action=key.*&actor=worker")
    assert 'id="export-csv" href="/t/acme/audit/export.csv?action=key.%2A&amp;actor=worker"' in html
    assert (
        'id="export-jsonl" href="/t/acme/audit/export.jsonl?action=key.%2A&amp;actor=worker"'
        in html
    )


def test_the_filter_form_has_the_fields_the_browser_tests_use(trail):
    html = _get(trail.client(Role.AUDITOR))
    form = re.search(r'<form id="audit-filters"[^>]*method="get".*?</form>', html, re.S).group(0)
    names = re.findall(r'<input[^>]*\bname="(\w+)"', form)
    assert names == ["action", "actor", "target", "from", "to"]


def test_the_empty_state_after_filters(trail):
    html = _get(trail.client(Role.AUDITOR), "action=nothing.here")
    assert "No events match these filters" in html


def test_each_event_is_one_summary_line_that_opens_to_every_detail(trail):
    html = _get(trail.client(Role.AUDITOR), "action=key.consumed")
    consumed = AuditEvent.objects.filter(tenant=trail.tenant, action="key.consumed").first()
    row = re.search(rf'<tr data-seq="{consumed.seq}".*?</tr>', html, re.S).group(0)
    fingerprint = consumed.metadata["fingerprint"]
    summary = (
        f"anthropic key fp {fingerprint.removeprefix('v2:')[:8]} taken by worker worker-7,"
        " may go to https://api.anthropic.com"
    )
    assert f'<details><summary title="{summary}">{summary}</summary>' in row
    names = re.findall(r"<dt>([^<]+)</dt>", row)
    assert sorted(names) == sorted(consumed.metadata)  # every key of the metadata
    assert f"<code>&quot;{fingerprint}&quot;</code>" in row
    # the target: the run's short id, the whole one in the title, linked to the run page
    run_id = consumed.target.removeprefix("run:")
    assert f'title="{consumed.target}">run:<code>{run_id[:8]}</code>…</a>' in row
