"""Writes of the identity app: invitations, the generated-password flag, MFA enrolment and
sign-in verification, tenants' MFA policies. Each writes its audit event in its transaction."""

import hashlib
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from swrly.audit.writer import Actor, audit_record
from swrly.identity.mfa import (
    recovery_code_digest,
    recovery_codes_generate,
    recovery_codes_left,
    recovery_codes_store,
    totp_device,
)
from swrly.identity.models import (
    Invitation,
    InvitationStatus,
    PasswordChangeRequired,
    TenantMfaPolicy,
)
from swrly.identity.tokens import invitation_secret_generate, invitation_secret_matches
from tenants.authority import Principal
from tenants.models import Membership, Role, Tenant, role_within
from tenants.services import authority_require, membership_add
from tenants.signals import audit_user_event

log = logging.getLogger(__name__)


class InvitationError(ValidationError):
    """The invitation cannot be used: it was accepted, revoked, or it expired."""


def _invitation_metadata(invitation: Invitation) -> dict[str, Any]:
    return {"email": invitation.email, "role": invitation.role}


def invitation_link(invitation: Invitation, secret: str, request: HttpRequest | None) -> str:
    """The absolute address of the invitation's accept page, with its secret."""
    path = reverse("invitation-open", kwargs={"invitation_id": invitation.pk, "secret": secret})
    if request is not None:
        return request.build_absolute_uri(path)
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def _send_invitation(*, invitation: Invitation, link: str) -> None:
    hours = int(settings.INVITATION_TTL // 3600)
    body = (
        f"You are invited to join {invitation.tenant.name} on Swrly as {invitation.role}.\n\n"
        f"Open this link to accept (it works once and expires in {hours} hours):\n\n{link}\n\n"
        "If you did not expect this invitation, ignore this e-mail.\n"
    )
    try:
        send_mail(
            f"Your invitation to {invitation.tenant.name} on Swrly",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [invitation.email],
        )
    except Exception as exc:
        # The invitation stays pending: the inviter sees it and may revoke it and invite again.
        # One line, no traceback: a mail server that refuses is an operations fact, not a bug.
        log.error(
            "the invitation e-mail to %s could not be sent: %s",
            invitation.email,
            type(exc).__name__,
        )


@transaction.atomic
def invitation_create(
    *,
    tenant: Tenant,
    email: str,
    role: str,
    by: Principal,
    request: HttpRequest | None = None,
) -> Invitation:
    """Invite someone by e-mail to join the tenant with `role` (within the inviter's own).

    The link's secret is sent by e-mail once the transaction commits and is never stored or
    returned: only its digest is kept.
    """
    role = Role(role)
    email = email.strip().lower()
    validate_email(email)
    authority_require(tenant=tenant, by=by, roles=(role,))
    if Membership.objects.filter(tenant=tenant, user__username=email).exists():
        raise ValidationError(f"{email} is already a member.")
    now = timezone.now()
    pending = Invitation.objects.filter(
        tenant=tenant, email=email, accepted_at=None, revoked_at=None, expires_at__gt=now
    )
    if pending.exists():
        raise ValidationError(
            f"{email} already has a pending invitation. Revoke it to send a new one."
        )
    secret, digest = invitation_secret_generate()
    invitation = Invitation.objects.create(
        tenant=tenant,
        email=email,
        role=role,
        digest=digest,
        invited_by_id=by.user_id,
        invited_by_label=by.actor.label[:200],
        created_at=now,
        expires_at=now + timedelta(seconds=settings.INVITATION_TTL),
    )
    audit_record(
        tenant=tenant,
        action="invitation.created",
        actor=by.actor,
        target=f"invitation:{invitation.pk}",
        metadata={
            **_invitation_metadata(invitation),
            "expires_at": invitation.expires_at.isoformat(),
        },
        request=request,
    )
    link = invitation_link(invitation, secret, request)
    transaction.on_commit(lambda: _send_invitation(invitation=invitation, link=link))
    return invitation


@transaction.atomic
def invitation_revoke(
    *, invitation: Invitation, by: Principal, request: HttpRequest | None = None
) -> Invitation:
    """Revoke a pending invitation: its link stops working."""
    authority_require(tenant=invitation.tenant, by=by, roles=(invitation.role,))
    current = Invitation.objects.select_for_update(of=("self",)).get(pk=invitation.pk)
    if current.status != InvitationStatus.PENDING:
        raise InvitationError(f"This invitation is {current.status}: nothing to revoke.")
    current.revoked_at = timezone.now()
    current.save(update_fields=["revoked_at"])
    audit_record(
        tenant=current.tenant,
        action="invitation.revoked",
        actor=by.actor,
        target=f"invitation:{current.pk}",
        metadata=_invitation_metadata(current),
        request=request,
    )
    return current


def invitation_for_link(*, invitation_id: Any, secret: str) -> Invitation | None:
    """The invitation a link names, if its secret matches (any state); otherwise None."""
    try:
        invitation = Invitation.objects.select_related("tenant").filter(pk=invitation_id).first()
    except ValidationError:
        return None
    if invitation is None:
        # Compare anyway, so an unknown id takes as long as a wrong secret.
        invitation_secret_matches(secret, "0" * 64)
        return None
    if not invitation_secret_matches(secret, invitation.digest):
        return None
    return invitation


def invitee_user(invitation: Invitation) -> User | None:
    """The existing account the invitation's address names, if any."""
    return get_user_model().objects.filter(username=invitation.email).first()


def invitation_accept(
    *,
    invitation: Invitation,
    user: User | None = None,
    password: str | None = None,
    request: HttpRequest | None = None,
) -> Membership:
    """Make the invitee a member, once. An existing account (`user`, signed in as the invitee)
    joins as it is; otherwise the account is created with the password the invitee chose.

    The invitation is refused when it is no longer pending, and revoked when its inviter no
    longer holds a role that covers the invited one (that revocation is kept).
    """
    with transaction.atomic():
        outcome = _invitation_accept_locked(
            invitation=invitation, user=user, password=password, request=request
        )
    if isinstance(outcome, InvitationError):
        raise outcome
    return outcome


def _invitation_accept_locked(
    *,
    invitation: Invitation,
    user: User | None,
    password: str | None,
    request: HttpRequest | None,
) -> Membership | InvitationError:
    current = (
        Invitation.objects.select_for_update(of=("self",))
        .select_related("tenant")
        .get(pk=invitation.pk)
    )
    status = current.status
    if status != InvitationStatus.PENDING:
        raise InvitationError(f"This invitation was {status}.")
    inviter_role = (
        Membership.objects.filter(tenant=current.tenant, user_id=current.invited_by_id)
        .values_list("role", flat=True)
        .first()
        if current.invited_by_id is not None
        else None
    )
    if inviter_role is None or not role_within(current.role, inviter_role):
        current.revoked_at = timezone.now()
        current.save(update_fields=["revoked_at"])
        audit_record(
            tenant=current.tenant,
            action="invitation.revoked",
            actor=Actor.system("invitation-authority"),
            target=f"invitation:{current.pk}",
            metadata={**_invitation_metadata(current), "reason": "inviter_authority_lost"},
            request=request,
        )
        return InvitationError("This invitation is no longer valid: ask for a new one.")
    existing = invitee_user(current)
    created = existing is None
    if existing is not None:
        if user is None or user.pk != existing.pk:
            raise InvitationError(f"Sign in as {current.email} to accept this invitation.")
        member = existing
    else:
        if not password:
            raise InvitationError("Choose a password to create your account.")
        member = get_user_model().objects.create_user(
            username=current.email, email=current.email, password=password
        )
    current.accepted_at = timezone.now()
    current.accepted_by = member
    current.save(update_fields=["accepted_at", "accepted_by"])
    actor = Actor.for_user(member)
    audit_record(
        tenant=current.tenant,
        action="invitation.accepted",
        actor=actor,
        target=f"invitation:{current.pk}",
        metadata={**_invitation_metadata(current), "user_created": created},
        request=request,
    )
    return membership_add(
        tenant=current.tenant,
        user=member,
        role=current.role,
        actor=actor,
        metadata={"user_created": created, "invitation": str(current.pk)},
        request=request,
    )


# --- Generated passwords -----------------------------------------------------------------


def _password_digest(user: User) -> str:
    return hashlib.sha256(user.password.encode()).hexdigest()


def password_change_require(*, user: User) -> None:
    """Mark a user whose password was generated: they must change it at their next sign-in."""
    PasswordChangeRequired.objects.update_or_create(
        user=user, defaults={"password_digest": _password_digest(user)}
    )


def password_change_pending(user: User) -> bool:
    """Whether the user still signs in with a generated password (the flag is dropped as soon
    as the password differs from the one it was set for, however it was changed)."""
    flag = PasswordChangeRequired.objects.filter(user=user).first()
    if flag is None:
        return False
    if flag.password_digest != _password_digest(user):
        flag.delete()
        return False
    return True


# --- MFA -----------------------------------------------------------------------------------


def totp_enrolment_start(*, user: User) -> TOTPDevice:
    """A new unconfirmed authenticator device for the user (any earlier unconfirmed one is
    dropped, so each secret is shown once)."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


@transaction.atomic
def totp_enrolment_confirm(
    *, user: User, code: str, request: HttpRequest | None = None
) -> list[str] | None:
    """Confirm the user's pending device with a code from the app: returns the new recovery
    codes (shown once), or None when the code is wrong."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).last()
    if device is None or not device.verify_token(code.strip().replace(" ", "")):
        return None
    TOTPDevice.objects.filter(user=user, confirmed=True).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = recovery_codes_generate()
    recovery_codes_store(user, codes)
    audit_user_event(
        action="mfa.enrolled",
        user=user,
        request=request,
        metadata={"method": "totp", "recovery_codes": len(codes)},
    )
    return codes


@transaction.atomic
def recovery_codes_regenerate(
    *, user: User, code: str, request: HttpRequest | None = None
) -> list[str] | None:
    """New recovery codes (the old ones stop working), after a current code from the app;
    None when the code is wrong."""
    device = totp_device(user)
    if device is None or not device.verify_token(code.strip().replace(" ", "")):
        return None
    codes = recovery_codes_generate()
    recovery_codes_store(user, codes)
    audit_user_event(
        action="mfa.recovery_codes_regenerated",
        user=user,
        request=request,
        metadata={"recovery_codes": len(codes)},
    )
    return codes


def second_factor_verify(*, user: User, code: str) -> str | None:
    """Check a sign-in's second factor: a code from the app (each accepted once: a replayed
    code is refused) or an unused recovery code (deleted as it is used). Returns the method
    that matched, or None. django-otp throttles repeated failures per device."""
    code = code.strip()
    device = totp_device(user)
    if device is None:
        return None
    compact = code.replace(" ", "")
    if len(compact) == 6 and compact.isdigit():
        return "totp" if device.verify_token(compact) else None
    recovery = StaticDevice.objects.filter(user=user, name="recovery").first()
    if recovery is not None and recovery.verify_token(recovery_code_digest(code)):
        return "recovery_code"
    return None


def recovery_code_used(*, user: User, request: HttpRequest | None) -> None:
    audit_user_event(
        action="mfa.recovery_code_used",
        user=user,
        request=request,
        metadata={"remaining": recovery_codes_left(user)},
    )


# --- Tenant MFA policy ---------------------------------------------------------------------


def mfa_required_roles(tenant: Tenant) -> list[str]:
    """The roles of the tenant that must sign in with a second factor."""
    policy = TenantMfaPolicy.objects.filter(tenant=tenant).first()
    return list(policy.required_roles) if policy else []


@transaction.atomic
def mfa_policy_set(
    *,
    tenant: Tenant,
    required_roles: list[str],
    by: Principal,
    request: HttpRequest | None = None,
) -> TenantMfaPolicy:
    """Set which roles must use MFA in the tenant (owners only), audited `mfa.policy_changed`
    when it changes."""
    roles = sorted({Role(role).value for role in required_roles})
    authority_require(tenant=tenant, by=by, roles=(Role.OWNER,))
    policy, _ = TenantMfaPolicy.objects.select_for_update().get_or_create(tenant=tenant)
    old = sorted(policy.required_roles)
    if old == roles:
        return policy
    policy.required_roles = roles
    policy.save(update_fields=["required_roles", "updated_at"])
    audit_record(
        tenant=tenant,
        action="mfa.policy_changed",
        actor=by.actor,
        target=f"tenant:{tenant.slug}",
        metadata={"from": old, "to": roles},
        request=request,
    )
    return policy
