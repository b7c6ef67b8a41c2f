"""The security team's pages in a real browser, on the whole stack.

A run is triggered through the API of the live server, a real Celery worker takes its key from
the key store and calls the sandbox provider, and the owner watches it in Chromium: the runs
list, the run's key lifecycle, the audit log and its exports, and the key history after
`rotate-keys`. The canary keys must appear on no page and in no export.
"""

import csv
import io
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from django.core.management import call_command

from runs.models import Run, RunStatus, StepRun
from swrly.audit.models import AuditEvent
from swrly.keys import deposit
from swrly.keys.keyring import generate_key, get_keyring
from tenants.models import Role
from tests.browser.conftest import screenshot, sign_in, watch_csp

PASSWORD = "correct horse battery staple"
PARIS = ZoneInfo("Europe/Paris")
STEPS = [
    {
        "name": "outline",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Outline {{ input.topic }}",
    },
    {
        "name": "draft",
        "provider": "sandbox",
        "model": "sandbox-1",
        "system": "Be brief.",
        "prompt": "Draft from: {{ steps.outline.output }}",
    },
    {
        "name": "review",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "Review {{ steps.draft.output }}",
    },
]


class Visits:
    """The HTML of every page the browser showed, and of every download, for the canary check."""

    def __init__(self, page):
        self.page = page
        self.documents: list[tuple[str, str]] = []

    def record(self) -> None:
        self.page.wait_for_load_state("load")
        self.documents.append((self.page.url, self.page.content()))

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.record()

    def click(self, selector: str) -> None:
        """Follow a link or submit a form, as a person would, and record the page it opens."""
        with self.page.expect_navigation():
            self.page.click(selector)
        self.record()

    def download(self, selector: str) -> str:
        with self.page.expect_download() as info:
            self.page.click(selector)
        download = info.value
        assert download.failure() is None
        with open(download.path(), encoding="utf-8") as handle:
            text = handle.read()
        self.documents.append((download.suggested_filename, text))
        return text

    def containing(self, secret: str) -> list[str]:
        return [where for where, text in self.documents if secret in text]


def _sign_in_owner(page, live_server, world) -> None:
    owner = world.users[Role.OWNER]
    owner.set_password(PASSWORD)
    owner.save()
    sign_in(page, live_server.url, owner, PASSWORD)
    page.wait_for_url(f"{live_server.url}/t/{world.tenant.slug}/")


def _wait_for_row(visits, run_id: str, statuses: set[str], timeout: float = 30.0) -> str:
    """Reload the runs list until the run's row shows one of `statuses` (bounded)."""
    page = visits.page
    row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    deadline = time.monotonic() + timeout
    while True:
        status = row.get_attribute("data-status") if row.count() else None
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is {status or 'not listed'} after {timeout} s")
        page.wait_for_timeout(150)
        page.reload()
        visits.record()


def _times(page) -> list[dict]:
    return page.eval_on_selector_all(
        "time[datetime]",
        """els => els.map(e => ({datetime: e.getAttribute("datetime"), text: e.textContent,
                                 title: e.title, localized: e.hasAttribute("data-localized")}))""",
    )


def _paris(value: str) -> str:
    """A UTC ISO time as localtime.js shows it in Europe/Paris (Chromium says GMT+1 / GMT+2)."""
    local = datetime.fromisoformat(value).astimezone(PARIS)
    hours = int(local.utcoffset().total_seconds() // 3600)
    millis = f".{local.microsecond // 1000:03d}" if "." in value else ""  # the key timeline's
    return f"{local:%Y-%m-%d %H:%M:%S}{millis} GMT+{hours}"


def _details(timeline, kind: str) -> dict[str, str]:
    """The name → value details of the timeline entry of `kind`."""
    return timeline.locator(f'li[data-kind="{kind}"] dl.details > div').evaluate_all(
        """divs => Object.fromEntries(divs.map(d => [d.querySelector("dt").textContent.trim(),
                                                   d.querySelector("dd").textContent.trim()]))"""
    )


def _texts(locator) -> list[str]:
    return [text.strip() for text in locator.all_inner_texts()]


def test_a_run_from_the_api_is_followed_through_every_page(
    acme, globex, live_server, page, celery_worker, provider_server_factory, settings
):
    tenant = f"{live_server.url}/t/acme"
    canary = f"sk-sandbox-canary-{secrets.token_hex(16)}"
    refused = f"sk-sandbox-canary-{secrets.token_hex(16)}"
    # The sandbox accepts only `canary`: the second run's key is refused, and the sandbox quotes
    # it back in its error ([sandbox:echo-key]) to prove the pages show it redacted.
    server = provider_server_factory(expected_keys={canary})
    csp = watch_csp(page)
    visits = Visits(page)

    # 1. the owner signs in through the login form
    _sign_in_owner(page, live_server, acme)
    visits.record()

    # 2. a developer's API token makes a three-step sandbox workflow and triggers two runs
    api = httpx.Client(
        base_url=f"{live_server.url}/api/v1",
        headers={"Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}"},
        timeout=10,
    )
    with api:
        created = api.post("/workflows/", json={"name": "report", "steps": STEPS})
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        ok = api.post(
            "/runs/",
            json={
                "workflow": workflow_id,
                "input": {"topic": "key rotation"},
                "provider_keys": {"sandbox": canary},
            },
        )
        assert ok.status_code == 202, ok.text
        bad = api.post(
            "/runs/",
            json={
                "workflow": workflow_id,
                "input": {"topic": "a refused key [sandbox:echo-key]"},
                "provider_keys": {"sandbox": refused},
            },
        )
        assert bad.status_code == 202, bad.text
    run_id, failed_id = ok.json()["id"], bad.json()["id"]

    # 3. both appear in the runs list at once, and finish
    visits.click('nav[aria-label=Tenant] a:text-is("Runs")')
    assert page.locator(f'#runs tr[data-run-id="{run_id}"]').count() == 1
    assert _wait_for_row(visits, run_id, {"succeeded", "failed", "cancelled"}) == "succeeded"
    assert _wait_for_row(visits, failed_id, {"succeeded", "failed", "cancelled"}) == "failed"
    row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    assert "report" in row.inner_text()
    assert row.locator("td.num").first.inner_text() == "3"  # steps
    screenshot(page, "runs")

    # 4. its detail: the steps with the provider's request ids, and the key's lifecycle
    visits.click(f'#runs tr[data-run-id="{run_id}"] td:first-child a')
    assert page.url == f"{tenant}/runs/{run_id}/"
    assert page.get_attribute("#run-facts", "data-status") == "succeeded"
    request_ids = list(
        StepRun.objects.filter(run_id=run_id)
        .order_by("position")
        .values_list("provider_request_id", flat=True)
    )
    assert len(request_ids) == 3
    assert all(rid.startswith("req_sandbox_") for rid in request_ids), request_ids
    cells = page.locator("#steps tbody tr td:nth-child(5)")
    assert _texts(cells) == request_ids
    assert _texts(page.locator("#steps tbody tr td:nth-child(3)")) == ["sandbox"] * 3
    sent_to = {
        f"{s.destination_host}:{s.destination_port}" for s in StepRun.objects.filter(run_id=run_id)
    }
    assert len(sent_to) == 1  # every step went to the sandbox's allow-listed address
    assert _texts(page.locator("#steps tbody tr td:nth-child(6)")) == [*sent_to] * 3
    timeline = page.locator('section#key-timeline ol[data-provider="sandbox"]')
    assert timeline.count() == 1
    kinds = timeline.locator("li[data-kind]").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds == ["deposited", "consumed", "released"]
    run = Run.objects.get(pk=run_id)
    assert run.worker
    assert _details(timeline, "consumed")["Worker"] == run.worker
    deposited = _details(timeline, "deposited")
    assert deposited["By"].startswith("token:developer-token")
    assert deposited["Hint"] == run.key_fingerprints["sandbox"]["hint"]
    assert deposited["TTL"] == "15 min 00 s"
    # 9. dates: localtime.js shows each one in the viewer's zone; the title keeps UTC
    times = _times(page)
    assert times, "the run detail shows no <time>"
    for shown in times:
        assert shown["localized"], shown
        assert shown["text"] == _paris(shown["datetime"]), shown
        utc = datetime.fromisoformat(shown["datetime"]).astimezone(UTC)
        millis = f".{utc.microsecond // 1000:03d}" if "." in shown["datetime"] else ""
        assert shown["title"] == f"{utc:%Y-%m-%d %H:%M:%S}{millis} UTC", shown
    assert any("." in shown["datetime"] for shown in times), "the key timeline has no ms"
    screenshot(page, "run-detail")

    # the refused run failed on its first step, with the provider's error redacted
    visits.goto(f"{tenant}/runs/{failed_id}/")
    assert page.get_attribute("#run-facts", "data-status") == "failed"
    assert (
        _texts(page.locator("#steps tbody tr[data-step] td:nth-child(11) .status"))[0] == "Failed"
    )
    error = page.locator("#steps tbody tr[data-step] td:nth-child(12)").first.inner_text()
    assert "Incorrect API key provided: [REDACTED]" in error, error  # quoted, then redacted
    refused_kinds = page.locator(
        'section#key-timeline ol[data-provider="sandbox"] li[data-kind]'
    ).evaluate_all("els => els.map(e => e.dataset.kind)")
    assert refused_kinds == ["deposited", "consumed", "released"]

    # 5. the audit log, filtered to one action, and exported as CSV and JSON Lines
    visits.click('nav[aria-label=Tenant] a:text-is("Audit")')
    assert page.get_attribute("#chain-status", "data-ok") == "true"
    every_action = set(
        page.locator("#audit-events tbody tr").evaluate_all("els => els.map(e => e.dataset.action)")
    )
    assert {"key.deposited", "key.consumed", "run.succeeded", "run.failed"} <= every_action
    screenshot(page, "audit-log")
    page.fill("#audit-filters input[name=action]", "key.consumed")
    visits.click("#audit-filters button[type=submit]")
    assert "action=key.consumed" in page.url
    consumed_seqs = sorted(
        AuditEvent.objects.filter(tenant=acme.tenant, action="key.consumed").values_list(
            "seq", flat=True
        )
    )
    assert len(consumed_seqs) == 2  # one per run
    rows = page.locator("#audit-events tbody tr")
    assert set(rows.evaluate_all("els => els.map(e => e.dataset.action)")) == {"key.consumed"}
    assert sorted(int(s) for s in rows.evaluate_all("els => els.map(e => e.dataset.seq)")) == (
        consumed_seqs
    )
    exported_csv = list(csv.DictReader(io.StringIO(visits.download("#export-csv"))))
    assert [row["action"] for row in exported_csv] == ["key.consumed"] * 2
    assert [int(row["seq"]) for row in exported_csv] == consumed_seqs
    exported_jsonl = [
        json.loads(line) for line in visits.download("#export-jsonl").splitlines() if line
    ]
    assert [event["action"] for event in exported_jsonl] == ["key.consumed"] * 2
    assert [event["seq"] for event in exported_jsonl] == consumed_seqs
    assert {event["target"] for event in exported_jsonl} == {f"run:{run_id}", f"run:{failed_id}"}

    # 6. a rotation: live tokens (no worker takes them: no run is queued for them) rewrapped
    deposit(tenant_id=acme.tenant.pk, run_id=uuid.uuid4(), provider="sandbox", key=canary)
    for _ in range(2):  # another tenant's tokens: not counted on acme's page
        deposit(tenant_id=globex.tenant.pk, run_id=uuid.uuid4(), provider="sandbox", key=canary)
    old_key_id = get_keyring().current.key_id_hex
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [settings.BYOK_ENCRYPTION_KEY]
    settings.BYOK_ENCRYPTION_KEY = generate_key()
    new_key_id = get_keyring().current.key_id_hex
    output = io.StringIO()
    call_command("rotate-keys", actor="browser-test", stdout=output)
    assert "rewrapped 3," in output.getvalue()

    visits.click('nav[aria-label=Tenant] a:text-is("Keys")')
    rotations = page.locator("table#rotations tbody tr[data-rotation-id]")
    assert rotations.count() == 1
    assert rotations.get_attribute("data-outcome") == "succeeded"
    cells = _texts(rotations.locator("td"))
    assert "browser-test" in cells[2]
    assert cells[3] == old_key_id
    assert cells[4] == new_key_id
    assert cells[6] == "1"  # acme's token only
    keys = page.locator("table#provider-keys tbody tr[data-provider=sandbox]")
    fingerprints = {
        run["id"]: run["key_fingerprints"]["sandbox"]["fingerprint"]
        for run in (ok.json(), bad.json())
    }
    assert set(keys.evaluate_all("els => els.map(e => e.dataset.fingerprint)")) == set(
        fingerprints.values()
    )
    used = page.locator(
        f'table#provider-keys tr[data-fingerprint="{fingerprints[run_id]}"] td:nth-child(4)'
    )
    assert used.inner_text().split()[0] == "1"  # runs with this key (then screen-reader text)
    screenshot(page, "key-history")

    # the other pages, for the canary check and the screenshots
    visits.click('nav[aria-label=Tenant] a:text-is("Dashboard")')
    assert page.locator("svg.chart").count() == 2
    assert page.locator("#failed-runs tr[data-run-id]").count() == 1
    assert page.locator("#latest-rotations tbody tr").count() == 1
    screenshot(page, "dashboard")
    visits.click('nav[aria-label=Tenant] a:text-is("Members")')
    screenshot(page, "members")
    visits.click('nav[aria-label=Tenant] a:text-is("API tokens")')
    screenshot(page, "api-tokens")
    visits.goto(f"{tenant}/audit/")  # now with the exports and the rotation in it
    visits.goto(f"{tenant}/runs/?status=failed")

    # 7. the keys reached the provider, and no page or export ever showed them
    presented = " ".join(str(sorted(r.headers.items())) for r in server.requests)
    assert canary in presented
    assert refused in presented
    seen = {where.removeprefix(live_server.url).split("?")[0] for where, _ in visits.documents}
    for path in ("", "runs/", f"runs/{run_id}/", f"runs/{failed_id}/", "keys/", "audit/"):
        assert f"/t/acme/{path}" in seen
    assert {"/t/acme/members/", "/t/acme/tokens/"} <= seen
    assert sum(where.startswith("swrly-audit-acme-") for where in seen) == 2  # the exports
    for secret in (canary, refused):
        assert visits.containing(secret) == []
        assert visits.containing(secret.removeprefix("sk-sandbox-canary-")) == []
    assert csp == []


WIDTH_SCRIPT = """() => ({viewport: document.documentElement.clientWidth,
                           page: document.documentElement.scrollWidth,
                           body: document.body.scrollWidth})"""


def _finished_runs(world, count: int = 3) -> list:
    """Finished runs with a key, made through the models (no worker needed)."""
    runs = []
    for _ in range(count):
        run = world.run()
        now = datetime.now(UTC)
        run.status = RunStatus.SUCCEEDED
        run.started_at, run.finished_at = now - timedelta(seconds=3), now
        run.key_fingerprints = {"sandbox": {"fingerprint": "ab" * 32, "hint": "sk-s…d00d"}}
        run.save()
        runs.append(run)
    return runs


def test_a_narrow_screen_keeps_the_pages_inside_and_the_nav_in_reach_of_the_keyboard(
    acme, live_server, page_factory
):
    run = _finished_runs(acme)[0]
    page = page_factory(390, 844)
    csp = watch_csp(page)
    _sign_in_owner(page, live_server, acme)
    page.goto(f"{live_server.url}/t/acme/runs/")
    assert page.locator("#runs tr[data-run-id]").count() == 3

    # the page does not scroll sideways; the wide table scrolls inside its own box
    width = page.evaluate(WIDTH_SCRIPT)
    assert width["page"] <= width["viewport"], width
    assert width["body"] <= width["viewport"], width
    table = page.eval_on_selector(
        "#runs",
        "t => ({right: t.getBoundingClientRect().right, client: t.clientWidth,"
        " scroll: t.scrollWidth})",
    )
    assert table["right"] <= width["viewport"], table
    assert table["scroll"] > table["client"], table  # 9 columns do not fit in 390 px

    # Tab from the top: the skip link first (shown when focused), then the header's links
    def focused() -> dict:
        return page.evaluate(
            """() => {const e = document.activeElement, r = e.getBoundingClientRect();
                      return {text: e.textContent.trim(), cls: e.className,
                              nav: !!e.closest("nav[aria-label=Tenant]"),
                              left: r.left, right: r.right}}"""
        )

    page.keyboard.press("Tab")
    first = focused()
    assert first["cls"] == "skip", first
    assert first["text"] == "Skip to content"
    assert first["left"] >= 0, first  # moved on screen when focused
    assert first["right"] <= width["viewport"], first
    reached = []
    for _ in range(10):
        page.keyboard.press("Tab")
        now = focused()
        if reached and not now["nav"]:
            break
        if now["nav"]:
            assert now["left"] >= 0, now
            assert now["right"] <= width["viewport"], now
            reached.append(now["text"])
    assert reached == [
        "Dashboard",
        "Workflows",
        "Runs",
        "Keys",
        "Audit",
        "Members",
        "API tokens",
        "Settings",
    ]
    # back to the last nav link, and Enter follows it
    page.keyboard.press("Shift+Tab")
    assert focused()["text"] == "Settings"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/t/acme/settings/")

    # the other pages do not scroll sideways either
    for path in ("", "keys/", "audit/", "tokens/", "settings/", f"runs/{run.pk}/", "workflows/"):
        page.goto(f"{live_server.url}/t/acme/{path}")
        width = page.evaluate(WIDTH_SCRIPT)
        assert width["page"] <= width["viewport"], (path, width)
    assert csp == []


# A `.sr-only` span (position: absolute) inside a table once escaped the table's scroll box and
# widened the page at 390 px; tables are now their own containing block.
@pytest.mark.parametrize("path", ["runs/", "members/"])
def test_hidden_labels_in_tables_do_not_widen_a_narrow_page(acme, live_server, page_factory, path):
    acme.run()  # queued: "not started", then the screen-reader label "created"
    page = page_factory(390, 844)
    _sign_in_owner(page, live_server, acme)
    page.goto(f"{live_server.url}/t/acme/{path}")
    width = page.evaluate(WIDTH_SCRIPT)
    assert width["page"] <= width["viewport"], width


def test_dates_are_shown_in_the_viewers_timezone_with_utc_on_hover(acme, live_server, page):
    run = acme.run()  # queued: the list shows when it was created
    run.created_at = datetime(2026, 11, 24, 10, 30, 5, tzinfo=UTC)
    run.save(update_fields=["created_at"])
    _sign_in_owner(page, live_server, acme)
    page.goto(f"{live_server.url}/t/acme/runs/")
    shown = page.locator(f'#runs tr[data-run-id="{run.pk}"] time[datetime="2026-11-24T10:30:05Z"]')
    page.wait_for_selector("time[data-localized]")
    assert shown.inner_text() == "2026-11-24 11:30:05 GMT+1"  # Paris is UTC+1 in November
    assert shown.get_attribute("title") == "2026-11-24 10:30:05 UTC"
