"""Celery tasks of the audit app (beat, on the maintenance queue)."""

from celery import shared_task

from swrly.audit.checkpoints import audit_checkpoint_all
from swrly.audit.webhooks import audit_webhooks_deliver_due
from swrly.audit.writer import audit_flush_suppressed


@shared_task(name="swrly.audit.tasks.flush_audit_suppressed", ignore_result=True)
def flush_audit_suppressed() -> int:
    """Record the audit events a flood bound held back, once their window has closed."""
    return audit_flush_suppressed()


@shared_task(name="swrly.audit.tasks.audit_checkpoint", ignore_result=True)
def audit_checkpoint() -> int:
    """Sign a checkpoint for every audit chain with new events. Returns checkpoints signed."""
    return sum(1 for outcome in audit_checkpoint_all() if outcome.checkpoint is not None)


@shared_task(name="swrly.audit.tasks.deliver_audit_webhooks", ignore_result=True)
def deliver_audit_webhooks() -> int:
    """Send every due audit webhook its pending events (retries follow the back-off)."""
    return audit_webhooks_deliver_due()
