"""Long values on the run page: clipped, the clip stated, the whole a download with the run
page's access rules (auditors get no input, prompts or outputs)."""

import json
import re
import uuid

import pytest
from django.urls import reverse

from runs.content import CELL_CHARS, PAGE_CHARS, clip
from runs.models import Run, RunStatus, StepRun
from swrly.audit.models import AuditEvent
from tenants.models import Role
from tests.pages.conftest import CANARY, make_run

CONTENT_ROLES = [Role.OWNER, Role.ADMIN, Role.DEVELOPER]
KEY_SHAPED = "sk-proj-" + "Z" * 40


def _value_url(run, part: str, slug: str = "acme") -> str:
    return reverse("runs:run-value", args=[slug, run.pk, part])


def _without_csrf(body: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", body)


def _download(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def huge(acme):
    """A run with ~900 KB of input, a 300 KB output and a 50 KB step error."""
    run = make_run(acme, status=RunStatus.FAILED, error_code="provider_error")
    run.input = {"document": "lorem ipsum dolor sit amet\n" * 34_000, "tail": "END-OF-INPUT"}
    run.error_message = "step step1: " + "E" * 20_000 + " END-OF-ERROR"
    run.save(update_fields=["input", "error_message"])
    StepRun.objects.filter(run=run, position=0).update(output_text="o" * 300_000 + "END-OF-OUTPUT")
    StepRun.objects.filter(run=run, position=1).update(error="x" * 50_000 + "END-OF-STEP-ERROR")
    return run


def test_clip_keeps_the_first_characters_and_lines_and_the_total():
    clipped = clip("abc\n" * 10, part="input", chars=100, lines=3)
    assert clipped.text == "abc\nabc\nabc"
    assert (clipped.shown, clipped.total, clipped.truncated) == (11, 40, True)
    whole = clip("short", part="input")
    assert (whole.text, whole.truncated) == ("short", False)
    assert clip("y" * 20_000, part="x").shown == PAGE_CHARS


def test_a_900_kb_input_makes_a_small_page_that_says_what_it_cut(acme, huge):
    assert len(json.dumps(huge.input)) > 900_000
    response = acme.client(Role.OWNER).get(reverse("runs:run-detail", args=["acme", huge.pk]))
    assert response.status_code == 200
    assert len(response.content) < 200_000
    html = response.content.decode()
    assert "END-OF-INPUT" not in html
    assert "END-OF-OUTPUT" not in html
    assert "END-OF-STEP-ERROR" not in html
    assert "END-OF-ERROR" not in html
    total = len(json.dumps(huge.input, indent=2, sort_keys=True, ensure_ascii=False))
    notes = dict(re.findall(r'<p class="clipped muted" data-part="([a-z0-9-]+)">(.*?)</p>', html))
    assert set(notes) == {"input", "step-0-output", "step-1-error", "error"}
    assert "Showing the first" in notes["input"]
    assert f"of {total:,} characters" in notes["input"]
    assert f"Showing the first {CELL_CHARS:,} of 50,017 characters" in notes["step-1-error"]
    assert f'href="{_value_url(huge, "input")}"' in notes["input"]
    assert f'href="{_value_url(huge, "step-0-output")}"' in notes["step-0-output"]


def test_the_download_returns_the_whole_value_as_an_attachment(acme, huge):
    client = acme.client(Role.DEVELOPER)
    response = client.get(_value_url(huge, "input"))
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="run-{huge.pk}-input.json"'
    assert json.loads(_download(response)) == huge.input
    output = client.get(_value_url(huge, "step-0-output"))
    assert output["Content-Type"] == "text/plain; charset=utf-8"
    assert output["Content-Disposition"].startswith("attachment; ")
    assert _download(output) == "o" * 300_000 + "END-OF-OUTPUT"
    assert _download(client.get(_value_url(huge, "step-1-error"))).endswith("END-OF-STEP-ERROR")
    assert _download(client.get(_value_url(huge, "error"))).endswith("END-OF-ERROR")
    prompt = _download(client.get(_value_url(huge, "step-1-prompt")))
    assert prompt == huge.steps[1]["prompt"]
    assert _download(client.get(_value_url(huge, "step-1-system"))) == f"system {CANARY}"


def test_short_values_are_shown_whole_without_a_download_link(acme):
    run = make_run(acme)
    html = acme.client(Role.OWNER).get(reverse("runs:run-detail", args=["acme", run.pk]))
    body = html.content.decode()
    assert f"input {CANARY}" in body
    assert f"output {CANARY}" in body
    assert 'class="clipped' not in body
    assert "/download/" not in body


def test_downloads_are_redacted_like_the_page(acme):
    run = make_run(acme)
    run.input = {"note": f"my key is {KEY_SHAPED}", "pad": "p" * 10_000}
    run.save(update_fields=["input"])
    StepRun.objects.filter(run=run, position=0).update(output_text=f"echo {KEY_SHAPED}")
    client = acme.client(Role.OWNER)
    page = client.get(reverse("runs:run-detail", args=["acme", run.pk])).content.decode()
    for part in ("input", "step-0-output"):
        body = _download(client.get(_value_url(run, part)))
        assert KEY_SHAPED not in body
        assert "[REDACTED]" in body
    assert KEY_SHAPED not in page


@pytest.mark.parametrize("role", CONTENT_ROLES)
@pytest.mark.parametrize("part", ["input", "step-0-output", "step-0-prompt", "step-0-error"])
def test_content_roles_download_every_part(acme, role, part):
    run = make_run(acme)
    assert acme.client(role).get(_value_url(run, part)).status_code == 200


@pytest.mark.parametrize("part", ["input", "step-0-output", "step-0-prompt", "step-0-system"])
def test_auditors_get_no_input_prompts_or_outputs_and_are_audited(acme, part):
    run = make_run(acme)
    response = acme.client(Role.AUDITOR).get(_value_url(run, part))
    assert response.status_code == 403
    assert CANARY not in response.content.decode()
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.target == _value_url(run, part)
    assert denied.actor == f"user:{acme.users[Role.AUDITOR].username}"


def test_auditors_download_error_bodies_as_the_api_shows_them(acme, huge):
    client = acme.client(Role.AUDITOR)
    assert _download(client.get(_value_url(huge, "error"))).endswith("END-OF-ERROR")
    assert _download(client.get(_value_url(huge, "step-1-error"))).endswith("END-OF-STEP-ERROR")
    page = client.get(reverse("runs:run-detail", args=["acme", huge.pk])).content.decode()
    assert len(page) < 200_000
    assert "lorem ipsum" not in page
    assert f'href="{_value_url(huge, "step-1-error")}"' in page
    assert f'href="{_value_url(huge, "input")}"' not in page


def test_downloads_need_a_login(acme):
    from django.test import Client

    response = Client().get(_value_url(make_run(acme), "error"))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("part", ["step-9-output", "step-2-error", "nonsense", "step-0-secret"])
def test_an_unknown_part_or_step_is_404(acme, part):
    run = make_run(acme)
    assert acme.client(Role.OWNER).get(_value_url(run, part)).status_code == 404


def test_another_tenants_run_is_404_like_an_unknown_one(acme, globex):
    foreign = make_run(globex)
    client = acme.client(Role.OWNER)
    response = client.get(_value_url(foreign, "input"))
    assert response.status_code == 404
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.target == f"runs.run:{foreign.pk}"
    unknown = client.get(reverse("runs:run-value", args=["acme", uuid.uuid4(), "input"]))
    assert _without_csrf(unknown.content) == _without_csrf(response.content)
    assert Run.objects.filter(tenant=globex.tenant).count() == 1
