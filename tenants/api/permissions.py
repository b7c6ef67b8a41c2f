"""Role permissions for API views: each view names the roles allowed per HTTP method."""

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from swrly.audit.writer import Actor
from tenants.access import access_denied
from tenants.api.authentication import TokenPrincipal
from tenants.models import READ_ROLES, WRITE_ROLES


class HasTenantRole(permissions.BasePermission):
    """Allow a token whose role is in the view's `read_roles` (safe methods) or `write_roles`.

    Views default to: any role reads, owner/admin/developer write.
    """

    message = "Your API token's role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, TokenPrincipal):
            return False
        if request.method in permissions.SAFE_METHODS:
            allowed = getattr(view, "read_roles", READ_ROLES)
        else:
            allowed = getattr(view, "write_roles", WRITE_ROLES)
        if principal.role in allowed:
            return True
        access_denied(
            tenant=principal.tenant,
            actor=Actor.for_token(principal.token),
            target=request.path,
            reason=f"role {principal.role} not allowed to {request.method}",
            request=request,
        )
        return False
