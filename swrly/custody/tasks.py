"""Celery tasks of the custody app (beat, on the maintenance queue)."""

from celery import shared_task

from swrly.custody.key_usage import encryption_key_usage_record


@shared_task(name="swrly.custody.tasks.record_key_usage", ignore_result=True)
def record_key_usage() -> int:
    """Move the key store's seal counts into the ledger. Returns the seals moved."""
    return sum(encryption_key_usage_record().values())
