"""Key custody records: customer keys by fingerprint, encryption-key rotations.

The tables keep the names they had when these models lived in `tenants` (`db_table`).
"""

import uuid

from django.db import models


class ProviderKey(models.Model):
    """A customer provider key as Swrly knows it: by fingerprint only, never the key.

    One row per (tenant, provider, fingerprint): when it first and last ran, and how often.
    A new fingerprint for the same provider is the customer rotating their key.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="provider_keys"
    )
    provider = models.CharField(max_length=32)
    # "v2:" and 64 hex (per-tenant, customer-computable), or 64 hex alone (legacy v1).
    fingerprint = models.CharField(max_length=80)
    hint = models.CharField(max_length=40)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    use_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "tenants_providerkey"
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
        db_table = "tenants_keyrotation"
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"rotation {self.started_at:%Y-%m-%d %H:%M} → {self.to_key_id}"


class KeyRotationTenant(models.Model):
    """How many of one tenant's tokens a rotation rewrapped."""

    rotation = models.ForeignKey(KeyRotation, on_delete=models.CASCADE, related_name="tenants")
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="key_rotations"
    )
    rewrapped = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "tenants_keyrotationtenant"
        ordering = ["rotation", "tenant"]
        constraints = [
            models.UniqueConstraint(fields=["rotation", "tenant"], name="rotationtenant_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.rotation} in {self.tenant}: {self.rewrapped}"


class EncryptionKeyUsage(models.Model):
    """How many tokens one encryption key has sealed, as moved from the key store's counter.

    The ledger of the AES-GCM usage budget (swrly.keys.usage): the key store counts each seal
    at once; `encryption_key_usage_record` adds those counts here. A key's total is this row
    plus what the key store still holds.
    """

    key_id = models.CharField(max_length=16, primary_key=True)
    sealed = models.PositiveBigIntegerField(default=0)
    first_recorded_at = models.DateTimeField()
    last_recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_recorded_at"]

    def __str__(self) -> str:
        return f"{self.key_id}: {self.sealed} sealed"


class FingerprintSalt(models.Model):
    """A tenant's fingerprint salt: the HMAC key of its v2 key fingerprints.

    Made the first time the tenant needs it. Readable by the tenant's owners, admins and
    auditors, so they can fingerprint a key themselves; it protects no key (provider keys are
    long random strings that no one can guess from a fingerprint), it keeps one tenant's
    fingerprints unrelated to another's.
    """

    tenant = models.OneToOneField(
        "tenants.Tenant",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="fingerprint_salt",
    )
    salt = models.CharField(max_length=64)  # 32 bytes, hex
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"fingerprint salt of {self.tenant_id}"


class BlockedKey(models.Model):
    """A customer key registered as compromised, by fingerprint: no run may present it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="blocked_keys"
    )
    provider = models.CharField(max_length=32)
    fingerprint = models.CharField(max_length=80)
    hint = models.CharField(max_length=40, blank=True)  # known when the key itself was given
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "fingerprint"], name="blockedkey_unique_fingerprint"
            ),
        ]

    def __str__(self) -> str:
        return f"blocked {self.provider} {self.fingerprint[:15]}"
