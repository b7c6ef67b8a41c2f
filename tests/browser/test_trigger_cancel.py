"""Acting in the browser, on the whole stack: a run triggered with a key typed into a password
field, a run cancelled after its confirmation, an API token revoked after its confirmation, and a
locked-out member unlocked by an owner.

The typed keys are canaries: the provider must receive them, and no page source the browser
saw and no server log line may contain them.
"""

import logging
import secrets
import time

from django.test import Client

from runs.models import Run, RunStatus, Workflow
from runs.services import workflow_create
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.browser.conftest import screenshot, sign_in, watch_csp

PASSWORD = "correct horse battery staple"


def _canary() -> str:
    # Not shaped like a provider key (sk-…): only redaction by value could hide it, so a log
    # line or page that carried it would show it.
    return f"CANARYbrowser{secrets.token_hex(20)}"


def _workflow(world) -> Workflow:
    return workflow_create(
        tenant=world.tenant,
        name="brief",
        steps=[
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
                "prompt": "Draft from {{ steps.outline.output }}",
            },
        ],
        actor=Actor.system("tests"),
    )


def _sign_in(page, live_server, user) -> None:
    user.set_password(PASSWORD)
    user.save()
    sign_in(page, live_server.url, user, PASSWORD)
    page.wait_for_url(f"{live_server.url}/t/acme/")


class Sources:
    """The source of every page the browser showed, for the canary check."""

    def __init__(self, page):
        self.page = page
        self.seen: list[tuple[str, str]] = []

    def record(self) -> None:
        self.page.wait_for_load_state("load")
        self.seen.append((self.page.url, self.page.content()))

    def containing(self, secret: str) -> list[str]:
        return [url for url, html in self.seen if secret in html]


def _wait_for_status(page, sources, statuses: set[str], timeout: float = 30.0) -> str:
    """Reload the run page until its status is one of `statuses` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        status = page.get_attribute("#run-facts", "data-status")
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the run is {status} after {timeout} s")
        page.wait_for_timeout(150)
        page.reload()
        sources.record()


def test_a_run_is_triggered_with_a_typed_key_that_no_page_or_log_shows(
    acme, live_server, page, celery_worker, provider_server_factory, key_store, captured, caplog
):
    canary = _canary()
    server = provider_server_factory(expected_keys={canary})
    workflow = _workflow(acme)
    csp = watch_csp(page)
    sources = Sources(page)
    caplog.set_level(logging.DEBUG)
    _sign_in(page, live_server, acme.users[Role.DEVELOPER])

    # the form: the workflow's steps, a password field for its one provider, the input
    page.goto(f"{live_server.url}/t/acme/workflows/{workflow.pk}/run/")
    sources.record()
    field = page.locator("#key-sandbox")
    assert field.get_attribute("type") == "password"
    assert field.get_attribute("autocomplete") == "off"
    steps = [
        t.strip() for t in page.locator("#trigger-steps tbody td:nth-child(2)").all_inner_texts()
    ]
    assert steps == ["outline", "draft"]
    assert '"topic": ""' in page.input_value("#run-input")
    screenshot(page, "run-trigger")

    # a mistake in the input: the page comes back without the key, which is typed again
    field.fill(canary)
    page.fill("#run-input", '{"topic": ')
    with page.expect_navigation():
        page.click("#run-trigger button[type=submit]")
    sources.record()
    assert "The input is not valid JSON" in page.inner_text("#input-errors")
    assert page.input_value("#key-sandbox") == ""
    assert not Run.objects.exists()

    page.fill("#key-sandbox", canary)
    page.fill("#run-input", '{"topic": "key custody"}')
    with page.expect_navigation():
        page.click("#run-trigger button[type=submit]")
    sources.record()

    # the run page: the key by fingerprint and hint, the run done by the worker
    run = Run.objects.get()
    assert page.url == f"{live_server.url}/t/acme/runs/{run.pk}/"
    assert canary not in page.url
    assert "Run of brief queued." in page.inner_text(".messages")
    assert _wait_for_status(page, sources, {"succeeded", "failed", "cancelled"}) == "succeeded"
    key = run.key_fingerprints["sandbox"]
    keys_table = page.locator("table", has=page.locator("th:text-is('Stored key expiry')"))
    assert key["hint"] in keys_table.inner_text()
    assert key["fingerprint"][:12] in keys_table.inner_text()
    assert run.triggered_by == f"user:{acme.users[Role.DEVELOPER].username}"
    kinds = page.locator('section#key-timeline ol[data-provider="sandbox"] li[data-kind]')
    assert kinds.evaluate_all("els => els.map(e => e.dataset.kind)") == [
        "deposited",
        "consumed",
        "released",
    ]
    screenshot(page, "run-triggered")

    # the provider got the typed key; nothing else ever showed it
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {canary}"}
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    assert sources.containing(canary) == []
    assert len(sources.seen) >= 3
    assert canary not in captured.getvalue()
    assert canary not in caplog.text
    assert "POST /t/acme/workflows/" in captured.getvalue()  # the server's log was captured
    assert csp == []


def test_a_queued_run_is_cancelled_after_its_confirmation(
    acme, live_server, page, key_store, settings
):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}  # nothing is sent
    workflow = _workflow(acme)
    sources = Sources(page)
    _sign_in(page, live_server, acme.users[Role.OWNER])
    canary = _canary()
    # no worker runs in this test: the run stays queued, its key in the key store
    page.goto(f"{live_server.url}/t/acme/workflows/{workflow.pk}/run/")
    page.fill("#key-sandbox", canary)
    page.fill("#run-input", '{"topic": "cancelled"}')
    with page.expect_navigation():
        page.click("#run-trigger button[type=submit]")
    sources.record()
    run = Run.objects.get()
    assert page.get_attribute("#run-facts", "data-status") == "queued"
    assert len(list(key_store.scan_iter(match=KEY_PATTERN))) == 1

    with page.expect_navigation():
        page.click("#run-actions a:text('Cancel run…')")
    sources.record()
    confirm = page.inner_text("#confirm-cancel")
    assert "Cancel this run?" in confirm
    assert "Its stored keys are deleted from the key store at once." in confirm
    assert "This cannot be undone" in confirm
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    screenshot(page, "run-cancel")

    with page.expect_navigation():
        page.click("#confirm-cancel button:text('Cancel the run')")
    sources.record()

    assert page.url == f"{live_server.url}/t/acme/runs/{run.pk}/"
    assert page.get_attribute("#run-facts", "data-status") == "cancelled"
    assert "Run cancelled." in page.inner_text(".messages")
    assert page.locator("#run-actions a:text('Cancel run…')").count() == 0
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    cancelled = AuditEvent.objects.get(tenant=acme.tenant, action="run.cancelled")
    assert cancelled.actor == f"user:{acme.users[Role.OWNER].username}"
    discarded = AuditEvent.objects.get(tenant=acme.tenant, action="key.discarded")
    assert discarded.metadata["token_found"] is True
    kinds = page.locator('section#key-timeline ol[data-provider="sandbox"] li[data-kind]')
    assert "discarded" in kinds.evaluate_all("els => els.map(e => e.dataset.kind)")
    assert sources.containing(canary) == []


def test_an_api_token_is_revoked_after_its_confirmation(acme, live_server, page):
    token = acme.token(Role.DEVELOPER)
    assert acme.api(Role.DEVELOPER).get("/api/v1/me/").status_code == 200
    _sign_in(page, live_server, acme.users[Role.ADMIN])
    page.goto(f"{live_server.url}/t/acme/tokens/")
    row = page.locator("tr", has=page.locator("td:text-is('developer-token')"))

    with page.expect_navigation():
        row.locator("a:text('Revoke…')").click()

    confirm = page.inner_text("#confirm-revoke")
    assert "Revoking stops every client using this API token at once." in confirm
    assert token.display_prefix in confirm
    assert acme.api(Role.DEVELOPER).get("/api/v1/me/").status_code == 200  # not yet
    screenshot(page, "token-revoke")

    with page.expect_navigation():
        page.click("#confirm-revoke button:text('Revoke developer-token')")

    assert page.url == f"{live_server.url}/t/acme/tokens/"
    assert "Revoked the API token developer-token." in page.inner_text(".messages")
    row = page.locator("tr", has=page.locator("td:text-is('developer-token')"))
    assert "Revoked" in row.inner_text()
    assert acme.api(Role.DEVELOPER).get("/api/v1/me/").status_code == 401
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="token.revoked").count() == 1


def test_an_owner_unlocks_a_locked_out_member(acme, live_server, page_factory):
    developer = acme.users[Role.DEVELOPER]
    developer.set_password(PASSWORD)
    developer.save()
    # the developer (in a browser of their own) fails to sign in until locked out
    theirs = page_factory()
    for _ in range(5):
        sign_in(theirs, live_server.url, developer, "not the password")
    assert "Too many failed sign-ins" in theirs.content()
    sign_in(theirs, live_server.url, developer, PASSWORD)
    assert "Too many failed sign-ins" in theirs.content()  # even the right password

    owner_page = page_factory()
    _sign_in(owner_page, live_server, acme.users[Role.OWNER])
    owner_page.goto(f"{live_server.url}/t/acme/members/")
    row = owner_page.locator(f'#lockouts tr[data-member="{developer.username}"]')
    assert row.count() == 1
    assert "127.0.0.1" in row.inner_text()
    screenshot(owner_page, "lockouts")

    with owner_page.expect_navigation():
        row.locator("button").click()

    assert f"Unlocked {developer.username}: they can sign in again." in owner_page.inner_text(
        ".messages"
    )
    assert owner_page.locator("#no-lockouts").count() == 1
    event = AuditEvent.objects.get(tenant=acme.tenant, action="member.unlocked")
    assert event.actor == f"user:{acme.users[Role.OWNER].username}"
    assert event.target == f"user:{developer.username}"

    sign_in(theirs, live_server.url, developer, PASSWORD)
    theirs.wait_for_url(f"{live_server.url}/t/acme/")
    assert Client().get("/").status_code == 302  # (the test client is unaffected)
