"""Celery tasks of the tenants app."""

from celery import shared_task

from tenants.audit import audit_flush_suppressed


@shared_task(name="tenants.tasks.flush_audit_suppressed", ignore_result=True)
def flush_audit_suppressed() -> int:
    """Record the audit events a flood bound held back, once their window has closed."""
    return audit_flush_suppressed()
