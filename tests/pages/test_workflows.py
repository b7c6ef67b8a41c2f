"""The workflow pages: who may do what, the step editor, the API's validation word for word,
the preview, the history, delete with its confirmation, and what auditors never see."""

import html
import json
import re

import pytest
from django.urls import reverse

from runs.models import Run, Workflow
from runs.services import workflow_create, workflow_update
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor
from tenants.models import Role
from tests.pages.conftest import CANARY, assert_clean_html

ALL_ROLES = list(Role)
WRITERS = [Role.OWNER, Role.ADMIN, Role.DEVELOPER]

STEPS = [
    {
        "name": "outline",
        "provider": "sandbox",
        "model": "sandbox-1",
        "system": f"You outline. {CANARY}",
        "prompt": f"Outline {{{{ input.topic }}}} for {{{{ input.who.name }}}}. {CANARY}",
        "max_tokens": 300,
    },
    {
        "name": "draft",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt": "Draft from {{ steps.outline.output }}",
        "temperature": 0.5,
    },
]


@pytest.fixture
def workflow(acme):
    return workflow_create(
        tenant=acme.tenant,
        name="report",
        description="Outline, then draft.",
        steps=STEPS,
        actor=Actor.system("tests"),
    )


def url(name: str, *args) -> str:
    return reverse(f"runs:{name}", args=["acme", *args])


def form_data(name: str, steps: list[dict], description: str = "", **extra) -> dict:
    """The editor's POST body for these steps (as a browser sends the fields: text)."""
    data = {"name": name, "description": description, "steps-count": str(len(steps))}
    for i, step in enumerate(steps):
        for field, value in step.items():
            data[f"steps-{i}-{field}"] = "" if value is None else str(value)
    data.update(extra)
    return data


def page_errors(response) -> list[str]:
    body = response.content.decode()
    block = re.search(
        r'<div class="run-error" role="alert" id="editor-errors">(.*?)</div>', body, re.S
    )
    assert block, "no error list on the page"
    return [html.unescape(m) for m in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def workflow_events(acme, action: str):
    return AuditEvent.objects.filter(tenant=acme.tenant, action=action).order_by("seq")


# --- Who may do what -----------------------------------------------------------------------


def _pages(workflow) -> dict[str, tuple[str, list]]:
    return {
        "list": (url("workflow-list"), ALL_ROLES),
        "detail": (url("workflow-detail", workflow.pk), ALL_ROLES),
        "create": (url("workflow-create"), WRITERS),
        "edit": (url("workflow-edit", workflow.pk), WRITERS),
        "duplicate": (url("workflow-duplicate", workflow.pk), WRITERS),
        "delete": (url("workflow-delete", workflow.pk), WRITERS),
        "preview": (url("workflow-preview", workflow.pk), WRITERS),
    }


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_workflow_page_answers_each_role_as_the_api_does(acme, workflow, role):
    client = acme.client(role)
    for name, (page, allowed) in _pages(workflow).items():
        response = client.get(page)
        assert response.status_code == (200 if role in allowed else 403), (name, role)
        assert_clean_html(response.content.decode())
    # the API agrees: everyone reads, auditors write nothing
    api = acme.api(role)
    assert api.get(reverse("api:workflow-detail", args=[workflow.pk])).status_code == 200
    refused = api.post(reverse("api:workflow-list"), {}, "application/json").status_code == 403
    assert refused == (role == Role.AUDITOR)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("create", form_data("x", STEPS)),
        ("edit", form_data("renamed", STEPS)),
        ("delete", {}),
        ("preview", {"input": "{}"}),
    ],
)
def test_an_auditor_cannot_write_or_preview_and_the_refusal_is_audited(acme, workflow, name, data):
    before = list(Workflow.objects.values_list("pk", "name", "updated_at"))
    page = _pages(workflow)[name][0]

    response = acme.client(Role.AUDITOR).post(page, data)

    assert response.status_code == 403
    assert list(Workflow.objects.values_list("pk", "name", "updated_at")) == before
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.metadata["reason"] == "role auditor not allowed"
    assert denied.target == page


def test_pages_need_a_login(acme, workflow):
    from django.test import Client

    for page, _ in _pages(workflow).values():
        response = Client().get(page)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_every_post_form_on_the_workflow_pages_carries_a_csrf_token(acme, workflow):
    client = acme.client(Role.OWNER)
    forms = 0
    for page, _ in _pages(workflow).values():
        for form in re.findall(r"<form[^>]*>.*?</form>", client.get(page).content.decode(), re.S):
            if 'method="post"' in form:
                assert "csrfmiddlewaretoken" in form, (page, form[:80])
                forms += 1
    assert forms >= 4  # editor (create, edit, duplicate), delete, preview


# --- The canary: auditors never see prompts ------------------------------------------------


def test_auditors_see_steps_without_prompts_exactly_as_the_api_gives_them(acme, workflow):
    client = acme.client(Role.AUDITOR)
    for page in (url("workflow-list"), url("workflow-detail", workflow.pk)):
        body = client.get(page).content.decode()
        assert CANARY not in body, page
        assert "Outline " not in body
    detail = client.get(url("workflow-detail", workflow.pk)).content.decode()
    api_steps = (
        acme.api(Role.AUDITOR).get(reverse("api:workflow-detail", args=[workflow.pk])).json()
    )["steps"]
    assert all("prompt" not in s and "system" not in s for s in api_steps)
    for step in api_steps:  # what the API shows, the page shows
        assert step["name"] in detail
        assert step["model"] in detail
    assert 'id="edit-workflow"' not in detail
    assert 'id="preview-workflow"' not in detail


@pytest.mark.parametrize("role", WRITERS)
def test_writers_see_the_prompts(acme, workflow, role):
    body = acme.client(role).get(url("workflow-detail", workflow.pk)).content.decode()
    assert f"You outline. {CANARY}" in body
    assert "Draft from {{ steps.outline.output }}" in html.unescape(body)
    assert 'id="edit-workflow"' in body


# --- List and detail -------------------------------------------------------------------------


def test_the_list_shows_name_steps_providers_last_change_and_last_run(
    acme, workflow, django_assert_num_queries
):
    never = workflow_create(
        tenant=acme.tenant, name="idle", steps=STEPS[:1], actor=Actor.system("tests")
    )
    runs = [
        Run.objects.create(
            tenant=acme.tenant,
            workflow=workflow,
            workflow_name=workflow.name,
            steps=workflow.steps,
            triggered_by="system:tests",
        )
        for _ in range(2)
    ]
    client = acme.client(Role.AUDITOR)
    client.get(url("workflow-list"))  # the session and membership are warm
    with django_assert_num_queries(5):  # session, user, the MFA policy, membership, the page
        response = client.get(url("workflow-list"))
    body = response.content.decode()
    rows = dict(re.findall(r'<tr data-workflow-id="([^"]+)">(.*?)</tr>', body, re.S))
    assert list(rows) == [str(never.pk), str(workflow.pk)]  # newest first
    report = rows[str(workflow.pk)]
    assert ">report</a>" in report
    assert '<td class="num">2</td>' in report
    assert "openai, sandbox" in report
    assert "by system:tests" in report
    assert reverse("runs:run-detail", args=["acme", runs[-1].pk]) in report
    assert "never run" in rows[str(never.pk)]


def test_the_list_without_workflows_says_how_to_make_one(acme):
    body = acme.client(Role.DEVELOPER).get(url("workflow-list")).content.decode()
    assert "No workflows yet." in body
    assert url("workflow-create") in body
    auditor = acme.client(Role.AUDITOR).get(url("workflow-list")).content.decode()
    assert url("workflow-create") not in auditor


def test_the_detail_shows_the_history_from_the_audit_log(acme, workflow):
    owner = Actor.for_user(acme.users[Role.OWNER])
    workflow_update(workflow=workflow, changes={"name": "report-v2"}, actor=owner)
    body = acme.client(Role.DEVELOPER).get(url("workflow-detail", workflow.pk)).content.decode()
    history = re.search(r'<section id="workflow-history".*?</section>', body, re.S).group(0)
    actions = re.findall(r'data-action="([^"]+)"', history)
    assert actions == ["workflow.updated", "workflow.created"]  # newest first
    assert "workflow changed: name" in history
    assert f"user:{acme.users[Role.OWNER].username}" in history
    assert "system:tests" in history
    # another workflow's events are not in this history
    workflow_create(tenant=acme.tenant, name="other", steps=STEPS, actor=owner)
    again = acme.client(Role.DEVELOPER).get(url("workflow-detail", workflow.pk)).content.decode()
    assert again.count('data-action="workflow.created"') == 1


def test_the_detail_leaves_a_marked_place_for_actions(acme, workflow):
    body = acme.client(Role.DEVELOPER).get(url("workflow-detail", workflow.pk)).content.decode()
    assert '<section id="workflow-actions"' in body


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.AUDITOR])
def test_the_actions_offer_the_run_form_to_those_who_may_trigger_runs(acme, workflow, role):
    body = acme.client(role).get(url("workflow-detail", workflow.pk)).content.decode()
    trigger = reverse("runs:run-trigger", args=["acme", workflow.pk])
    assert (f'href="{trigger}"' in body) is (role != Role.AUDITOR)


# --- The editor: create, validation, step buttons --------------------------------------------


def test_creating_through_the_editor_uses_the_service_and_its_audit_event(acme):
    client = acme.client(Role.DEVELOPER)

    response = client.post(url("workflow-create"), form_data("report", STEPS, "Two steps."))

    workflow = Workflow.objects.get(tenant=acme.tenant)
    assert response.status_code == 302
    assert response["Location"] == url("workflow-detail", workflow.pk)
    api = acme.api(Role.DEVELOPER).post(
        reverse("api:workflow-list"),
        {"name": "report", "description": "Two steps.", "steps": STEPS},
        "application/json",
    )
    assert api.status_code == 201
    assert workflow.steps == api.json()["steps"]  # the same normalized steps as the API makes
    assert workflow.description == "Two steps."
    created = list(workflow_events(acme, "workflow.created"))
    assert created[0].target == f"workflow:{workflow.pk}"
    assert created[0].actor == f"user:{acme.users[Role.DEVELOPER].username}"
    assert (
        created[0].metadata
        == created[1].metadata
        == {
            "name": "report",
            "steps": 2,
            "providers": ["openai", "sandbox"],
        }
    )


BAD_STEPS = [
    {"name": "Outline", "provider": "sandbox", "model": "sandbox-1", "prompt": "Hi {{ user.x }}"},
    {
        "name": "draft",
        "provider": "",
        "model": "",
        "prompt": "From {{ steps.later.output }}",
        "max_tokens": "lots",
        "temperature": "3",
    },
]


def test_the_editors_errors_are_the_apis_word_for_word(acme):
    api = acme.api(Role.DEVELOPER).post(
        reverse("api:workflow-list"),
        {
            "name": "",
            "steps": [
                BAD_STEPS[0],
                {
                    "name": "draft",
                    "model": "",
                    "prompt": "From {{ steps.later.output }}",
                    "max_tokens": "lots",
                    "temperature": 3,
                },
            ],
        },
        "application/json",
    )
    assert api.status_code == 400
    fields = api.json()["error"]["fields"]

    response = acme.client(Role.DEVELOPER).post(url("workflow-create"), form_data("", BAD_STEPS))

    assert response.status_code == 400
    assert not Workflow.objects.exists()
    errors = page_errors(response)
    assert [e for e in errors if e.startswith("steps")] == fields["steps"]
    assert "name: " + fields["name"][0] in errors
    assert "steps[1].prompt: 'steps.later' is not an earlier step" in errors
    assert "steps[1].provider: is required" in errors
    # each message also stands beside its field, in the step it names
    body = html.unescape(response.content.decode())
    step1 = re.search(r'<fieldset class="step has-errors" id="step-1".*?</fieldset>', body, re.S)
    assert "steps[1].max_tokens: an integer from 1 to 100000" in step1.group(0)
    # what was typed is kept
    assert 'value="lots"' in step1.group(0)


def test_the_editor_adds_moves_and_removes_steps_without_saving(acme):
    client = acme.client(Role.DEVELOPER)
    two = form_data("report", STEPS)

    added = client.post(url("workflow-create"), {**two, "op": "add"})
    moved = client.post(url("workflow-create"), {**two, "op": "down-0"})
    removed = client.post(url("workflow-create"), {**two, "op": "remove-0"})

    assert not Workflow.objects.exists()
    assert not workflow_events(acme, "workflow.created").exists()
    assert added.content.decode().count('<fieldset class="step') == 3
    assert 'name="steps-count" value="3"' in added.content.decode()
    order = re.findall(r'name="steps-\d-name" value="([^"]*)"', moved.content.decode())
    assert order == ["draft", "outline"]
    left = re.findall(r'name="steps-\d-name" value="([^"]*)"', removed.content.decode())
    assert left == ["draft"]
    # moving a step ahead of the one it reads is the API's error once saved
    saved = client.post(url("workflow-create"), form_data("report", STEPS[::-1]))
    assert "steps[0].prompt: 'steps.outline' is not an earlier step" in page_errors(saved)


def test_no_more_steps_than_the_api_allows(acme):
    many = [{**STEPS[1], "name": f"s{i}", "prompt": "p"} for i in range(21)]
    response = acme.client(Role.DEVELOPER).post(url("workflow-create"), form_data("x", many))
    assert page_errors(response) == ["steps: at most 20 steps"]
    full = acme.client(Role.DEVELOPER).post(url("workflow-create"), form_data("x", many[:20]))
    assert full.status_code == 302
    editor = acme.client(Role.DEVELOPER).get(url("workflow-edit", Workflow.objects.get().pk))
    assert 'id="add-step"' not in editor.content.decode()


# --- Edit, duplicate, delete -------------------------------------------------------------------


def test_editing_saves_and_audits_only_what_changed(acme, workflow):
    client = acme.client(Role.ADMIN)
    edited = [dict(STEPS[0]), {**STEPS[1], "model": "gpt-4.1"}]

    response = client.post(url("workflow-edit", workflow.pk), form_data("report", edited, "New."))

    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.steps[1]["model"] == "gpt-4.1"
    assert workflow.description == "New."
    assert workflow.updated_by == f"user:{acme.users[Role.ADMIN].username}"
    (updated,) = workflow_events(acme, "workflow.updated")
    assert updated.metadata == {"fields": ["description", "steps"]}

    # saving the same values again writes nothing
    again = client.post(url("workflow-edit", workflow.pk), form_data("report", edited, "New."))
    assert again.status_code == 302
    assert workflow_events(acme, "workflow.updated").count() == 1


def test_the_edit_form_shows_the_workflow_as_saved(acme, workflow):
    body = acme.client(Role.DEVELOPER).get(url("workflow-edit", workflow.pk)).content.decode()
    assert 'name="steps-count" value="2"' in body
    assert 'id="steps-0-max_tokens" name="steps-0-max_tokens" value="300"' in body
    assert 'id="steps-1-temperature" name="steps-1-temperature" value="0.5"' in body
    assert '<option value="openai" selected>' in body


def test_the_stream_checkbox_saves_as_the_apis_boolean_and_shows_as_saved(acme):
    client = acme.client(Role.DEVELOPER)
    data = form_data("report", STEPS)
    data["steps-0-stream"] = "on"  # what a ticked checkbox posts; step 1's is not sent
    assert client.post(url("workflow-create"), data).status_code == 302
    workflow = Workflow.objects.get(tenant=acme.tenant)
    assert [step["stream"] for step in workflow.steps] == [True, False]
    body = client.get(url("workflow-edit", workflow.pk)).content.decode()
    assert 'name="steps-0-stream" value="on" checked>' in body
    assert 'name="steps-1-stream" value="on">' in body
    detail = client.get(url("workflow-detail", workflow.pk)).content.decode()
    assert "<dt>Streamed</dt><dd>yes</dd>" in detail
    assert "<dt>Streamed</dt><dd>no</dd>" in detail


def test_an_edit_with_an_error_changes_nothing(acme, workflow):
    bad = [{**STEPS[0], "name": "Bad Name"}, STEPS[1]]
    response = acme.client(Role.DEVELOPER).post(
        url("workflow-edit", workflow.pk), form_data("report", bad)
    )
    assert response.status_code == 400
    assert "steps[0].name: lower-case letters, digits and _, starting with a letter" in (
        page_errors(response)
    )
    workflow.refresh_from_db()
    assert workflow.steps[0]["name"] == "outline"
    assert not workflow_events(acme, "workflow.updated").exists()


def test_duplicate_opens_the_editor_filled_in_and_saves_a_new_workflow(acme, workflow):
    client = acme.client(Role.DEVELOPER)
    page = client.get(url("workflow-duplicate", workflow.pk)).content.decode()
    assert 'value="Copy of report"' in page
    assert f'action="{url("workflow-create")}"' in page
    assert Workflow.objects.count() == 1  # nothing written yet

    response = client.post(url("workflow-create"), form_data("Copy of report", STEPS))

    copy = Workflow.objects.exclude(pk=workflow.pk).get()
    assert response["Location"] == url("workflow-detail", copy.pk)
    assert copy.steps == workflow.steps
    assert workflow_events(acme, "workflow.created").last().target == f"workflow:{copy.pk}"


def test_delete_asks_first_and_says_what_happens_to_the_runs(acme, workflow):
    run = Run.objects.create(
        tenant=acme.tenant,
        workflow=workflow,
        workflow_name=workflow.name,
        steps=workflow.steps,
        triggered_by="system:tests",
    )
    client = acme.client(Role.DEVELOPER)

    confirm = client.get(url("workflow-delete", workflow.pk)).content.decode()

    assert Workflow.objects.filter(pk=workflow.pk).exists()
    assert "cannot be undone" in confirm
    assert "Its 1 run stays, with the steps it ran" in confirm
    assert "1 of its runs is queued or running" in confirm
    assert 'id="confirm-delete"' in confirm

    response = client.post(url("workflow-delete", workflow.pk))

    assert response["Location"] == url("workflow-list")
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    run.refresh_from_db()
    assert run.workflow_id is None
    assert run.workflow_name == "report"
    assert run.steps == workflow.steps
    (deleted,) = workflow_events(acme, "workflow.deleted")
    assert deleted.metadata == {"name": "report"}
    assert deleted.actor == f"user:{acme.users[Role.DEVELOPER].username}"
    assert client.get(url("workflow-detail", workflow.pk)).status_code == 404


# --- Preview ---------------------------------------------------------------------------------


def test_the_preview_renders_each_step_as_a_run_would(acme, workflow):
    client = acme.client(Role.DEVELOPER)
    form = client.get(url("workflow-preview", workflow.pk)).content.decode()
    # the sample input starts with every input path the templates use
    skeleton = re.search(r'<textarea id="preview-input"[^>]*>(.*?)</textarea>', form, re.S)
    assert json.loads(html.unescape(skeleton.group(1))) == {"topic": "", "who": {"name": ""}}

    sample = {"topic": "BYOK {{ steps.draft.output }}", "who": {"name": "Ada"}}
    response = client.post(url("workflow-preview", workflow.pk), {"input": json.dumps(sample)})

    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    prompts = re.findall(r'<pre class="content preview-prompt">(.*?)</pre>', body, re.S)
    # one substitution pass: a value holding {{ … }} stays literal, as in the executor
    assert prompts == [
        f"Outline BYOK {{{{ steps.draft.output }}}} for Ada. {CANARY}",
        "Draft from [output of steps[0] (outline)]",
    ]
    assert f"You outline. {CANARY}" in body
    assert not AuditEvent.objects.filter(action__startswith="run.").exists()


def test_the_preview_refuses_an_input_as_run_creation_does(acme):
    # providers every platform enables, so that the API reaches its input check
    workflow = workflow_create(
        tenant=acme.tenant,
        name="report",
        steps=[{**STEPS[0], "provider": "anthropic"}, STEPS[1]],
        actor=Actor.system("tests"),
    )
    client = acme.client(Role.DEVELOPER)
    response = client.post(url("workflow-preview", workflow.pk), {"input": '{"topic": "x"}'})
    assert response.status_code == 400
    api = acme.api(Role.DEVELOPER).post(
        reverse("api:run-list"),
        {
            "workflow": str(workflow.pk),
            "input": {"topic": "x"},
            "provider_keys": {"anthropic": "sk-ant-test-1234567890", "openai": "sk-test-123456789"},
        },
        "application/json",
    )
    body = html.unescape(response.content.decode())
    errors = re.findall(r"<li>(.*?)</li>", body.split('id="preview-errors"')[1].split("</div>")[0])
    expected = "steps[0] (outline) prompt uses {{ input.who.name }}, which the input does not have"
    assert errors == [f"input: {expected}"]
    assert api.status_code == 400
    assert api.json()["error"]["fields"] == {"input": [expected]}
    assert not Run.objects.exists()
    invalid = client.post(url("workflow-preview", workflow.pk), {"input": "[1"})
    assert invalid.status_code == 400
    assert "input: not valid JSON" in invalid.content.decode()
    not_object = client.post(url("workflow-preview", workflow.pk), {"input": "[1]"})
    assert "input: the input is a JSON object" in not_object.content.decode()


def test_the_preview_refuses_input_nested_too_deep_without_failing(acme, workflow):
    client = acme.client(Role.DEVELOPER)
    for sample in ("[" * 50_000, '{"a":' * 40 + "1" + "}" * 40):
        response = client.post(url("workflow-preview", workflow.pk), {"input": sample})
        assert response.status_code == 400
        assert "nested deeper than 32 levels" in response.content.decode()
    too_long = client.post(url("workflow-preview", workflow.pk), {"input": " " * 100_001})
    assert "input: at most 100,000 characters of JSON." in too_long.content.decode()
