"""A tenant's audit webhooks: creating and deleting them (owners only), and reading their state.

Delivery itself is swrly/audit/webhooks.py (a beat task on the maintenance queue).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from swrly.audit.models import AuditWebhook
from swrly.audit.webhook_policy import WebhookRefused, parse_destination
from swrly.audit.webhooks import WebhookState, new_secret, seal_secret, webhook_state
from swrly.audit.writer import audit_record
from tenants.access import scoped
from tenants.authority import AuthorityLost, Principal
from tenants.models import Role, Tenant
from tenants.services import _authority


def _require_owner(by: Principal, tenant: Tenant) -> None:
    if _authority(by, tenant) != Role.OWNER:
        raise AuthorityLost("only an owner can create or delete audit webhooks")


@transaction.atomic
def audit_webhook_create(
    *, tenant: Tenant, url: str, by: Principal, request: HttpRequest | None = None
) -> tuple[AuditWebhook, str]:
    """A new webhook that will receive the tenant's whole audit chain, from its first event.

    The URL must pass the operator's policy (swrly/audit/webhook_policy.py). The secret is
    returned once, for the caller to show; only its sealed form and a short prefix are kept.
    """
    _require_owner(by, tenant)
    try:
        parse_destination(url)
    except WebhookRefused as exc:
        raise ValidationError(str(exc)) from None
    # Locks the tenant row, so two concurrent creations cannot both pass the limit.
    Tenant.objects.select_for_update(of=("self",)).filter(pk=tenant.pk).first()
    if scoped(AuditWebhook, tenant).count() >= settings.AUDIT_WEBHOOK_MAX_PER_TENANT:
        raise ValidationError(
            f"A tenant has at most {settings.AUDIT_WEBHOOK_MAX_PER_TENANT} audit webhooks."
        )
    webhook_id = uuid.uuid4()
    secret = new_secret()
    key_id, sealed = seal_secret(webhook_id, secret)
    webhook = AuditWebhook.objects.create(
        id=webhook_id,
        tenant=tenant,
        url=url,
        secret_sealed=sealed,
        secret_key_id=key_id,
        secret_prefix=secret[:10],
        created_at=timezone.now(),
        created_by=by.actor.label[:300],
    )
    audit_record(
        tenant=tenant,
        action="audit.webhook_created",
        actor=by.actor,
        target=f"webhook:{webhook.pk}",
        metadata={"url": webhook.url_display, "secret_prefix": webhook.secret_prefix},
        request=request,
    )
    return webhook, secret


@transaction.atomic
def audit_webhook_delete(
    *, webhook: AuditWebhook, by: Principal, request: HttpRequest | None = None
) -> None:
    """Stop streaming to a webhook and forget it (its creation and deletion stay audited)."""
    _require_owner(by, webhook.tenant)
    audit_record(
        tenant=webhook.tenant,
        action="audit.webhook_deleted",
        actor=by.actor,
        target=f"webhook:{webhook.pk}",
        metadata={"url": webhook.url_display, "delivered_seq": webhook.delivered_seq},
        request=request,
    )
    AuditWebhook.objects.filter(pk=webhook.pk, tenant=webhook.tenant).delete()


def audit_webhooks_with_state(*, tenant: Tenant) -> list[tuple[AuditWebhook, WebhookState]]:
    """The tenant's webhooks, oldest first, each with how far behind the chain it is."""
    webhooks: QuerySet[AuditWebhook] = scoped(AuditWebhook, tenant).order_by("created_at", "id")
    return [(webhook, webhook_state(webhook)) for webhook in webhooks]
