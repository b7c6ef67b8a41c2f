"""Identity facts for pages of other apps (the tenant settings page), without those apps
importing swrly.identity: `{% load identity %}{% mfa_required_roles tenant as roles %}`."""

from django import template

from swrly.identity.services import mfa_required_roles as _mfa_required_roles
from tenants.models import Role, Tenant

register = template.Library()


@register.simple_tag
def mfa_required_roles(tenant: Tenant) -> list[str]:
    """The display names of the roles the tenant's MFA policy requires, in role order."""
    required = set(_mfa_required_roles(tenant))
    return [str(role.label) for role in Role if role.value in required]
