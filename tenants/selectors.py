"""Reads that come before a tenant is known: a user's memberships, a presented API token."""

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from tenants.models import ApiToken, Membership
from tenants.tokens import token_matches, token_prefix


def memberships_for_user(user: AbstractBaseUser) -> list[Membership]:
    """The user's memberships across tenants, with each tenant loaded."""
    return list(
        Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__slug")
    )


def api_token_for_secret(presented: str) -> ApiToken | None:
    """The token this secret belongs to (revoked or not), or None.

    The tenant comes from the token; the caller refuses a revoked one.
    """
    prefix = token_prefix(presented)
    if prefix is None:
        return None
    token = ApiToken.objects.select_related("tenant").filter(prefix=prefix).first()
    if token is None or not token_matches(presented, token.digest):
        return None
    return token


def api_token_mark_used(token: ApiToken) -> None:
    """Record the token's last use."""
    token.last_used_at = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at)
