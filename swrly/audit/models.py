"""The audit log's rows: events, chain heads, signed checkpoints and flood counters.

The tables keep the names they had when these models lived in `tenants` (`tenants_audit*`):
the PostgreSQL append-only triggers are defined on them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, NoReturn, cast

from django.conf import settings
from django.db import models

if TYPE_CHECKING:
    from tenants.models import Tenant


class AppendOnlyQuerySet(models.QuerySet[Any]):
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


def tenant_model() -> type[Tenant]:
    """tenants.Tenant, as the audit rows' foreign key names it (this app imports no app; the
    type checker alone is told which model that is)."""
    return cast("type[Tenant]", AuditEvent._meta.get_field("tenant").related_model)


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

    class Meta:
        db_table = "tenants_auditchainhead"

    def __str__(self) -> str:
        return f"{self.chain}@{self.seq}"


class AuditEvent(AppendOnlyModel):
    """One security-relevant action. Append-only and hash-chained per tenant."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
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
    # key named by key_id (swrly/audit/keys.py). Both are covered by the hash.
    hash_version = models.PositiveSmallIntegerField(default=1)
    key_id = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        db_table = "tenants_auditevent"
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
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_checkpoints",
    )
    seq = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    prev_signature = models.CharField(max_length=128, blank=True)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=128)

    class Meta:
        db_table = "tenants_auditcheckpoint"
        ordering = ["chain", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "seq"], name="auditcheckpoint_chain_seq_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.chain}#{self.seq}"


class AuditSuppression(models.Model):
    """A counter of repeated audit events that an outsider can trigger, per window.

    Not part of the chain: a staging count that `swrly.audit.writer.audit_record_bounded` keeps so
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
        db_table = "tenants_auditsuppression"
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "action", "source", "window_start"], name="auditsuppression_unique"
            ),
        ]
        indexes = [models.Index(fields=["chain", "window_start"], name="auditsuppression_chain")]

    def __str__(self) -> str:
        return f"{self.chain} {self.action} {self.source}@{self.window_start}: {self.count}"


class AuditWebhook(models.Model):
    """A tenant's HTTPS endpoint that receives every event of its audit chain, in order.

    The signing secret is kept sealed (AES-256-GCM under a key derived from SECRET_KEY,
    swrly/audit/webhooks.py): it must be usable to sign deliveries, so it cannot be hashed, and
    it is shown only once, when the webhook is created. The other fields are the delivery state.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="audit_webhooks"
    )
    url = models.CharField(max_length=2000)
    secret_sealed = models.TextField()
    secret_key_id = models.CharField(max_length=16)
    secret_prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=300)
    # The last event the receiver acknowledged (2xx), and when that event was recorded.
    delivered_seq = models.BigIntegerField(default=0)
    delivered_event_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    failures = models.PositiveIntegerField(default=0)  # consecutive failed attempts
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # null: at the next sweep
    # A delivery in progress holds the webhook until then, so two workers never send at once.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["tenant", "created_at"], name="auditwebhook_tenant")]

    def __str__(self) -> str:
        return f"webhook {self.id} ({self.tenant_id})"

    @property
    def url_display(self) -> str:
        """The URL without its query (which may hold a collector's token)."""
        head, sep, _query = self.url.partition("?")
        return head + ("?…" if sep else "")
