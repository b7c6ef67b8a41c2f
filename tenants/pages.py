"""The base of every tenant page under /t/<tenant-slug>/ (tenants' own pages and other apps')."""

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from swrly.audit.writer import Actor
from tenants.access import access_denied, membership_for_request
from tenants.authority import Principal
from tenants.models import AUDIT_READ_ROLES, MANAGE_ROLES, READ_ROLES


@method_decorator(never_cache, name="dispatch")
class TenantPageView(LoginRequiredMixin, View):
    """Resolves the tenant and the user's membership before any handler runs.

    A non-member gets the same 404 as an unknown tenant; a member whose role is not in
    `allowed_roles` gets 403. Both refusals are audited.
    """

    allowed_roles: frozenset = READ_ROLES

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.membership = membership_for_request(request=request, slug=kwargs["tenant_slug"])
        self.tenant = self.membership.tenant
        self.actor = Actor.for_user(request.user)
        self.require_roles(self.allowed_roles)
        return super().dispatch(request, *args, **kwargs)

    def require_roles(self, roles: frozenset) -> None:
        """403, audited, unless the member's role is in `roles` (e.g. a stricter POST)."""
        if self.membership.role not in roles:
            access_denied(
                tenant=self.tenant,
                actor=self.actor,
                target=self.request.path,
                reason=f"role {self.membership.role} not allowed",
                request=self.request,
            )
            raise PermissionDenied

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
