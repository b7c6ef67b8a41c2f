"""Tenant pages under /t/<tenant-slug>/: dashboard, audit log, members, tokens."""

from datetime import UTC
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from runs.models import RunStatus
from runs.selectors import (
    runs_needing_attention,
    runs_per_day,
)
from swrly.charts import last_days, stacked_bars
from swrly.custody.selectors import key_rotations
from tenants.access import access_denied, get_for_tenant, membership_for_request, scoped
from tenants.audit import Actor, audit_record
from tenants.audit_export import csv_lines, jsonl_lines
from tenants.authority import Principal
from tenants.forms import (
    ACTION_SUGGESTIONS,
    ApiTokenCreateForm,
    AuditFilterForm,
    MemberAddForm,
    MemberRoleForm,
)
from tenants.models import (
    AUDIT_READ_ROLES,
    MANAGE_ROLES,
    READ_ROLES,
    ApiToken,
    Membership,
    Role,
)
from tenants.selectors import (
    audit_chain_status,
    audit_event_page,
    audit_events_filtered,
    key_events_per_day,
    memberships_for_user,
    recent_audit_events,
    tenant_facts,
)
from tenants.services import (
    api_token_create,
    api_token_revoke,
    membership_add,
    membership_change_role,
    membership_remove,
)
from tenants.signals import audit_user_event


@method_decorator(never_cache, name="dispatch")
class TenantPageView(LoginRequiredMixin, View):
    """Resolves the tenant and the user's membership before any handler runs.

    A non-member gets the same 404 as an unknown tenant; a member whose role is not in
    `allowed_roles` gets 403. Both refusals are audited.
    """

    allowed_roles: frozenset = READ_ROLES

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.membership = membership_for_request(request=request, slug=kwargs["tenant_slug"])
        self.tenant = self.membership.tenant
        self.actor = Actor.for_user(request.user)
        if self.membership.role not in self.allowed_roles:
            access_denied(
                tenant=self.tenant,
                actor=self.actor,
                target=request.path,
                reason=f"role {self.membership.role} not allowed",
                request=request,
            )
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def page(self, template: str, **context: Any) -> HttpResponse:
        context.update(
            tenant=self.tenant,
            membership=self.membership,
            can_manage=self.membership.role in MANAGE_ROLES,
            can_read_audit=self.membership.role in AUDIT_READ_ROLES,
        )
        return render(self.request, template, context)

    @property
    def by(self) -> Principal:
        """The signed-in member as services check their authority."""
        return Principal.member(self.membership, user=self.request.user)

    def url(self, name: str) -> str:
        return reverse(name, kwargs={"tenant_slug": self.tenant.slug})


DASHBOARD_DAYS = 14
KEY_EVENT_SERIES = [
    ("key.deposited", "deposited"),
    ("key.consumed", "consumed"),
    ("key.discarded", "discarded"),
    ("key.expired", "expired"),
    ("key.missing", "missing"),
    ("key.rejected", "rejected"),
    ("key.rewrapped", "rewrapped"),
]


class TenantHomeView(TenantPageView):
    """The dashboard: runs and key events per day, recent rotations, failed runs."""

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        days = last_days(timezone.now().astimezone(UTC).date(), DASHBOARD_DAYS)
        key_counts = key_events_per_day(tenant=self.tenant, since=days[0])
        known = {action for action, _ in KEY_EVENT_SERIES}
        extra = sorted({action for _, action in key_counts} - known)
        return self.page(
            "tenants/tenant_home.html",
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


def _seq(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


class AuditListView(TenantPageView):
    allowed_roles = AUDIT_READ_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = AuditFilterForm(request.GET)
        filters = form.filters()
        before = _seq(request.GET.get("before"))
        page = audit_event_page(tenant=self.tenant, filters=filters, before=before)
        return self.page(
            "tenants/audit_list.html",
            form=form,
            filters=filters,
            events=page.events,
            next_before=page.next_before,
            paged=before is not None,
            chain=audit_chain_status(tenant=self.tenant),
            action_suggestions=ACTION_SUGGESTIONS,
        )


class AuditExportView(TenantPageView):
    """The filtered audit events as a streamed download; the export is itself audited.

    It holds the events recorded before its own `audit.exported` event, oldest first.
    """

    allowed_roles = AUDIT_READ_ROLES
    formats = {
        "csv": ("text/csv; charset=utf-8", csv_lines),
        "jsonl": ("application/jsonl; charset=utf-8", jsonl_lines),
    }
    export_format = "csv"

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = AuditFilterForm(request.GET)
        if not form.is_valid():
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
            return HttpResponseBadRequest(f"Invalid filters, nothing exported. {errors}")
        filters = form.filters()
        content_type, lines = self.formats[self.export_format]
        with transaction.atomic():
            exported = audit_record(
                tenant=self.tenant,
                action="audit.exported",
                actor=self.actor,
                target=f"audit:{self.export_format}",
                metadata={"format": self.export_format, "filters": filters.as_metadata()},
                request=request,
            )
        events = (
            audit_events_filtered(tenant=self.tenant, filters=filters)
            .filter(seq__lt=exported.seq)
            .order_by("seq")
            .iterator(chunk_size=2000)
        )
        response = StreamingHttpResponse(lines(events), content_type=content_type)
        stamp = exported.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        filename = f"swrly-audit-{self.tenant.slug}-{stamp}.{self.export_format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class MemberListView(TenantPageView):
    def render_list(self, add_form: MemberAddForm, **extra: Any) -> HttpResponse:
        return self.page(
            "tenants/member_list.html",
            members=scoped(Membership, self.tenant).select_related("user"),
            add_form=add_form,
            role_choices=Role.choices,
            **extra,
        )

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(MemberAddForm())


class MemberAddView(MemberListView):
    allowed_roles = MANAGE_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return redirect(self.url("tenants:member-list"))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = MemberAddForm(request.POST)
        if not form.is_valid():
            return self.render_list(form)
        try:
            membership, password = membership_add(
                tenant=self.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                by=self.by,
                request=request,
            )
        except ValidationError as exc:
            form.add_error("email", exc)
            return self.render_list(form)
        if password is None:
            messages.success(request, f"Added {membership.user.get_username()}.")
            return redirect(self.url("tenants:member-list"))
        # A new user's one-time password is shown in this response only.
        return self.render_list(
            MemberAddForm(), new_user=membership.user, one_time_password=password
        )


class MemberRoleView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        membership = get_for_tenant(
            Membership, tenant=self.tenant, pk=membership_id, actor=self.actor, request=request
        )
        form = MemberRoleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose a valid role.")
        else:
            try:
                membership = membership_change_role(
                    membership=membership,
                    role=form.cleaned_data["role"],
                    by=self.by,
                    request=request,
                )
                messages.success(
                    request, f"{membership.user.get_username()} is now {membership.role}."
                )
            except ValidationError as exc:
                messages.error(request, exc.messages[0])
        return redirect(self.url("tenants:member-list"))


class MemberRemoveView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        membership = get_for_tenant(
            Membership, tenant=self.tenant, pk=membership_id, actor=self.actor, request=request
        )
        try:
            membership_remove(
                membership=membership,
                by=self.by,
                request=request,
            )
            messages.success(request, f"Removed {membership.user.get_username()}.")
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
        return redirect(self.url("tenants:member-list"))


class ApiTokenListView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def render_list(self, form: ApiTokenCreateForm, **extra: Any) -> HttpResponse:
        tokens = scoped(ApiToken, self.tenant).select_related("created_by", "created_by_token")
        return self.page("tenants/apitoken_list.html", tokens=tokens, form=form, **extra)

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(ApiTokenCreateForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = ApiTokenCreateForm(request.POST)
        if not form.is_valid():
            return self.render_list(form)
        try:
            token, secret = api_token_create(
                tenant=self.tenant,
                name=form.cleaned_data["name"],
                role=form.cleaned_data["role"],
                by=self.by,
                request=request,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
            return self.render_list(form)
        # Shown in this response only; never stored, never put in the session.
        return self.render_list(ApiTokenCreateForm(), new_token=token, new_secret=secret)


class ApiTokenRevokeView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, token_id: str) -> HttpResponse:
        token = get_for_tenant(
            ApiToken, tenant=self.tenant, pk=token_id, actor=self.actor, request=request
        )
        api_token_revoke(token=token, actor=self.actor, request=request)
        messages.success(request, f"Revoked {token.name}.")
        return HttpResponseRedirect(self.url("tenants:apitoken-list"))


def home(request: HttpRequest) -> HttpResponse:
    """The signed-in user's tenants; straight to the tenant when there is only one."""
    if not request.user.is_authenticated:
        return redirect("login")
    memberships = memberships_for_user(request.user)
    if len(memberships) == 1:
        return redirect("tenants:home", tenant_slug=memberships[0].tenant.slug)
    return render(request, "tenants/tenant_list.html", {"memberships": memberships})


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change, audited in each of the user's tenants."""

    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form: Any) -> HttpResponse:
        with transaction.atomic():
            response = super().form_valid(form)
            audit_user_event(
                action="auth.password_changed", user=self.request.user, request=self.request
            )
        messages.success(self.request, "Your password was changed.")
        return response
