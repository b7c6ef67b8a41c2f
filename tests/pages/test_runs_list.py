"""The runs list: columns, filters, keyset pagination and a fixed query count."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.models import Run, RunStatus
from runs.selectors import PAGE_SIZE, RUN_KEYSET
from runs.services import workflow_create
from swrly.audit.writer import Actor
from tenants.models import Role
from tests.pages.conftest import KEY_A, KEY_B, T0, key_print, make_run

URL = "/t/acme/runs/"


def _run_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-run-id="([0-9a-f-]+)"', html)


def _next(html: str) -> str | None:
    match = re.search(r'<a id="older" rel="next" href="\?([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def _get(client, query: str = "") -> str:
    response = client.get(URL + (f"?{query}" if query else ""))
    assert response.status_code == 200
    return response.content.decode()


def test_a_row_shows_status_workflow_trigger_steps_tokens_and_key_hint(acme):
    run = make_run(acme, steps=3)
    html = _get(acme.client(Role.AUDITOR))
    row = re.search(rf'<tr data-run-id="{run.pk}" data-status="succeeded">(.*?)</tr>', html, re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    # the security-relevant columns first: status, keys, who triggered it
    assert "Succeeded" in cells[1]
    assert key_print(KEY_A).hint in cells[2]
    assert f"?fingerprint={key_print(KEY_A).value}" in cells[2]
    assert cells[3] == "token:ci (swr_abc…)"
    assert cells[4] == "hello"
    assert 'datetime="2025-03-03T09:00:01Z"' in cells[5]
    assert cells[6] == "2.0 s"
    assert cells[7] == "3"
    assert cells[8] == "45"  # 3 steps x (10 in + 5 out)


def test_filters_by_status_workflow_and_dates(acme):
    other = workflow_create(
        tenant=acme.tenant,
        name="other",
        steps=[{"name": "s", "provider": "sandbox", "model": "m", "prompt": "p"}],
        actor=Actor.system("tests"),
    )
    old = make_run(acme, at=T0 - timedelta(days=3))
    failed = make_run(acme, at=T0, status=RunStatus.FAILED, error_code="timeout")
    new = make_run(acme, at=T0 + timedelta(days=2))
    Run.objects.filter(pk=new.pk).update(workflow=other, workflow_name="other")
    client = acme.client(Role.DEVELOPER)

    assert _run_ids(_get(client, "status=failed")) == [str(failed.pk)]
    assert _run_ids(_get(client, f"workflow={other.pk}")) == [str(new.pk)]
    assert _run_ids(_get(client, "from=2025-03-03&to=2025-03-03")) == [str(failed.pk)]
    assert _run_ids(_get(client, "to=2025-03-02")) == [str(old.pk)]
    assert _run_ids(_get(client, "from=2025-03-01")) == [str(new.pk), str(failed.pk)]
    html = _get(client, "status=failed&from=2025-03-04")
    assert _run_ids(html) == []
    assert "No runs match these filters" in html


def test_filters_by_fingerprint_whole_or_prefix(acme):
    a = make_run(acme, at=T0, key=KEY_A)
    b = make_run(acme, at=T0 + timedelta(days=30), key=KEY_B)
    client = acme.client(Role.AUDITOR)
    print_a, print_b = key_print(KEY_A).value, key_print(KEY_B).value

    assert _run_ids(_get(client, f"fingerprint={print_a}")) == [str(a.pk)]
    assert _run_ids(_get(client, f"fingerprint={print_b[:10].upper()}")) == [str(b.pk)]
    # a fingerprint this tenant never used
    html = _get(client, "fingerprint=" + "0" * 64)
    assert _run_ids(html) == []
    assert "key history" in html


def test_the_fingerprint_filter_does_not_see_another_tenants_runs(acme, globex):
    make_run(globex, key=KEY_A)
    html = _get(acme.client(Role.OWNER), f"fingerprint={key_print(KEY_A).value}")
    assert _run_ids(html) == []


def test_an_invalid_filter_is_reported_and_ignored(acme):
    run = make_run(acme)
    html = _get(acme.client(Role.OWNER), "fingerprint=xyz&status=nope&from=yesterday")
    assert "A fingerprint is 8 to 64 hexadecimal characters (after v2: if it has it)." in html
    assert _run_ids(html) == [str(run.pk)]


def test_keyset_pages_are_disjoint_complete_and_stable(acme):
    # given 120 runs, 110 of them made in the same microsecond (ties broken by id)
    runs = [make_run(acme, at=T0, steps=1) for _ in range(110)]
    runs += [make_run(acme, at=T0 + timedelta(minutes=i), steps=1) for i in range(1, 11)]
    client = acme.client(Role.OWNER)

    first = _get(client)
    cursor = _next(first)
    second = _get(client, cursor)
    assert _next(_get(client)) == cursor  # the same link when asked again
    # a run made after page one was shown does not shift page two
    make_run(acme, at=T0 + timedelta(hours=5), steps=1)
    assert _run_ids(_get(client, cursor)) == _run_ids(second)
    third = _get(client, _next(second))

    pages = [_run_ids(first), _run_ids(second), _run_ids(third)]
    assert [len(page) for page in pages] == [PAGE_SIZE, PAGE_SIZE, 20]
    seen = [run_id for page in pages for run_id in page]
    assert len(set(seen)) == len(seen) == 120
    assert set(seen) == {str(run.pk) for run in runs}
    assert _next(third) is None
    assert "Newest runs" in third
    expected = sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)
    assert seen == [str(r.pk) for r in expected]


def test_keyset_pagination_keeps_the_filters(acme):
    for _ in range(PAGE_SIZE + 2):
        make_run(acme, status=RunStatus.FAILED, steps=1)
    make_run(acme, status=RunStatus.SUCCEEDED, steps=1)
    client = acme.client(Role.OWNER)
    first = _get(client, "status=failed")
    assert "status=failed" in _next(first)
    assert len(_run_ids(_get(client, _next(first)))) == 2


def test_a_malformed_cursor_shows_the_first_page(acme):
    run = make_run(acme)
    assert _run_ids(_get(acme.client(Role.OWNER), "before=not-a-cursor")) == [str(run.pk)]
    assert RUN_KEYSET.decode("AAAA", Run) is None


@pytest.mark.parametrize("fingerprint", [False, True])
def test_the_query_count_is_the_same_for_5_and_60_runs(acme, fingerprint):
    client = acme.client(Role.OWNER)
    query = f"fingerprint={key_print(KEY_A).value}" if fingerprint else ""

    def count(total):
        while Run.objects.filter(tenant=acme.tenant).count() < total:
            make_run(acme, steps=2)
        client.get(URL)  # warm the session
        with CaptureQueriesContext(connection) as queries:
            html = _get(client, query)
        return len(queries), len(_run_ids(html))

    few, rows_few = count(5)
    many, rows_many = count(60)
    assert (rows_few, rows_many) == (5, PAGE_SIZE)
    assert few == many, f"{few} queries for 5 runs, {many} for 60"


def test_the_empty_state_shows_how_to_trigger_a_run(acme):
    html = _get(acme.client(Role.OWNER))
    assert "No runs yet" in html
    assert "curl -X POST http://testserver/api/v1/runs/" in html
    assert 'href="/api/v1/docs/"' in html
    assert 'href="/t/acme/tokens/"' in html  # owners can make a token
    assert 'href="/t/acme/tokens/"' not in _get(acme.client(Role.AUDITOR)).split("<main")[1]


def test_a_queued_run_shows_it_has_not_started(acme):
    with time_machine.travel(T0, tick=False):
        run = make_run(acme, status=RunStatus.QUEUED)
    html = _get(acme.client(Role.OWNER))
    row = re.search(rf'<tr data-run-id="{run.pk}" data-status="queued">(.*?)</tr>', html, re.S)
    assert "not started" in row.group(1)


def test_a_run_cancelled_before_it_started_shows_no_start_time(acme):
    with time_machine.travel(T0, tick=False):
        run = make_run(acme, status=RunStatus.CANCELLED)
    Run.objects.filter(pk=run.pk).update(started_at=None, finished_at=T0 + timedelta(seconds=30))
    html = _get(acme.client(Role.OWNER))
    row = re.search(rf'<tr data-run-id="{run.pk}" data-status="cancelled">(.*?)</tr>', html, re.S)
    started = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)[
        5
    ]  # after Run, Status, Keys, Triggered by, Workflow
    assert "—" in started
    assert "never started" in started
    assert "<time" not in started  # neither the creation nor the cancellation time
    assert "2025-03-03" not in started
