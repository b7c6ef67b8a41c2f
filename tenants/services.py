"""Writes to tenants, memberships and API tokens, each with its audit event, atomically."""

import secrets
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import transaction
from django.db.models import F
from django.http import Http404, HttpRequest
from django.utils import timezone

from tenants.audit import Actor, audit_record
from tenants.models import (
    ApiToken,
    KeyRotation,
    KeyRotationTenant,
    Membership,
    ProviderKey,
    Role,
    RotationOutcome,
    Tenant,
)
from tenants.tokens import token_generate


class LastOwnerError(ValidationError):
    """The change would leave the tenant without an owner."""


class OwnerOnlyError(ValidationError):
    """Only an owner may grant, take away or hand out the owner role."""


def _require_owner_for(acting_role: str, *roles: str) -> None:
    if Role.OWNER in roles and acting_role != Role.OWNER:
        raise OwnerOnlyError("only an owner can grant, change or remove the owner role")


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
    *,
    tenant: Tenant,
    email: str,
    role: str,
    actor: Actor,
    acting_role: str,
    request: HttpRequest | None = None,
) -> tuple[Membership, str | None]:
    """Add a user (created when new) to the tenant. Returns a one-time password for a new user."""
    role = Role(role)
    _require_owner_for(acting_role, role)
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


def _locked(membership: Membership) -> Membership:
    """The membership as it is now, locked; 404 when it was removed meanwhile.

    Only the membership row is locked (`of=("self",)`): locking the joined tenant row too made
    any concurrent audit write of the tenant (its event references the tenant, checked at
    commit) deadlock against this transaction waiting for the audit chain on PostgreSQL.
    """
    current = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("tenant", "user")
        .filter(pk=membership.pk)
        .first()
    )
    if current is None:
        raise Http404
    return current


def _lock_owners(tenant: Tenant) -> list[Membership]:
    return list(
        Membership.objects.select_for_update().filter(tenant=tenant, role=Role.OWNER).order_by("pk")
    )


@transaction.atomic
def membership_change_role(
    *,
    membership: Membership,
    role: str,
    actor: Actor,
    acting_role: str,
    request: HttpRequest | None = None,
) -> Membership:
    role = Role(role)
    owners = _lock_owners(membership.tenant)
    membership = _locked(membership)
    old = membership.role
    if old == role:
        return membership
    _require_owner_for(acting_role, old, role)
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
    *,
    membership: Membership,
    actor: Actor,
    acting_role: str,
    request: HttpRequest | None = None,
) -> None:
    owners = _lock_owners(membership.tenant)
    membership = _locked(membership)
    _require_owner_for(acting_role, membership.role)
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
    acting_role: str,
    created_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiToken, str]:
    """A new API token. The secret is returned once and never stored."""
    role = Role(role)
    _require_owner_for(acting_role, role)
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


def key_rotation_start(*, actor: Actor, to_key_id: str) -> KeyRotation:
    """Record that a rotation began, so an interrupted one still shows in the history."""
    return KeyRotation.objects.create(
        started_at=timezone.now(), actor=actor.label, to_key_id=to_key_id
    )


@transaction.atomic
def key_rotation_finish(
    *, rotation: KeyRotation, report: Any, actor: Actor, interrupted: bool = False
) -> KeyRotation:
    """Record a rotation's counts and outcome, and audit it in every tenant it touched.

    `report` is a swrly.keys.rotation.RewrapReport, complete or (when interrupted) partial.
    """
    rotation.finished_at = timezone.now()
    rotation.from_key_ids = sorted(report.from_key_ids)
    rotation.scanned = report.scanned
    rotation.rewrapped = report.rewrapped
    rotation.already_consumed = report.already_consumed
    rotation.failed = report.failed
    succeeded = report.failed == 0 and not interrupted
    rotation.outcome = RotationOutcome.SUCCEEDED if succeeded else RotationOutcome.FAILED
    rotation.save()
    tenants = Tenant.objects.in_bulk(list(report.rewrapped_by_tenant))
    for tenant_id, count in sorted(report.rewrapped_by_tenant.items()):
        tenant = tenants.get(uuid.UUID(tenant_id))
        if tenant is None:  # a token of a tenant deleted since: nothing to record it in
            continue
        KeyRotationTenant.objects.create(rotation=rotation, tenant=tenant, rewrapped=count)
        audit_record(
            tenant=tenant,
            action="encryption_key.rotated",
            actor=actor,
            target=f"rotation:{rotation.pk}",
            metadata={
                "from_key_ids": rotation.from_key_ids,
                "to_key_id": rotation.to_key_id,
                "rewrapped": count,
            },
        )
    return rotation


@transaction.atomic
def provider_key_seen(*, tenant: Tenant, provider: str, fingerprint: str, hint: str) -> ProviderKey:
    """Count one use of a customer key (by fingerprint) for the tenant's key history."""
    now = timezone.now()
    record, created = ProviderKey.objects.select_for_update().get_or_create(
        tenant=tenant,
        provider=provider,
        fingerprint=fingerprint,
        defaults={"hint": hint, "first_seen_at": now, "last_seen_at": now, "use_count": 1},
    )
    if not created:
        ProviderKey.objects.filter(pk=record.pk).update(
            last_seen_at=now, use_count=F("use_count") + 1
        )
        record.refresh_from_db()
    return record
