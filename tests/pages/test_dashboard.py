"""The dashboard: server-drawn SVG charts, latest rotations, failed runs, the tenant's facts."""

import re
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.models import Run, RunStatus
from tenants.models import Role
from tests.pages.conftest import T0, assert_clean_html, make_rotation, make_run

URL = "/t/acme/"


def _page(world, role=Role.OWNER) -> str:
    response = world.client(role).get(URL)
    assert response.status_code == 200
    return response.content.decode()


def _svgs(html: str) -> list[str]:
    return re.findall(r'<svg class="chart".*?</svg>', html, re.S)


def _bar_titles(svg: str) -> list[str]:
    return re.findall(r'<rect class="bar [^"]+"[^>]*><title>([^<]+)</title></rect>', svg)


def test_runs_per_day_by_status_are_drawn_as_svg_bars(acme, frozen_now):
    make_run(acme, at=T0)
    make_run(acme, at=T0 + timedelta(hours=1))
    make_run(acme, at=T0, status=RunStatus.FAILED, error_code="timeout")
    make_run(acme, at=T0 - timedelta(days=1))
    make_run(acme, at=T0 - timedelta(days=20))  # outside the 14 days
    runs_svg, _ = _svgs(_page(acme))
    assert sorted(_bar_titles(runs_svg)) == [
        "2025-03-02: 1 Succeeded",
        "2025-03-03: 1 Failed",
        "2025-03-03: 2 Succeeded",
    ]
    assert 'role="img"' in runs_svg
    assert "4 runs in all (3 Succeeded, 1 Failed)" in runs_svg  # the aria-label
    assert "<script" not in runs_svg


def test_key_events_per_day_come_from_the_audit_log(acme, frozen_now):
    make_run(acme, at=T0, events=True)
    make_run(acme, at=T0 + timedelta(days=1), status=RunStatus.QUEUED, events=True)
    html = _page(acme, Role.DEVELOPER)
    _, keys_svg = _svgs(html)
    assert sorted(_bar_titles(keys_svg)) == [
        "2025-03-03: 1 consumed",
        "2025-03-03: 1 deposited",
        "2025-03-04: 1 deposited",
    ]
    legend = re.findall(r'<ul class="legend">(.*?)</ul>', html, re.S)[1]
    assert "deposited: 2" in legend
    assert "consumed: 1" in legend


def test_the_chart_table_holds_the_same_numbers(acme, frozen_now):
    make_run(acme, at=T0)
    html = _page(acme)
    table = re.search(
        r"<summary>Runs per day by status as a table</summary>(.*?)</table>", html, re.S
    )
    row = re.search(r'<th scope="row">2025-03-03</th>(.*?)</tr>', table.group(1)).group(1)
    assert re.findall(r">(\d+)<", row) == ["0", "0", "1", "0", "0"]


def test_failed_runs_needing_attention_and_the_latest_five_rotations(acme, frozen_now):
    failed = [
        make_run(acme, at=T0 - timedelta(minutes=i), status=RunStatus.FAILED, error_code="timeout")
        for i in range(12)
    ]
    make_run(acme, at=T0)
    rotations = [make_rotation(acme, at=T0 - timedelta(days=i)) for i in range(6)]
    html = _page(acme, Role.AUDITOR)
    table = re.search(r'<table id="failed-runs">(.*?)</table>', html, re.S).group(1)
    shown = re.findall(r'data-run-id="([0-9a-f-]+)"', table)
    assert shown == [str(run.pk) for run in failed[:10]]
    assert "timeout" in table
    latest = re.search(r'<table id="latest-rotations">(.*?)</table>', html, re.S).group(1)
    assert latest.count("<tr><td>") == 5
    assert rotations[5].started_at.strftime("%Y-%m-%d %H:%M:%S") not in latest


def test_the_existing_facts_stay(acme, frozen_now):
    html = _page(acme)
    assert re.search(r"<dt>Members</dt><dd><a [^>]+>4</a>", html)
    assert re.search(r"<dt>Active API tokens</dt><dd><a [^>]+>4</a>", html)
    assert "Recent activity" in html
    assert "Recent activity" not in _page(acme, Role.DEVELOPER)


def test_the_empty_dashboard_says_what_to_do_next(acme, frozen_now):
    html = _page(acme)
    assert "No runs in the last 14 days" in html
    assert "No failed runs" in html
    assert "No encryption-key rotations yet" in html
    assert len(_svgs(html)) == 2
    assert_clean_html(html)


def test_the_query_count_is_the_same_for_5_and_60_runs(acme, frozen_now):
    client = acme.client(Role.OWNER)

    def count(total):
        day = 0
        while Run.objects.filter(tenant=acme.tenant).count() < total:
            status = RunStatus.FAILED if day % 3 == 0 else RunStatus.SUCCEEDED
            code = "timeout" if status == RunStatus.FAILED else ""
            make_run(
                acme, at=T0 - timedelta(days=day % 14), status=status, error_code=code, events=True
            )
            make_rotation(acme, at=T0 - timedelta(hours=day))
            day += 1
        client.get(URL)
        with CaptureQueriesContext(connection) as queries:
            client.get(URL)
        return len(queries)

    few, many = count(5), count(60)
    assert few == many, f"{few} queries for 5 runs, {many} for 60"
