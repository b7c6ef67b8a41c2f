"""Workflow pages under /t/<tenant-slug>/workflows/: list, detail with history, the step editor
(create, edit, duplicate), delete with a confirmation, and a preview of the rendered prompts.

The API's rules, through the API's own parts: WorkflowSerializer validates (runs.workflow_forms),
the services write and audit (workflow_create / workflow_update / workflow_delete), and
auditors read what the API gives them: no `system`, no `prompt`, no preview.
"""

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from runs.api.serializers import visible_steps
from runs.content import PAGE_CHARS, PAGE_LINES, clip
from runs.models import Run, RunStatus, Workflow
from runs.selectors import (
    PAGE_SIZE,
    WORKFLOW_KEYSET,
    workflow_history,
    workflow_page,
)
from runs.services import workflow_create, workflow_delete, workflow_update
from runs.workflow_forms import WorkflowEditor
from runs.workflow_spec import SpecError, input_skeleton, preview
from swrly.audit.summary import summarize
from swrly.input_limits import MAX_JSON_DEPTH, TooDeep, unstorable_paths
from tenants.access import get_for_tenant, scoped
from tenants.models import WRITE_ROLES
from tenants.pages import TenantPageView

# Longest sample input a preview accepts (characters of JSON): a preview is for trying a
# template, and every rendered prompt is shown, each cut to PAGE_CHARS.
PREVIEW_INPUT_CHARS = 100_000
COPY_PREFIX = "Copy of "
NAME_MAX = Workflow._meta.get_field("name").max_length or 200


class WorkflowPageView(TenantPageView):
    """A page of one of the tenant's workflows: another tenant's is a 404 (audited)."""

    def tenant_workflow(self, workflow_id: str) -> Workflow:
        return get_for_tenant(
            Workflow, tenant=self.tenant, pk=workflow_id, actor=self.actor, request=self.request
        )

    def detail_url(self, workflow: Workflow) -> str:
        return reverse("runs:workflow-detail", args=[self.tenant.slug, workflow.pk])


class WorkflowListView(TenantPageView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        cursor = WORKFLOW_KEYSET.decode(request.GET.get("before", ""), Workflow)
        page = workflow_page(tenant=self.tenant, cursor=cursor)
        return self.page(
            "workflows/workflow_list.html",
            workflows=page.rows,
            next_cursor=WORKFLOW_KEYSET.encode(page.next),
            paged=cursor is not None,
            page_size=PAGE_SIZE,
            can_write=self.membership.role in WRITE_ROLES,
        )


class WorkflowDetailView(WorkflowPageView):
    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        can_write = self.membership.role in WRITE_ROLES
        return self.page(
            "workflows/workflow_detail.html",
            workflow=workflow,
            steps=visible_steps(workflow.steps, role=self.membership.role),
            can_write=can_write,
            run_count=scoped(Run, self.tenant).filter(workflow=workflow).count(),
            history=[
                (event, summarize(event.action, event.metadata))
                for event in workflow_history(tenant=self.tenant, workflow=workflow)
            ],
        )


class WorkflowEditorView(WorkflowPageView):
    """The step editor's round trip: the buttons change the steps, "Save" validates and writes."""

    allowed_roles = WRITE_ROLES

    def editor_page(
        self, editor: WorkflowEditor, *, workflow: Workflow | None, status: int = 200
    ) -> HttpResponse:
        response = self.page(
            "workflows/workflow_form.html",
            editor=editor,
            workflow=workflow,
            action=self.request.path if workflow is not None else self.url("runs:workflow-create"),
        )
        response.status_code = status
        return response

    def save(self, editor: WorkflowEditor, workflow: Workflow | None) -> HttpResponse:
        changes = editor.validate(self.request, workflow=workflow)
        if changes is None:
            return self.editor_page(editor, workflow=workflow, status=400)
        try:
            if workflow is None:
                saved = workflow_create(
                    tenant=self.tenant, actor=self.actor, request=self.request, **changes
                )
                messages.success(self.request, f"Created the workflow {saved.name}.")
            elif changes:
                saved = workflow_update(
                    workflow=workflow, changes=changes, actor=self.actor, request=self.request
                )
                messages.success(self.request, f"Saved {', '.join(sorted(changes))}.")
            else:
                saved = workflow
                messages.info(self.request, "Nothing changed; nothing was saved.")
        except SpecError as exc:  # a service's refusal, worded as the API words it under `steps`
            editor.record_errors(
                {"steps": [f"{k}: {'; '.join(ms)}" for k, ms in exc.errors.items()]}
            )
            return self.editor_page(editor, workflow=workflow, status=400)
        return HttpResponseRedirect(self.detail_url(saved))

    def handle(self, workflow: Workflow | None) -> HttpResponse:
        editor = WorkflowEditor.from_post(self.request.POST)
        if editor.apply(self.request.POST.get("op", "")):
            return self.editor_page(editor, workflow=workflow)  # not saved: still editing
        return self.save(editor, workflow)


class WorkflowCreateView(WorkflowEditorView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.editor_page(WorkflowEditor.new(), workflow=None)

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.handle(None)


class WorkflowEditView(WorkflowEditorView):
    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        return self.editor_page(WorkflowEditor.for_workflow(workflow), workflow=workflow)

    def post(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        return self.handle(self.tenant_workflow(workflow_id))


class WorkflowDuplicateView(WorkflowEditorView):
    """The editor for a new workflow, filled in from an existing one; nothing is written until
    it is saved (then as any new workflow: `workflow.created`)."""

    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        source = self.tenant_workflow(workflow_id)
        name = (COPY_PREFIX + source.name)[:NAME_MAX]
        return self.editor_page(WorkflowEditor.for_workflow(source, name=name), workflow=None)


class WorkflowDeleteView(WorkflowPageView):
    """A confirmation stating what happens to the runs, then the API's delete."""

    allowed_roles = WRITE_ROLES

    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        runs = scoped(Run, self.tenant).filter(workflow=workflow)
        return self.page(
            "workflows/workflow_confirm_delete.html",
            workflow=workflow,
            run_count=runs.count(),
            unfinished_count=runs.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count(),
        )

    def post(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        name = workflow.name
        workflow_delete(workflow=workflow, actor=self.actor, request=request)
        messages.success(
            request, f"Deleted the workflow {name}. Its runs keep their steps and history."
        )
        return HttpResponseRedirect(self.url("runs:workflow-list"))


class WorkflowPreviewView(WorkflowPageView):
    """Each step's prompts rendered for a sample input, as a run would render them.

    Prompts are content: auditors get a 403 (audited), as they get no prompts from the API.
    Nothing is stored and no provider is called; the sample input travels in a POST body so
    that it never lands in a URL or an access log.
    """

    allowed_roles = WRITE_ROLES

    def render_preview(self, workflow: Workflow, sample: str, **extra: Any) -> HttpResponse:
        return self.page(
            "workflows/workflow_preview.html",
            workflow=workflow,
            sample_input=sample,
            page_chars=f"{PAGE_CHARS:,}",
            page_lines=PAGE_LINES,
            **extra,
        )

    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        return self.render_preview(workflow, _pretty(input_skeleton(workflow.steps)))

    def post(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.tenant_workflow(workflow_id)
        sample = request.POST.get("input", "")
        errors: list[str] = []
        previews = None
        if len(sample) > PREVIEW_INPUT_CHARS:
            errors.append(f"input: at most {PREVIEW_INPUT_CHARS:,} characters of JSON.")
        else:
            try:
                run_input = json.loads(sample) if sample.strip() else {}
                unstorable_paths(run_input)  # TooDeep past the API's nesting limit
            except TooDeep as exc:
                errors.append(f"input: {exc}.")
            except RecursionError:
                errors.append(f"input: nested deeper than {MAX_JSON_DEPTH} levels.")
            except ValueError as exc:
                errors.append(f"input: not valid JSON ({exc}).")
            else:
                try:
                    previews = preview(workflow.steps, run_input)
                except SpecError as exc:
                    errors = [f"{k}: {m}" for k, ms in exc.errors.items() for m in ms]
        rendered = [
            {
                "step": step,
                "system": clip(step.system, part=f"step-{step.position}-system")
                if step.system
                else None,
                "prompt": clip(step.prompt, part=f"step-{step.position}-prompt"),
            }
            for step in previews or []
        ]
        response = self.render_preview(workflow, sample, errors=errors, previews=rendered)
        if errors:
            response.status_code = 400
        return response


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
