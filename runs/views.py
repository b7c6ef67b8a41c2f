"""Run pages under /t/<tenant-slug>/runs/: the runs list and one run with its key timeline."""

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from runs.forms import RunFilterForm
from runs.models import Run
from runs.selectors import (
    PAGE_SIZE,
    RunCursor,
    run_for_detail_queryset,
    run_page,
    run_steps,
    workflows_for_filter,
)
from swrly.custody.selectors import run_history
from tenants.access import get_for_tenant
from tenants.models import WRITE_ROLES
from tenants.views import TenantPageView

# Who sees a run's input, its prompts and its outputs: everyone but auditors, who review what
# ran and with which key, never what was said.
CONTENT_ROLES = WRITE_ROLES


class RunListView(TenantPageView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        workflows = workflows_for_filter(tenant=self.tenant)
        form = RunFilterForm(request.GET, workflows=workflows)
        filters = form.filters()
        before = RunCursor.decode(request.GET.get("before", ""))
        page = run_page(tenant=self.tenant, filters=filters, before=before)
        return self.page(
            "runs/run_list.html",
            form=form,
            filters=filters,
            runs=page.runs,
            next_cursor=page.next_cursor,
            paged=before is not None,
            page_size=PAGE_SIZE,
            example_workflow=workflows[0] if workflows else None,
            api_runs_url=request.build_absolute_uri(reverse("api:run-list")),
            api_docs_url=reverse("api:docs"),
        )


class RunDetailView(TenantPageView):
    def get(self, request: HttpRequest, tenant_slug: str, run_id: str) -> HttpResponse:
        include_content = self.membership.role in CONTENT_ROLES
        run = get_for_tenant(
            Run,
            tenant=self.tenant,
            pk=run_id,
            actor=self.actor,
            request=request,
            queryset=run_for_detail_queryset(tenant=self.tenant, include_content=include_content),
        )
        steps = run_steps(tenant=self.tenant, run=run, include_content=include_content)
        history = run_history(
            tenant=self.tenant, run=run, step_providers=[step.provider for step in steps]
        )
        definitions = list(zip(steps, run.steps, strict=False)) if include_content else []
        return self.page(
            "runs/run_detail.html",
            run=run,
            steps=steps,
            history=history,
            include_content=include_content,
            definitions=definitions,
        )
