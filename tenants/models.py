"""Tenants, their members and API tokens, and the append-only audit log."""

import uuid
from typing import Any, NoReturn

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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


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


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")


class AppendOnlyError(Exception):
    """An attempt to change or remove an audit event."""


class AppendOnlyModel(models.Model):
    """A row written once: the ORM refuses to change or delete it (and a PostgreSQL trigger
    refuses it to SQL)."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{self._meta.verbose_name_plural} cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{self._meta.verbose_name_plural} cannot be deleted")


PLATFORM_CHAIN = "platform"


class AuditChainHead(models.Model):
    """The newest link of one audit chain; locked while an event is appended to the chain.

    `chain` is a tenant id, or "platform" for events that belong to no tenant.
    """

    chain = models.CharField(max_length=36, primary_key=True)
    seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)
    # HMAC under the chain key over (chain, seq, last_hash): a head rewound to cut events off
    # the end does not verify without the key. Empty on heads last written before keyed events.
    mac = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.chain}@{self.seq}"


class AuditEvent(AppendOnlyModel):
    """One security-relevant action. Append-only and hash-chained per tenant."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    chain = models.CharField(max_length=36)
    seq = models.BigIntegerField()
    created_at = models.DateTimeField()
    # The actor is kept as text so that deleting a user never rewrites (and so breaks) history.
    actor = models.CharField(max_length=300)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=300, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # 1: plain SHA-256 (events written before the keyed chain); 2: HMAC-SHA256 under the chain
    # key named by key_id (tenants/audit_keys.py). Both are covered by the hash.
    hash_version = models.PositiveSmallIntegerField(default=1)
    key_id = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="auditevent_chain_seq_unique"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="auditevent_tenant_time"),
            models.Index(fields=["tenant", "action"], name="auditevent_tenant_action"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq} {self.action}"


class AuditCheckpoint(AppendOnlyModel):
    """A signed statement that a chain's event `seq` had hash `head_hash`. Append-only.

    The Ed25519 signature (by the key `key_id`, published at /api/v1/audit-keys/) covers a
    canonical JSON payload of every field but the signature itself, including the previous
    checkpoint's signature: checkpoints form their own chain, like CloudTrail's digest files.
    """

    id = models.BigAutoField(primary_key=True)
    chain = models.CharField(max_length=36)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_checkpoints"
    )
    seq = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    prev_signature = models.CharField(max_length=128, blank=True)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["chain", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "seq"], name="auditcheckpoint_chain_seq_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.chain}#{self.seq}"


class ProviderKey(models.Model):
    """A customer provider key as Swrly knows it: by fingerprint only, never the key.

    One row per (tenant, provider, fingerprint): when it first and last ran, and how often.
    A new fingerprint for the same provider is the customer rotating their key.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="provider_keys")
    provider = models.CharField(max_length=32)
    fingerprint = models.CharField(max_length=64)
    hint = models.CharField(max_length=40)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    use_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["tenant", "provider", "-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "fingerprint"], name="providerkey_unique_fingerprint"
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "provider", "-last_seen_at"], name="providerkey_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.hint}"


class RotationOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class KeyRotation(models.Model):
    """One run of `manage.py rotate-keys`: live tokens rewrapped to the current encryption key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    actor = models.CharField(max_length=300)
    from_key_ids = models.JSONField(default=list, blank=True)
    to_key_id = models.CharField(max_length=16)
    scanned = models.PositiveIntegerField(default=0)
    rewrapped = models.PositiveIntegerField(default=0)
    already_consumed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    outcome = models.CharField(
        max_length=16, choices=RotationOutcome.choices, default=RotationOutcome.RUNNING
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"rotation {self.started_at:%Y-%m-%d %H:%M} → {self.to_key_id}"


class KeyRotationTenant(models.Model):
    """How many of one tenant's tokens a rotation rewrapped."""

    rotation = models.ForeignKey(KeyRotation, on_delete=models.CASCADE, related_name="tenants")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="key_rotations")
    rewrapped = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rotation", "tenant"]
        constraints = [
            models.UniqueConstraint(fields=["rotation", "tenant"], name="rotationtenant_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.rotation} in {self.tenant}: {self.rewrapped}"


class AuditSuppression(models.Model):
    """A counter of repeated audit events that an outsider can trigger, per window.

    Not part of the chain: a staging count that `tenants.audit.audit_record_bounded` keeps so
    that a flood of failed sign-ins or denied accesses cannot grow a tenant's chain without
    bound. When the window closes, what was not recorded is appended to the chain as one
    `audit.suppressed` event and these rows are deleted. `source` "*" is the chain-wide total
    for the window (with how many events were recorded); other rows count one source each.
    """

    id = models.BigAutoField(primary_key=True)
    chain = models.CharField(max_length=36)
    action = models.CharField(max_length=64)
    source = models.CharField(max_length=300)
    window_start = models.BigIntegerField(help_text="Start of the window, in epoch seconds.")
    count = models.PositiveIntegerField(default=0)
    recorded = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "action", "source", "window_start"], name="auditsuppression_unique"
            ),
        ]
        indexes = [models.Index(fields=["chain", "window_start"], name="auditsuppression_chain")]

    def __str__(self) -> str:
        return f"{self.chain} {self.action} {self.source}@{self.window_start}: {self.count}"
