"""Workflows managed in a real browser: the step editor without scripts, the API's validation
message naming the step, the preview, duplicate, and delete after its confirmation."""

import json

from runs.models import Run, Workflow
from swrly.audit.models import AuditEvent
from tenants.models import Role
from tests.browser.conftest import screenshot, sign_in, watch_csp
from tests.pages.conftest import CANARY

PASSWORD = "correct horse battery staple"


def _sign_in(page, live_server, world, role) -> None:
    user = world.users[role]
    user.set_password(PASSWORD)
    user.save()
    sign_in(page, live_server.url, user, PASSWORD)
    page.wait_for_url(f"{live_server.url}/**")


def test_a_developer_creates_previews_duplicates_and_deletes_a_workflow(acme, live_server, page):
    csp = watch_csp(page)
    _sign_in(page, live_server, acme, Role.DEVELOPER)
    page.goto(f"{live_server.url}/t/acme/workflows/")
    assert page.locator('nav a[aria-current="page"]').inner_text() == "Workflows"
    page.click("#new-workflow")

    # given: two steps typed into the editor, the second with a name the API refuses
    page.fill("#wf-name", "report")
    page.fill("#steps-0-name", "outline")
    page.select_option("#steps-0-provider", "sandbox")
    page.fill("#steps-0-model", "sandbox-1")
    page.fill("#steps-0-prompt", "Outline {{ input.topic }}")
    page.click("#add-step")
    assert page.locator("fieldset.step").count() == 2
    assert page.input_value("#steps-0-name") == "outline"  # kept across the round trip
    page.fill("#steps-1-name", "Draft")
    page.select_option("#steps-1-provider", "sandbox")
    page.fill("#steps-1-model", "sandbox-1")
    page.fill("#steps-1-prompt", "Draft from {{ steps.outline.output }}")

    # when: saved
    page.click("#save-workflow")

    # then: the API's message, naming the step and the field, beside the field and in the list
    message = "steps[1].name: lower-case letters, digits and _, starting with a letter"
    assert message in page.locator("#editor-errors").inner_text()
    assert message in page.locator("#step-1 .field-error").inner_text()
    assert not Workflow.objects.exists()
    screenshot(page, "workflow-editor")

    # fixed and saved: the workflow's page, with its history
    page.fill("#steps-1-name", "draft")
    page.click("#save-workflow")
    page.wait_for_selector("#workflow-facts")
    workflow = Workflow.objects.get(tenant=acme.tenant)
    assert [s["name"] for s in workflow.steps] == ["outline", "draft"]
    history = page.locator("#workflow-history").inner_text()
    assert "workflow “report” created, 2 step(s) using sandbox" in history
    assert f"user:{acme.users[Role.DEVELOPER].username}" in history
    screenshot(page, "workflow-detail")

    # preview: the rendered prompts for a typed sample input
    page.click("#preview-workflow")
    assert json.loads(page.input_value("#preview-input")) == {"topic": ""}
    page.fill("#preview-input", json.dumps({"topic": "key custody"}))
    page.click("#preview-button")
    prompts = page.locator("pre.preview-prompt").all_inner_texts()
    assert prompts == ["Outline key custody", "Draft from [output of steps[0] (outline)]"]
    screenshot(page, "workflow-preview")

    # duplicate: the editor filled in; saving makes a second workflow
    page.goto(f"{live_server.url}/t/acme/workflows/{workflow.pk}/")
    page.click("#duplicate-workflow")
    assert page.input_value("#wf-name") == "Copy of report"
    page.click("#save-workflow")
    page.wait_for_selector("#workflow-facts")
    copy = Workflow.objects.exclude(pk=workflow.pk).get()
    assert copy.steps == workflow.steps

    # delete: a confirmation stating the consequence first, then the workflow is gone
    page.click("#delete-workflow")
    consequence = page.locator("#delete-consequence").inner_text()
    assert "cannot be undone" in consequence
    assert "It has no runs." in consequence
    assert Workflow.objects.filter(pk=copy.pk).exists()
    screenshot(page, "workflow-delete")
    page.click("#confirm-delete")
    page.wait_for_url(f"{live_server.url}/t/acme/workflows/")
    assert "Deleted the workflow Copy of report." in page.locator(".messages").inner_text()
    assert not Workflow.objects.filter(pk=copy.pk).exists()
    assert page.locator("#workflows tbody tr").count() == 1
    screenshot(page, "workflows")

    actions = list(
        AuditEvent.objects.filter(tenant=acme.tenant, action__startswith="workflow.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["workflow.created", "workflow.created", "workflow.deleted"]
    assert csp == []


def test_the_editor_moves_and_removes_steps_without_a_script(acme, live_server, page_factory):
    page = page_factory()
    _sign_in(page, live_server, acme, Role.OWNER)
    page.goto(f"{live_server.url}/t/acme/workflows/new/")
    page.fill("#steps-0-name", "first")
    page.click("#add-step")
    page.fill("#steps-1-name", "second")
    page.click("#add-step")
    page.fill("#steps-2-name", "third")

    page.click('#step-2 button[value="up-2"]')
    assert [page.input_value(f"#steps-{i}-name") for i in range(3)] == ["first", "third", "second"]
    page.click('#step-0 button[value="remove-0"]')
    assert [page.input_value(f"#steps-{i}-name") for i in range(2)] == ["third", "second"]
    assert not Workflow.objects.exists()  # nothing saved by the buttons


def test_an_auditor_reads_workflows_without_their_prompts(acme, live_server, page):
    workflow = acme.workflow()
    workflow.steps = [{**workflow.steps[0], "prompt": f"Hi {CANARY}"}]
    workflow.save()
    Run.objects.create(
        tenant=acme.tenant,
        workflow=workflow,
        workflow_name=workflow.name,
        steps=workflow.steps,
        triggered_by="system:tests",
    )
    _sign_in(page, live_server, acme, Role.AUDITOR)
    for path in ("/t/acme/workflows/", f"/t/acme/workflows/{workflow.pk}/"):
        page.goto(live_server.url + path)
        assert CANARY not in page.content()
    assert page.locator("#edit-workflow").count() == 0
    response = page.goto(f"{live_server.url}/t/acme/workflows/{workflow.pk}/preview/")
    assert response.status == 403


def test_the_workflow_pages_fit_a_narrow_screen(acme, live_server, page_factory):
    workflow = acme.workflow()
    page = page_factory(390, 844)
    _sign_in(page, live_server, acme, Role.DEVELOPER)
    for path in ("", f"{workflow.pk}/", "new/", f"{workflow.pk}/edit/", f"{workflow.pk}/delete/"):
        page.goto(f"{live_server.url}/t/acme/workflows/{path}")
        sideways = page.evaluate("() => document.documentElement.scrollWidth")
        assert sideways <= 390, (path, sideways)
