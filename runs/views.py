"""Run pages under /t/<tenant-slug>/: the dashboard, the runs list and one run with its key
timeline."""

from datetime import UTC

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from runs.content import (
    CELL_CHARS,
    CELL_LINES,
    PAGE_CHARS,
    PAGE_LINES,
    Clipped,
    Part,
    clip,
    input_text,
    parse_part,
    part_text,
)
from runs.filters import RunFilterSet
from runs.models import Run, RunStatus, StepRun
from runs.selectors import (
    PAGE_SIZE,
    RUN_KEYSET,
    run_for_detail_queryset,
    run_page,
    run_steps,
    runs_needing_attention,
    runs_per_day,
    workflows_for_filter,
)
from swrly.audit.events import key_life_events
from swrly.custody.selectors import key_rotations, run_history
from swrly.web.charts import last_days, stacked_bars
from tenants.access import access_denied, get_for_tenant, scoped
from tenants.models import AUDIT_READ_ROLES, WRITE_ROLES
from tenants.pages import TenantPageView
from tenants.selectors import (
    key_events_per_day,
    recent_audit_events,
    tenant_facts,
)

# Who sees a run's input, its prompts and its outputs: everyone but auditors, who review what
# ran and with which key, never what was said.
CONTENT_ROLES = WRITE_ROLES


DASHBOARD_DAYS = 14
KEY_EVENT_SERIES = [(event.action, event.kind) for event in key_life_events()]


class DashboardView(TenantPageView):
    """The dashboard: runs and key events per day, recent rotations, failed runs."""

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        days = last_days(timezone.now().astimezone(UTC).date(), DASHBOARD_DAYS)
        key_counts = key_events_per_day(tenant=self.tenant, since=days[0])
        known = {action for action, _ in KEY_EVENT_SERIES}
        extra = sorted({action for _, action in key_counts} - known)
        return self.page(
            "runs/dashboard.html",
            **tenant_facts(tenant=self.tenant),
            runs_chart=stacked_bars(
                title="Runs per day by status",
                days=days,
                series=list(RunStatus.choices),
                counts=runs_per_day(tenant=self.tenant, since=days[0]),
                unit="runs",
            ),
            key_chart=stacked_bars(
                title="Key events per day",
                days=days,
                series=KEY_EVENT_SERIES + [(action, action) for action in extra],
                counts=key_counts,
                unit="key events",
            ),
            rotations=key_rotations(tenant=self.tenant, limit=5),
            failed_runs=runs_needing_attention(tenant=self.tenant, limit=10),
            recent_events=recent_audit_events(tenant=self.tenant, limit=10)
            if self.membership.role in AUDIT_READ_ROLES
            else None,
        )


class RunListView(TenantPageView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        workflows = workflows_for_filter(tenant=self.tenant)
        filters = RunFilterSet(
            request.GET, scoped(Run, self.tenant), tenant=self.tenant, workflows=workflows
        )
        cursor = RUN_KEYSET.decode(request.GET.get("before", ""), Run)  # malformed: the newest
        page = run_page(tenant=self.tenant, runs=filters.qs, cursor=cursor)
        return self.page(
            "runs/run_list.html",
            form=filters.form,
            filters=filters,
            runs=page.rows,
            next_cursor=RUN_KEYSET.encode(page.next),
            paged=cursor is not None,
            page_size=PAGE_SIZE,
            example_workflow=workflows[0] if workflows else None,
            api_runs_url=request.build_absolute_uri(reverse("api:run-list")),
            api_docs_url=reverse("api:docs"),
        )


class RunPageView(TenantPageView):
    """A page of one of the tenant's runs: another tenant's run is a 404 (audited)."""

    def tenant_run(self, request: HttpRequest, run_id: str, *, include_content: bool) -> Run:
        return get_for_tenant(
            Run,
            tenant=self.tenant,
            pk=run_id,
            actor=self.actor,
            request=request,
            queryset=run_for_detail_queryset(tenant=self.tenant, include_content=include_content),
        )


class RunDetailView(RunPageView):
    def get(self, request: HttpRequest, tenant_slug: str, run_id: str) -> HttpResponse:
        include_content = self.membership.role in CONTENT_ROLES
        run = self.tenant_run(request, run_id, include_content=include_content)
        steps = run_steps(tenant=self.tenant, run=run, include_content=include_content)
        history = run_history(
            tenant=self.tenant, run=run, step_providers=[step.provider for step in steps]
        )
        return self.page(
            "runs/run_detail.html",
            run=run,
            steps=steps,
            history=history,
            include_content=include_content,
            # The caller's address and user agent come from the audit log: only roles that may
            # read it (the API's audit events) see them.
            show_caller=self.membership.role in AUDIT_READ_ROLES,
            # Trigger and cancel: the roles the API lets POST runs (runs/trigger_views.py).
            can_run=self.membership.role in WRITE_ROLES,
            run_error=clip(
                part_text(run=run, steps=steps, part=Part("error")) or "",
                part="error",
                chars=CELL_CHARS,
                lines=CELL_LINES,
            ),
            step_rows=[
                (
                    step,
                    clip(
                        part_text(run=run, steps=steps, part=Part("error", step.position)) or "",
                        part=Part("error", step.position).name,
                        chars=CELL_CHARS,
                        lines=CELL_LINES,
                    ),
                )
                for step in steps
            ],
            input=clip(input_text(run), part="input") if include_content else None,
            page_chars=f"{PAGE_CHARS:,}",
            page_lines=PAGE_LINES,
            contents=_step_contents(run, steps) if include_content else [],
        )


def _step_contents(run: Run, steps: list[StepRun]) -> list[dict[str, object]]:
    """Per step: its clipped system prompt and prompt (templates) and its output."""
    contents: list[dict[str, object]] = []
    for step in steps:
        values: dict[str, Clipped | None] = {}
        for field in ("system", "prompt", "output"):
            part = Part(field, step.position)
            text = part_text(run=run, steps=steps, part=part)
            values[field] = clip(text, part=part.name) if text else None
        contents.append({"step": step, **values})
    return contents


class RunValueView(RunPageView):
    """One of a run's values whole, as a download: the page shows only its start.

    The run page's rules: auditors get the error bodies but not the input, the prompts or the
    outputs (403, audited), like the API hides them; another tenant's run is a 404.
    """

    def get(self, request: HttpRequest, tenant_slug: str, run_id: str, part: str) -> HttpResponse:
        include_content = self.membership.role in CONTENT_ROLES
        run = self.tenant_run(request, run_id, include_content=include_content)
        wanted = parse_part(part)
        if wanted is None:
            raise Http404
        if wanted.is_content and not include_content:
            access_denied(
                tenant=self.tenant,
                actor=self.actor,
                target=request.path,
                reason=f"role {self.membership.role} may not read run content",
                request=request,
            )
            raise PermissionDenied
        if run.content_purged_at is not None:
            return HttpResponse(
                f"Purged on {run.content_purged_at:%Y-%m-%d %H:%M} UTC by this tenant's "
                "retention period.",
                status=410,
                content_type="text/plain; charset=utf-8",
            )
        steps = (
            run_steps(tenant=self.tenant, run=run, include_content=include_content)
            if wanted.position is not None
            else []
        )
        text = part_text(run=run, steps=steps, part=wanted)
        if text is None:
            raise Http404
        is_json = wanted.field == "input"
        response = HttpResponse(
            text,
            content_type="application/json" if is_json else "text/plain; charset=utf-8",
        )
        filename = f"run-{run.pk}-{wanted.name}.{'json' if is_json else 'txt'}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
