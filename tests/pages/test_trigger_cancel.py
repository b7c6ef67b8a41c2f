"""Triggering and cancelling runs from the pages: the API's services, audit and roles.

The run form posts keys typed into password fields: they are deposited like the API's, never
rendered back (not on an error, not in the redirect or a message), and the run page shows only
their fingerprint and hint. The keys are canaries; the test looks for them everywhere.
"""

import json
import logging
import re
import secrets

import pytest
from django.urls import reverse

from runs.models import Run, RunStatus, Workflow
from runs.services import workflow_create
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.pages.conftest import assert_clean_html

WRITE = [Role.OWNER, Role.ADMIN, Role.DEVELOPER]

INPUT = '{"topic": "a", "audience": "b"}'


@pytest.fixture(autouse=True)
def _sandbox(settings):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}


def _canary() -> str:
    return f"CANARYpage{secrets.token_hex(16)}"


def _workflow(world, steps=None) -> Workflow:
    return workflow_create(
        tenant=world.tenant,
        name="report",
        steps=steps
        or [
            {
                "name": "outline",
                "provider": "sandbox",
                "model": "sandbox-1",
                "prompt": "Outline {{ input.topic }} for {{ input.audience }}",
            }
        ],
        actor=Actor.system("tests"),
    )


def _url(workflow) -> str:
    return reverse("runs:run-trigger", args=["acme", workflow.pk])


def _form(client, workflow) -> tuple[str, str]:
    """GET the form: its HTML and its idempotency key."""
    html = client.get(_url(workflow)).content.decode()
    key = re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)
    return html, key


def test_the_form_shows_the_workflow_one_password_field_per_provider_and_the_input(acme):
    workflow = _workflow(acme)
    response = acme.client(Role.DEVELOPER).get(_url(workflow))
    assert response.status_code == 200
    html = response.content.decode()
    assert_clean_html(html)
    assert "<h1>Run report</h1>" in html
    fields = re.findall(r"<input[^>]*name=\"key_[^\"]+\"[^>]*>", html)
    assert len(fields) == 1
    assert 'type="password"' in fields[0]
    assert 'autocomplete="off"' in fields[0]
    assert "value=" not in fields[0]
    assert "Sandbox key" in html
    # the input skeleton names what the prompts read
    assert "&quot;topic&quot;: &quot;&quot;" in html
    assert "<code>audience</code>" in html
    # a new idempotency key at every rendering
    assert (
        _form(acme.client(Role.DEVELOPER), workflow)[1]
        != _form(acme.client(Role.DEVELOPER), workflow)[1]
    )


@pytest.mark.parametrize("role", WRITE)
def test_a_run_is_triggered_from_the_form_and_its_page_shows_only_fingerprint_and_hint(
    acme, role, key_store, captured, caplog
):
    workflow = _workflow(acme)
    client = acme.client(role)
    canary = _canary()
    _, idem = _form(client, workflow)

    with caplog.at_level(logging.DEBUG):
        response = client.post(
            _url(workflow),
            {
                "idempotency_key": idem,
                "key_sandbox": canary,
                "input": json.dumps({"topic": "BYOK", "audience": "CISOs"}),
            },
        )
    assert response.status_code == 302
    run = Run.objects.get()
    assert response["Location"] == reverse("runs:run-detail", args=["acme", run.pk])
    assert canary not in response["Location"]
    assert run.status == RunStatus.QUEUED
    assert run.input == {"topic": "BYOK", "audience": "CISOs"}
    assert run.triggered_by == f"user:{acme.users[role].username}"
    # the same audit events as the API, by the signed-in member
    events = AuditEvent.objects.filter(tenant=acme.tenant, target=f"run:{run.pk}")
    assert list(events.order_by("seq").values_list("action", flat=True)) == [
        "run.created",
        "key.deposited",
    ]
    assert {e.actor for e in events} == {f"user:{acme.users[role].username}"}
    # the key is in the key store, encrypted: one token, not the plaintext
    tokens = list(key_store.scan_iter(match=KEY_PATTERN))
    assert len(tokens) == 1
    assert canary.encode() not in key_store.get(tokens[0])
    # the run page names it by fingerprint and hint only
    page = client.get(response["Location"])
    html = page.content.decode()
    assert "Run of report queued." in html
    hint = run.key_fingerprints["sandbox"]["hint"]
    assert hint in html
    assert canary not in html
    assert canary not in caplog.text
    assert canary not in captured.getvalue()
    assert canary not in json.dumps([e.metadata for e in AuditEvent.objects.all()])


def test_a_double_submit_makes_one_run(acme, key_store):
    workflow = _workflow(acme)
    client = acme.client(Role.DEVELOPER)
    _, idem = _form(client, workflow)
    data = {"idempotency_key": idem, "key_sandbox": _canary(), "input": INPUT}

    first = client.post(_url(workflow), data)
    second = client.post(_url(workflow), data)

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Run.objects.count() == 1
    assert len(list(key_store.scan_iter(match=KEY_PATTERN))) == 1
    assert AuditEvent.objects.filter(action="key.deposited").count() == 1
    assert "already sent" in client.get(second["Location"]).content.decode()


def test_the_same_form_sent_again_with_other_values_is_refused_with_a_new_form(acme, key_store):
    workflow = _workflow(acme)
    client = acme.client(Role.DEVELOPER)
    _, idem = _form(client, workflow)
    canary = _canary()
    client.post(
        _url(workflow),
        {"idempotency_key": idem, "key_sandbox": canary, "input": INPUT},
    )

    response = client.post(
        _url(workflow),
        {"idempotency_key": idem, "key_sandbox": canary, "input": INPUT.replace("a", "c")},
    )

    assert response.status_code == 409
    html = response.content.decode()
    assert "already sent with other values" in html
    assert canary not in html
    assert idem not in html  # a new idempotency key for the next submit
    assert Run.objects.count() == 1


def test_errors_name_the_field_and_never_echo_a_key(acme, key_store):
    workflow = _workflow(acme)
    client = acme.client(Role.DEVELOPER)
    _, idem = _form(client, workflow)
    canary = _canary()

    # an input the prompts can't use: the key is valid, but typed again
    response = client.post(
        _url(workflow), {"idempotency_key": idem, "key_sandbox": canary, "input": '{"topic": "x"}'}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "audience" in html
    assert canary not in html
    assert re.search(r'<input type="password"[^>]*name="key_sandbox"', html)
    assert "&quot;topic&quot;: &quot;x&quot;" in html  # the input as typed is kept

    # not JSON
    response = client.post(
        _url(workflow), {"idempotency_key": idem, "key_sandbox": canary, "input": "{topic"}
    )
    assert response.status_code == 400
    assert "The input is not valid JSON" in response.content.decode()
    assert canary not in response.content.decode()

    # a malformed key: its rule, not its value
    bad = "bad key with spaces " + canary
    response = client.post(
        _url(workflow),
        {"idempotency_key": idem, "key_sandbox": bad, "input": INPUT},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "The key contains whitespace or control characters." in html
    assert canary not in html

    # a missing key
    response = client.post(_url(workflow), {"idempotency_key": idem, "input": INPUT})
    assert response.status_code == 400
    assert "Enter the Sandbox key." in response.content.decode()

    # the key pasted into the input is refused: it would be stored and sent in a prompt
    response = client.post(
        _url(workflow),
        {
            "idempotency_key": idem,
            "key_sandbox": canary,
            "input": json.dumps({"topic": canary, "audience": "b"}),
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Contains the sandbox key" in html
    assert canary not in html
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []


def test_a_full_queue_is_a_clear_429_and_deposits_nothing(acme, key_store):
    workflow = _workflow(acme)
    acme.tenant.max_queued_runs = 1
    acme.tenant.save()
    client = acme.client(Role.DEVELOPER)
    data = {"key_sandbox": _canary(), "input": INPUT}
    _, first = _form(client, workflow)
    assert client.post(_url(workflow), {**data, "idempotency_key": first}).status_code == 302
    _, second = _form(client, workflow)

    response = client.post(_url(workflow), {**data, "idempotency_key": second})

    assert response.status_code == 429
    assert response["Retry-After"] == "5"
    html = response.content.decode()
    assert "this tenant already has 1 runs waiting for a worker, its limit" in html
    assert "Nothing was sent to the key store." in html
    assert data["key_sandbox"] not in html
    assert Run.objects.count() == 1
    assert len(list(key_store.scan_iter(match=KEY_PATTERN))) == 1


def test_auditors_may_neither_see_the_form_nor_trigger(acme, key_store):
    workflow = _workflow(acme)
    client = acme.client(Role.AUDITOR)
    assert client.get(_url(workflow)).status_code == 403
    response = client.post(
        _url(workflow),
        {"idempotency_key": "x" * 20, "key_sandbox": _canary(), "input": "{}"},
    )
    assert response.status_code == 403
    assert not Run.objects.exists()
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.metadata["reason"] == "role auditor not allowed"


def _queued_run(world) -> Run:
    return world.run()


@pytest.mark.parametrize("role", WRITE)
def test_cancel_asks_first_then_cancels_through_the_api_service(acme, role, key_store):
    run = _queued_run(acme)
    client = acme.client(role)
    detail = client.get(reverse("runs:run-detail", args=["acme", run.pk])).content.decode()
    cancel_url = reverse("runs:run-cancel", args=["acme", run.pk])
    assert f'href="{cancel_url}"' in detail

    confirm = client.get(cancel_url)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert_clean_html(html)
    assert "Its stored keys are deleted from the key store at once." in html
    assert "This cannot be undone" in html
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED  # asking changes nothing

    response = client.post(cancel_url)
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:run-detail", args=["acme", run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    event = AuditEvent.objects.get(tenant=acme.tenant, action="run.cancelled")
    assert event.actor == f"user:{acme.users[role].username}"
    assert event.metadata == {"while": "queued"}
    after = client.get(response["Location"]).content.decode()
    assert "Run cancelled." in after
    assert f'href="{cancel_url}"' not in after  # nothing left to cancel


def test_cancelling_a_running_run_asks_it_to_stop(acme):
    run = _queued_run(acme)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    client = acme.client(Role.DEVELOPER)
    html = client.get(reverse("runs:run-cancel", args=["acme", run.pk])).content.decode()
    assert "Running steps stop" in html
    response = client.post(reverse("runs:run-cancel", args=["acme", run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.cancel_requested_at is not None
    assert AuditEvent.objects.filter(action="run.cancel_requested").count() == 1
    assert "Cancellation requested." in client.get(response["Location"]).content.decode()


def test_a_finished_run_cannot_be_cancelled(acme):
    run = _queued_run(acme)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    client = acme.client(Role.DEVELOPER)
    html = client.get(reverse("runs:run-cancel", args=["acme", run.pk])).content.decode()
    assert "nothing to cancel" in html
    assert 'method="post"' not in html.split("<main", 1)[1]
    response = client.post(reverse("runs:run-cancel", args=["acme", run.pk]))
    assert response.status_code == 302
    assert (
        "The run had already ended (succeeded)."
        in client.get(response["Location"]).content.decode()
    )
    assert not AuditEvent.objects.filter(action__startswith="run.cancel").exists()


def test_auditors_see_no_cancel_button_and_may_not_cancel(acme):
    run = _queued_run(acme)
    client = acme.client(Role.AUDITOR)
    detail = client.get(reverse("runs:run-detail", args=["acme", run.pk])).content.decode()
    assert 'id="run-actions"' not in detail
    assert client.get(reverse("runs:run-cancel", args=["acme", run.pk])).status_code == 403
    assert client.post(reverse("runs:run-cancel", args=["acme", run.pk])).status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_an_error_report_shows_no_typed_key(acme, key_store, settings, monkeypatch, captured):
    """A failure inside the view: the DEBUG error page and the error log hide every POST
    parameter and the frames' key variables, not only what redaction by value finds."""
    from django.test import Client

    from runs import trigger_views

    def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(trigger_views, "run_trigger", broken)
    settings.DEBUG = True
    workflow = _workflow(acme)
    client = Client(raise_request_exception=False)
    client.force_login(acme.users[Role.DEVELOPER])
    _, idem = _form(client, workflow)
    canary = _canary()

    response = client.post(
        _url(workflow), {"idempotency_key": idem, "key_sandbox": canary, "input": INPUT}
    )

    assert response.status_code == 500
    report = response.content.decode()
    assert "the database went away" in report  # the technical page, with its POST section
    assert "key_sandbox" in report
    assert canary not in report
    assert canary not in captured.getvalue()
    assert "the database went away" in captured.getvalue()
