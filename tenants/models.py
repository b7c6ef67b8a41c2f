"""Tenants, their members and API tokens (the audit log's models are in swrly.audit.models)."""

import uuid

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    AUDITOR = "auditor", "Auditor"


# What each role may do. Roles are sets of capabilities, not a ladder: an auditor reads
# evidence a developer may not manage, and a developer reads outputs an auditor may not see.
MANAGE_ROLES = frozenset({Role.OWNER, Role.ADMIN})
WRITE_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.DEVELOPER})
READ_ROLES = frozenset(Role)
# Who reads the audit log: not developers, whose work it records.
AUDIT_READ_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.AUDITOR})
# Who grants, changes or removes the owner role (and creates owner tokens).
OWNER_ROLES = frozenset({Role.OWNER})
# Every capability, as the set of roles that hold it.
CAPABILITIES = (OWNER_ROLES, MANAGE_ROLES, WRITE_ROLES, AUDIT_READ_ROLES, READ_ROLES)


def role_within(role: str, authority: str) -> bool:
    """Whether every capability of `role` is also a capability of `authority`.

    This is the one rule for authority over roles: a member (or token) may grant, or keep a
    token of, only a role within its own. It is not a ladder: developer and auditor are each
    within admin, and neither is within the other.
    """
    return all(authority in holders for holders in CAPABILITIES if role in holders)


class TokenOrigin(models.TextChoices):
    """Where a token was created: who stands behind it."""

    PAGE = "page", "API tokens page"
    API = "api", "API, by another token"
    CLI = "cli", "command line"


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    # The tenant's own run limits (docs/operations.md "Fairness and backpressure"); None: the
    # platform's RUN_MAX_QUEUED_PER_TENANT / RUN_MAX_RUNNING_PER_TENANT. Set by an operator
    # with `manage.py tenant-limits` (audited), never through the API or the pages.
    max_queued_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs waiting for a worker; empty: the platform default."
    )
    max_running_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs running at once; empty: the platform default."
    )
    # The tenant's policies (tenants/policy.py; the settings page and /api/v1/policy/, set by
    # owners, audited `tenant.policy_changed`). Each narrows the platform, never widens it.
    # Providers its workflows may use: None, every provider the platform enables.
    allowed_providers = models.JSONField(null=True, blank=True)
    # {provider: [model, "prefix-*", ...]}: a provider absent from it may use any model.
    allowed_models = models.JSONField(default=dict, blank=True)
    # Seconds a run's stored keys live at most; None: the platform's BYOK_TOKEN_TTL.
    max_key_ttl = models.PositiveIntegerField(null=True, blank=True)
    # Days after a run's end when its content is purged; None: kept forever.
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def queued_runs_limit(self) -> int:
        """How many runs the tenant may have waiting for a worker (its own limit, else the
        platform's RUN_MAX_QUEUED_PER_TENANT)."""
        if self.max_queued_runs is not None:
            return self.max_queued_runs
        return int(settings.RUN_MAX_QUEUED_PER_TENANT)

    @property
    def running_runs_limit(self) -> int:
        """How many runs of the tenant may run at once (its own limit, else the platform's
        RUN_MAX_RUNNING_PER_TENANT)."""
        if self.max_running_runs is not None:
            return self.max_running_runs
        return int(settings.RUN_MAX_RUNNING_PER_TENANT)


class Membership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class ApiToken(models.Model):
    """A tenant's API credential. Only a display prefix and an HMAC digest are stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    # The person whose authority the token carries: who created it on the page, or the person
    # behind the token that created it. None only for tokens that stem from the command line.
    # Kept (without a constraint) when the user is deleted, so that the token stays accountable
    # and, its creator being no member any more, is refused.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # The token this token was created with (over the API); revoking it revokes this one.
    created_by_token = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="created_tokens"
    )
    created_via = models.CharField(max_length=8, choices=TokenOrigin.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        return f"swr_{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
