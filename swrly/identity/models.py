"""Invitations, the generated-password flag and the tenants' MFA policies.

The second factors themselves are django-otp's devices (TOTPDevice for the authenticator app,
StaticDevice for recovery codes, whose tokens are stored as keyed hashes: swrly.identity.mfa).
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Role, Tenant


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


class Invitation(models.Model):
    """A single-use link that makes its holder a member of a tenant, until it expires.

    Only an HMAC digest of the link's secret is stored (swrly.identity.tokens).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=16, choices=Role.choices)
    digest = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Who invited, as the audit log names them (a member, or an API token).
    invited_by_label = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant", "-created_at"]
        indexes = [models.Index(fields=["tenant", "email"], name="invitation_tenant_email")]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant} as {self.role}"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if self.expires_at <= timezone.now():
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING


class PasswordChangeRequired(models.Model):
    """A user whose password was generated (not chosen): they must change it at sign-in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="password_change_required",
    )
    # A SHA-256 of the password hash it was set for: any other password clears the flag.
    password_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} must change their password"


class TenantMfaPolicy(models.Model):
    """Which roles of a tenant must sign in with a second factor (set by an owner)."""

    tenant = models.OneToOneField(
        Tenant, primary_key=True, on_delete=models.CASCADE, related_name="mfa_policy"
    )
    required_roles = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant"]
        verbose_name_plural = "tenant MFA policies"

    def __str__(self) -> str:
        return f"MFA for {', '.join(self.required_roles) or 'no role'} in {self.tenant}"
