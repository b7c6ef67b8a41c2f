"""Writes to tenants, memberships and API tokens, each with its audit event, atomically."""

import secrets
from datetime import timedelta

from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone

from swrly.audit.writer import Actor, audit_record
from tenants.access import access_denied
from tenants.authority import AuthorityLost, Principal, token_authority_refusal
from tenants.models import (
    ApiToken,
    Membership,
    Role,
    Tenant,
    TokenOrigin,
    role_within,
)
from tenants.tokens import token_generate


class LastOwnerError(ValidationError):
    """The change would leave the tenant without an owner."""


class OwnerOnlyError(ValidationError):
    """Only an owner may grant, take away or hand out the owner role."""


class RoleNotWithinError(ValidationError):
    """A role the acting member or token does not itself hold."""


class SelfRaiseError(ValidationError):
    """No one raises the role of the membership their own authority stems from."""


def _require_within(acting_role: str, *roles: str) -> None:
    """Refuse to grant, change or remove a role that is not within the acting role."""
    for role in roles:
        if role_within(role, acting_role):
            continue
        if role == Role.OWNER:
            raise OwnerOnlyError("only an owner can grant, change or remove the owner role")
        raise RoleNotWithinError(f"a {acting_role} cannot grant, change or remove the {role} role")


def _authority(by: Principal, tenant: Tenant) -> str:
    """The role `by` acts with, checked again now, under lock; AuthorityLost if it has none.

    A request authenticated just before its member was demoted or removed (or its token
    revoked) is refused here: the row is locked until this transaction ends, so a concurrent
    change is either seen or waits.
    """
    if by.via == TokenOrigin.CLI:
        return Role.OWNER
    if by.via == TokenOrigin.PAGE:
        role = (
            Membership.objects.select_for_update(of=("self",))
            .filter(tenant=tenant, user_id=by.user_id)
            .values_list("role", flat=True)
            .first()
        )
        if role is None:
            raise AuthorityLost("you are no longer a member of this tenant")
        return role
    token = (
        ApiToken.objects.select_for_update(of=("self",))
        .filter(pk=by.token.pk, tenant=tenant)
        .first()
    )
    if token is None or token.revoked_at is not None:
        raise AuthorityLost("the API token was revoked")
    refusal = token_authority_refusal(
        token,
        creator_role=Membership.objects.filter(tenant=tenant, user_id=token.created_by_id)
        .values_list("role", flat=True)
        .first(),
        parent=ApiToken.objects.filter(pk=token.created_by_token_id).first(),
    )
    if refusal:
        raise AuthorityLost(f"the API token no longer holds its authority: {refusal}")
    return token.role


def _one_time_password() -> str:
    return secrets.token_urlsafe(18)


def user_get_or_create(*, email: str) -> tuple[User, str | None]:
    """The user with this email, created with a generated one-time password when new (a
    tenant's first owner; `create-tenant` makes them change it at first sign-in)."""
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
) -> tuple[Tenant, User, str | None]:
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


RUN_LIMITS = ("max_queued_runs", "max_running_runs")


@transaction.atomic
def tenant_limits_set(*, tenant: Tenant, actor: Actor, **limits: int | None) -> dict[str, dict]:
    """Set the tenant's own run limits (`max_queued_runs`, `max_running_runs`; None: back to
    the platform default), audited `tenant.limits_changed`. An operator's act only: no page or
    API view calls it. Returns what changed ({limit: {"from", "to"}}; empty: nothing did)."""
    unknown = set(limits) - set(RUN_LIMITS)
    if unknown:
        raise ValueError(f"not a run limit: {', '.join(sorted(unknown))}")
    for name, value in limits.items():
        if value is not None and value < 0:
            raise ValidationError(f"{name} must be 0 or more (or the platform default)")
    # FOR NO KEY UPDATE: it does not wait for (nor block) the foreign-key checks of concurrent
    # audit events and runs of the tenant, which take KEY SHARE on this row.
    current = Tenant.objects.select_for_update(no_key=True, of=("self",)).get(pk=tenant.pk)
    changed = {
        name: {"from": getattr(current, name), "to": value}
        for name, value in limits.items()
        if getattr(current, name) != value
    }
    for name, change in changed.items():
        setattr(current, name, change["to"])
        setattr(tenant, name, change["to"])
    if not changed:
        return changed
    current.save(update_fields=sorted(changed))
    audit_record(
        tenant=tenant,
        action="tenant.limits_changed",
        actor=actor,
        target=f"tenant:{tenant.slug}",
        metadata=changed,
    )
    return changed


def authority_require(*, tenant: Tenant, by: Principal, roles: tuple[str, ...]) -> str:
    """The role `by` acts with in `tenant`, checked again under lock, refusing any of `roles`
    that is not within it (for other apps' services, e.g. invitations). Call it inside the
    service's transaction."""
    _lock_owners(tenant)
    acting_role = _authority(by, tenant)
    _require_within(acting_role, *roles)
    return acting_role


@transaction.atomic
def membership_add(
    *,
    tenant: Tenant,
    user: User,
    role: str,
    actor: Actor,
    metadata: dict | None = None,
    request: HttpRequest | None = None,
) -> Membership:
    """Make an existing user a member. The authority was checked when they were invited
    (swrly.identity.services.invitation_accept is the caller); `metadata` adds to the event."""
    role = Role(role)
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError(f"{user.get_username()} is already a member")
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    audit_record(
        tenant=tenant,
        action="member.added",
        actor=actor,
        target=f"user:{user.get_username()}",
        metadata={"role": role, **(metadata or {})},
        request=request,
    )
    return membership


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
        Membership.objects.select_for_update(of=("self",))
        .filter(tenant=tenant, role=Role.OWNER)
        .order_by("pk")
    )


@transaction.atomic
def membership_change_role(
    *,
    membership: Membership,
    role: str,
    by: Principal,
    request: HttpRequest | None = None,
) -> Membership:
    """Change a member's role; their tokens whose role is no longer within it are revoked.

    Nobody raises the role of the membership their own authority stems from (their own, or
    that of the person behind their token).
    """
    role = Role(role)
    owners = _lock_owners(membership.tenant)
    membership = _locked(membership)
    acting_role = _authority(by, membership.tenant)
    old = membership.role
    if old == role:
        return membership
    _require_within(acting_role, old, role)
    # Implied by the rule above while the acting role is re-read (a member's own role, or a
    # token's role within its creator's); stated on its own so it never rests on the table.
    if membership.user_id == by.user_id and not role_within(role, old):
        raise SelfRaiseError("no one can raise their own role")
    if old == Role.OWNER and len(owners) <= 1:
        raise LastOwnerError("the last owner cannot stop being an owner")
    beyond = [r for r in Role if not role_within(r, role)]
    revoked = _lock_with_descendants(
        ApiToken.objects.filter(
            tenant=membership.tenant, created_by_id=membership.user_id, role__in=beyond
        )
    )
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(
        tenant=membership.tenant,
        action="member.role_changed",
        actor=by.actor,
        target=f"user:{membership.user.get_username()}",
        metadata={"from": old, "to": role},
        request=request,
    )
    _revoke_locked(revoked, actor=by.actor, reason="member.role_changed", request=request)
    return membership


@transaction.atomic
def membership_remove(
    *,
    membership: Membership,
    by: Principal,
    request: HttpRequest | None = None,
) -> None:
    """Remove a member; every token they created, and every token created with those, is
    revoked."""
    owners = _lock_owners(membership.tenant)
    membership = _locked(membership)
    _require_within(_authority(by, membership.tenant), membership.role)
    if membership.role == Role.OWNER and len(owners) <= 1:
        raise LastOwnerError("the last owner cannot be removed")
    revoked = _lock_with_descendants(
        ApiToken.objects.filter(tenant=membership.tenant, created_by_id=membership.user_id)
    )
    membership.delete()
    audit_record(
        tenant=membership.tenant,
        action="member.removed",
        actor=by.actor,
        target=f"user:{membership.user.get_username()}",
        metadata={"role": membership.role},
        request=request,
    )
    _revoke_locked(revoked, actor=by.actor, reason="member.removed", request=request)


@transaction.atomic
def api_token_create(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    by: Principal,
    request: HttpRequest | None = None,
) -> tuple[ApiToken, str]:
    """A new API token. The secret is returned once and never stored.

    The token records who created it: the member (page), the token and the person behind it
    (API), or the command line. Its role must be within the creator's role as it is now.
    """
    role = Role(role)
    _require_within(_authority(by, tenant), role)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("an API token needs a name of 1 to 100 characters")
    secret, prefix, digest = token_generate()
    token = ApiToken.objects.create(
        tenant=tenant,
        name=name,
        role=role,
        prefix=prefix,
        digest=digest,
        created_by_id=by.user_id,
        created_by_token=by.token,
        created_via=by.via,
    )
    metadata = {"name": name, "role": role, "prefix": token.display_prefix, "via": by.via}
    if by.token is not None:
        metadata["created_by_token"] = str(by.token.pk)
    audit_record(
        tenant=tenant,
        action="token.created",
        actor=by.actor,
        target=f"token:{token.pk}",
        metadata=metadata,
        request=request,
    )
    return token, secret


def _lock_with_descendants(tokens: QuerySet[ApiToken]) -> list[list[ApiToken]]:
    """The active `tokens`, then the active tokens created with them, down the chain: locked,
    level by level.

    Services lock every row they change before they append to the audit chain (whose head is
    locked last), so two services never wait for each other in opposite orders.
    """
    locked = ApiToken.objects.select_for_update(of=("self",)).select_related("tenant")
    levels = []
    level = list(
        locked.filter(pk__in=tokens.values("pk"), revoked_at=None).order_by("created_at", "pk")
    )
    seen: set = set()
    while level:
        levels.append(level)
        seen.update(t.pk for t in level)
        level = [
            token
            for token in locked.filter(
                created_by_token__in=[t.pk for t in level], revoked_at=None
            ).order_by("created_at", "pk")
            if token.pk not in seen
        ]
    return levels


def _revoke_locked(
    levels: list[list[ApiToken]],
    *,
    actor: Actor,
    reason: str | None,
    request: HttpRequest | None,
) -> None:
    """Revoke tokens locked by `_lock_with_descendants`, each with its own `token.revoked`.

    `reason` is recorded for the first level (None: revoked on request); the tokens below
    record `token.parent_revoked` and the token they were created with.
    """
    now = timezone.now()
    for depth, level in enumerate(levels):
        for token in level:
            token.revoked_at = now
            token.save(update_fields=["revoked_at"])
            metadata = {"name": token.name, "prefix": token.display_prefix}
            if depth > 0:
                metadata |= {
                    "reason": "token.parent_revoked",
                    "parent": str(token.created_by_token_id),
                }
            elif reason is not None:
                metadata["reason"] = reason
            audit_record(
                tenant=token.tenant,
                action="token.revoked",
                actor=actor,
                target=f"token:{token.pk}",
                metadata=metadata,
                request=request,
            )


@transaction.atomic
def api_token_revoke(
    *, token: ApiToken, actor: Actor, request: HttpRequest | None = None
) -> ApiToken:
    """Revoke a token, and every token created with it (they stem from its authority).

    Revoking twice changes nothing and writes no second event.
    """
    _revoke_locked(
        _lock_with_descendants(ApiToken.objects.filter(pk=token.pk)),
        actor=actor,
        reason=None,
        request=request,
    )
    return ApiToken.objects.select_related("created_by", "created_by_token").get(pk=token.pk)


@transaction.atomic
def api_token_refuse(*, token: ApiToken, refusal: str, request: HttpRequest | None) -> None:
    """A token presented without the authority for its role: revoke it (and its descendants).

    Revocation on member removal or demotion makes this rare (a membership row edited by
    hand, a creator deleted); it is the check at authentication, as defence in depth.
    """
    actor = Actor.for_token(token)
    _revoke_locked(
        _lock_with_descendants(ApiToken.objects.filter(pk=token.pk)),
        actor=Actor.system("token-authority"),
        reason="token.authority_lost",
        request=request,
    )
    access_denied(
        tenant=token.tenant,
        actor=actor,
        target=f"token:{token.pk}",
        reason=f"token without authority: {refusal}",
        request=request,
    )


LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_mark_used(token: ApiToken) -> None:
    """Record the token's last use, at most once a minute: most requests write nothing."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    token.last_used_at = now
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


class NotAnOwnerError(ValidationError):
    """Only an owner may lift a member's sign-in lockout."""


@transaction.atomic
def membership_unlock(
    *, membership: Membership, by: Principal, request: HttpRequest | None = None
) -> int:
    """Lift a member's sign-in lockout: forget every failed sign-in django-axes counts for their
    username, from every address. Returns how many address records were cleared.

    Owners only (their role checked again under lock). Audited as `member.unlocked` in this
    tenant, even when nothing was locked, so every attempt to lift a lockout is on record. Sign-in
    is per user, not per tenant: the member can sign in again for all their tenants.
    """
    membership = _locked(membership)
    if _authority(by, membership.tenant) != Role.OWNER:
        raise NotAnOwnerError("only an owner can lift a lockout")
    username = membership.user.get_username()
    attempts = AccessAttempt.objects.filter(username=username)
    addresses = sorted({str(ip) for ip in attempts.values_list("ip_address", flat=True) if ip})
    _, deleted = attempts.delete()
    cleared = deleted.get(AccessAttempt._meta.label, 0)
    audit_record(
        tenant=membership.tenant,
        action="member.unlocked",
        actor=by.actor,
        target=f"user:{username}",
        metadata={"addresses": addresses[:20], "cleared": cleared},
        request=request,
    )
    return cleared
