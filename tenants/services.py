"""Writes to tenants, memberships and API tokens, each with its audit event, atomically."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from tenants.audit import Actor, audit_record
from tenants.models import ApiToken, Membership, Role, Tenant
from tenants.tokens import token_generate


class LastOwnerError(ValidationError):
    """The change would leave the tenant without an owner."""


def _one_time_password() -> str:
    return secrets.token_urlsafe(18)


def user_get_or_create(*, email: str) -> tuple[AbstractBaseUser, str | None]:
    """The user with this email, created with a one-time password when new."""
    email = email.strip().lower()
    validate_email(email)
    User = get_user_model()
    user = User.objects.filter(username=email).first()
    if user is not None:
        return user, None
    password = _one_time_password()
    user = User.objects.create_user(username=email, email=email, password=password)
    return user, password


@transaction.atomic
def tenant_create(
    *, slug: str, name: str, owner_email: str, actor: Actor
) -> tuple[Tenant, AbstractBaseUser, str | None]:
    """A tenant with its first owner. Returns the owner's one-time password if it was created."""
    validate_slug(slug)
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant.objects.create(slug=slug, name=name or slug)
    user, password = user_get_or_create(email=owner_email)
    Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    audit_record(tenant=tenant, action="tenant.created", actor=actor, target=f"tenant:{slug}")
    audit_record(
        tenant=tenant,
        action="member.added",
        actor=actor,
        target=f"user:{user.get_username()}",
        metadata={"role": Role.OWNER},
    )
    return tenant, user, password


@transaction.atomic
def membership_add(
    *, tenant: Tenant, email: str, role: str, actor: Actor, request: HttpRequest | None = None
) -> tuple[Membership, str | None]:
    """Add a user (created when new) to the tenant. Returns a one-time password for a new user."""
    role = Role(role)
    user, password = user_get_or_create(email=email)
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError(f"{user.get_username()} is already a member")
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    audit_record(
        tenant=tenant,
        action="member.added",
        actor=actor,
        target=f"user:{user.get_username()}",
        metadata={"role": role, "user_created": password is not None},
        request=request,
    )
    return membership, password


def _lock_owners(tenant: Tenant) -> list[Membership]:
    return list(
        Membership.objects.select_for_update().filter(tenant=tenant, role=Role.OWNER).order_by("pk")
    )


@transaction.atomic
def membership_change_role(
    *, membership: Membership, role: str, actor: Actor, request: HttpRequest | None = None
) -> Membership:
    role = Role(role)
    owners = _lock_owners(membership.tenant)
    membership.refresh_from_db()
    old = membership.role
    if old == role:
        return membership
    if old == Role.OWNER and len(owners) <= 1:
        raise LastOwnerError("the last owner cannot stop being an owner")
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(
        tenant=membership.tenant,
        action="member.role_changed",
        actor=actor,
        target=f"user:{membership.user.get_username()}",
        metadata={"from": old, "to": role},
        request=request,
    )
    return membership


@transaction.atomic
def membership_remove(
    *, membership: Membership, actor: Actor, request: HttpRequest | None = None
) -> None:
    owners = _lock_owners(membership.tenant)
    membership.refresh_from_db()
    if membership.role == Role.OWNER and len(owners) <= 1:
        raise LastOwnerError("the last owner cannot be removed")
    membership.delete()
    audit_record(
        tenant=membership.tenant,
        action="member.removed",
        actor=actor,
        target=f"user:{membership.user.get_username()}",
        metadata={"role": membership.role},
        request=request,
    )


@transaction.atomic
def api_token_create(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    actor: Actor,
    created_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiToken, str]:
    """A new API token. The secret is returned once and never stored."""
    role = Role(role)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("a token needs a name of 1 to 100 characters")
    secret, prefix, digest = token_generate()
    token = ApiToken.objects.create(
        tenant=tenant, name=name, role=role, prefix=prefix, digest=digest, created_by=created_by
    )
    audit_record(
        tenant=tenant,
        action="token.created",
        actor=actor,
        target=f"token:{token.pk}",
        metadata={"name": name, "role": role, "prefix": token.display_prefix},
        request=request,
    )
    return token, secret


@transaction.atomic
def api_token_revoke(
    *, token: ApiToken, actor: Actor, request: HttpRequest | None = None
) -> ApiToken:
    """Revoke a token; revoking twice changes nothing and writes no second event."""
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(
        tenant=token.tenant,
        action="token.revoked",
        actor=actor,
        target=f"token:{token.pk}",
        metadata={"name": token.name, "prefix": token.display_prefix},
        request=request,
    )
    return token
