"""Tenant pages under /t/<tenant-slug>/: audit log, members, tokens."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import redirect, render
from django.urls import reverse_lazy

from swrly.audit.events import action_filter_choices
from swrly.audit.export import audit_export
from swrly.audit.models import AuditEvent
from swrly.audit.summary import summarize
from swrly.web.wording import sentence
from tenants.access import get_for_tenant, scoped
from tenants.filters import AuditFilterSet
from tenants.forms import (
    ApiTokenCreateForm,
    MemberAddForm,
    MemberRoleForm,
)
from tenants.models import (
    AUDIT_READ_ROLES,
    MANAGE_ROLES,
    OWNER_ROLES,
    ApiToken,
    Membership,
    Role,
)
from tenants.pages import TenantPageView
from tenants.selectors import (
    AUDIT_KEYSET,
    audit_chain_status,
    audit_event_page,
    audit_events,
    locked_out_members,
    memberships_for_user,
)
from tenants.services import (
    api_token_create,
    api_token_revoke,
    membership_change_role,
    membership_remove,
    membership_unlock,
)
from tenants.signals import audit_user_event


class AuditListView(TenantPageView):
    allowed_roles = AUDIT_READ_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        filters = AuditFilterSet(request.GET, audit_events(tenant=self.tenant), tenant=self.tenant)
        cursor = AUDIT_KEYSET.decode(
            request.GET.get("before", ""), AuditEvent
        )  # malformed: the newest
        page = audit_event_page(events=filters.qs, cursor=cursor)
        return self.page(
            "tenants/audit_list.html",
            form=filters.form,
            filters=filters,
            events=page.rows,
            rows=[(event, summarize(event.action, event.metadata)) for event in page.rows],
            next_before=AUDIT_KEYSET.encode(page.next),
            paged=cursor is not None,
            chain=audit_chain_status(tenant=self.tenant),
            action_suggestions=action_filter_choices(),
        )


class AuditExportView(TenantPageView):
    """The filtered audit events as a streamed download (swrly.audit.export)."""

    allowed_roles = AUDIT_READ_ROLES
    export_format = "csv"

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponseBase:
        filters = AuditFilterSet(request.GET, audit_events(tenant=self.tenant), tenant=self.tenant)
        if not filters.is_valid():
            errors = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in filters.errors.items())
            return HttpResponseBadRequest(f"Invalid filters, nothing exported. {errors}")
        return audit_export(
            tenant=self.tenant,
            events=filters.qs,
            export_format=self.export_format,
            filters=filters.as_metadata(),
            actor=self.actor,
            request=request,
        )


class MemberListView(TenantPageView):
    """The members; owners and admins invite new ones (swrly.identity handles the form)."""

    def render_list(self, add_form: MemberAddForm, **extra: Any) -> HttpResponse:
        return self.page(
            "tenants/member_list.html",
            members=scoped(Membership, self.tenant).select_related("user"),
            add_form=add_form,
            role_choices=Role.choices,
            # Who is locked out of sign-in, and the button to lift it: owners only.
            lockouts=locked_out_members(tenant=self.tenant)
            if self.membership.role in OWNER_ROLES
            else None,
            **extra,
        )

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(MemberAddForm())


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
                messages.error(request, sentence(exc.messages[0]))
        return redirect(self.url("tenants:member-list"))


def _member(view: TenantPageView, request: HttpRequest, membership_id: str) -> Membership:
    """The tenant's membership with this id, with its user; 404 for another tenant's."""
    return get_for_tenant(
        Membership,
        tenant=view.tenant,
        pk=membership_id,
        actor=view.actor,
        request=request,
        queryset=scoped(Membership, view.tenant).select_related("user"),
    )


class MemberRemoveView(TenantPageView):
    """GET: what removing the member does, and a button (works without JavaScript). POST:
    `membership_remove`."""

    allowed_roles = MANAGE_ROLES

    def get(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        membership = _member(self, request, membership_id)
        return self.page(
            "tenants/member_remove.html",
            member=membership,
            is_self=membership.user_id == request.user.pk,
            active_tokens=scoped(ApiToken, self.tenant)
            .filter(created_by_id=membership.user_id, revoked_at=None)
            .count(),
        )

    def post(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        membership = _member(self, request, membership_id)
        try:
            membership_remove(
                membership=membership,
                by=self.by,
                request=request,
            )
            messages.success(request, f"Removed {membership.user.get_username()}.")
        except ValidationError as exc:
            messages.error(request, sentence(exc.messages[0]))
        return redirect(self.url("tenants:member-list"))


class MemberUnlockView(TenantPageView):
    """POST: lift a member's sign-in lockout (`membership_unlock`, audited). Owners only."""

    allowed_roles = OWNER_ROLES

    def get(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        return redirect(self.url("tenants:member-list"))

    def post(self, request: HttpRequest, tenant_slug: str, membership_id: str) -> HttpResponse:
        membership = _member(self, request, membership_id)
        name = membership.user.get_username()
        try:
            cleared = membership_unlock(membership=membership, by=self.by, request=request)
        except ValidationError as exc:
            messages.error(request, sentence(exc.messages[0]))
        else:
            if cleared:
                messages.success(request, f"Unlocked {name}: they can sign in again.")
            else:
                messages.info(request, f"{name} was not locked out.")
        return redirect(self.url("tenants:member-list"))


class ApiTokenListView(TenantPageView):
    """The token inventory: owners and admins manage it, auditors read it (never a secret)."""

    allowed_roles = AUDIT_READ_ROLES

    def render_list(self, form: ApiTokenCreateForm, **extra: Any) -> HttpResponse:
        tokens = scoped(ApiToken, self.tenant).select_related("created_by", "created_by_token")
        return self.page("tenants/apitoken_list.html", tokens=tokens, form=form, **extra)

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(ApiTokenCreateForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        self.require_roles(MANAGE_ROLES)
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
            form.add_error(None, [sentence(message) for message in exc.messages])
            return self.render_list(form)
        # Shown in this response only; never stored, never put in the session.
        return self.render_list(ApiTokenCreateForm(), new_token=token, new_secret=secret)


class ApiTokenRevokeView(TenantPageView):
    """GET: what revoking the token does, and a button (works without JavaScript). POST:
    `api_token_revoke`."""

    allowed_roles = MANAGE_ROLES

    def token(self, request: HttpRequest, token_id: str) -> ApiToken:
        return get_for_tenant(
            ApiToken, tenant=self.tenant, pk=token_id, actor=self.actor, request=request
        )

    def get(self, request: HttpRequest, tenant_slug: str, token_id: str) -> HttpResponse:
        token = self.token(request, token_id)
        return self.page(
            "tenants/apitoken_revoke.html",
            token=token,
            derived=scoped(ApiToken, self.tenant)
            .filter(created_by_token=token, revoked_at=None)
            .count(),
        )

    def post(self, request: HttpRequest, tenant_slug: str, token_id: str) -> HttpResponse:
        token = self.token(request, token_id)
        api_token_revoke(token=token, actor=self.actor, request=request)
        messages.success(request, f"Revoked the API token {token.name}.")
        return HttpResponseRedirect(self.url("tenants:apitoken-list"))


def home(request: HttpRequest) -> HttpResponse:
    """The signed-in user's tenants; straight to the tenant when there is only one."""
    if not request.user.is_authenticated:
        return redirect("login")
    memberships = memberships_for_user(request.user)
    if len(memberships) == 1:
        return redirect("runs:dashboard", tenant_slug=memberships[0].tenant.slug)
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
