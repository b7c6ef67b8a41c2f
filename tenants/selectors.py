"""Reads that are not bound to one tenant (a user's own memberships)."""

from django.contrib.auth.models import AbstractBaseUser

from tenants.models import Membership


def memberships_for_user(user: AbstractBaseUser) -> list[Membership]:
    """The user's memberships across tenants, with each tenant loaded."""
    return list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__slug"))
