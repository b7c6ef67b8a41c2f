"""Tenant pages under /t/<tenant-slug>/: home, members, API tokens."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from tenants.access import access_denied, get_for_tenant, membership_for_request, scoped
from tenants.audit import Actor
from tenants.forms import ApiTokenCreateForm, MemberAddForm, MemberRoleForm
from tenants.models import (
    AUDIT_READ_ROLES,
    MANAGE_ROLES,
    READ_ROLES,
    ApiToken,
    AuditEvent,
    Membership,
    Role,
)
from tenants.selectors import memberships_for_user
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
        )
        return render(self.request, template, context)

    def url(self, name: str) -> str:
        return reverse(name, kwargs={"tenant_slug": self.tenant.slug})


class TenantHomeView(TenantPageView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.page(
            "tenants/tenant_home.html",
            member_count=scoped(Membership, self.tenant).count(),
            active_token_count=scoped(ApiToken, self.tenant).filter(revoked_at=None).count(),
            recent_events=scoped(AuditEvent, self.tenant).order_by("-seq")[:10]
            if self.membership.role in AUDIT_READ_ROLES
            else None,
        )


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
                actor=self.actor,
                acting_role=self.membership.role,
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
                membership_change_role(
                    membership=membership,
                    role=form.cleaned_data["role"],
                    actor=self.actor,
                    acting_role=self.membership.role,
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
                actor=self.actor,
                acting_role=self.membership.role,
                request=request,
            )
            messages.success(request, f"Removed {membership.user.get_username()}.")
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
        return redirect(self.url("tenants:member-list"))


class ApiTokenListView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def render_list(self, form: ApiTokenCreateForm, **extra: Any) -> HttpResponse:
        tokens = scoped(ApiToken, self.tenant).select_related("created_by")
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
                actor=self.actor,
                acting_role=self.membership.role,
                created_by=request.user,
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
