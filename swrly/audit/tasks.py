"""Celery tasks of the audit app (beat, on the maintenance queue)."""

from celery import shared_task

from swrly.audit.checkpoints import audit_checkpoint_all
from swrly.audit.writer import audit_flush_suppressed


@shared_task(name="swrly.audit.tasks.flush_audit_suppressed", ignore_result=True)
def flush_audit_suppressed() -> int:
    """Record the audit events a flood bound held back, once their window has closed."""
    return audit_flush_suppressed()


@shared_task(name="swrly.audit.tasks.audit_checkpoint", ignore_result=True)
def audit_checkpoint() -> int:
    """Sign a checkpoint for every audit chain with new events. Returns checkpoints signed."""
    return sum(1 for outcome in audit_checkpoint_all() if outcome.checkpoint is not None)
