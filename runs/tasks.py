"""Celery tasks. They receive run ids only: a provider key never enters the broker."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from runs.executor import ClaimFailed, RunReleased, run_defer, run_execute, runs_reap
from runs.fairness import TenantBusy
from runs.queue import EXECUTE_RUN
from runs.retention import run_content_purge
from runs.services import orphan_tokens_sweep

log = logging.getLogger(__name__)

CLAIM_RETRY_DELAY = 10  # seconds; the sweeper takes over if the database stays away longer


@shared_task(name=EXECUTE_RUN, bind=True, acks_late=True, ignore_result=True, max_retries=5)
def execute_run(self: Any, run_id: str) -> None:
    """Execute one run (a duplicate delivery finds it claimed and does nothing).

    When the database does not answer the claim, the run is still queued: the task is sent
    again rather than acknowledged and forgotten. When the run's tenant is at its running
    limit, the run stays queued with its keys and is enqueued again a little later. When the
    key store did not answer before any key was taken, the run was queued again with its keys
    (RunReleased): the task is sent again RUN_KEY_STORE_RETRY_DELAY seconds later. The run
    counts its releases (`Run.releases`) and fails `key_store_unavailable` past
    RUN_KEY_STORE_RETRIES; the message's own retry budget is widened by as many, so it never
    cuts them short. If the broker refuses the retry, the run stays queued and the sweeper
    enqueues it again after RUN_REQUEUE_AFTER.
    """
    try:
        run = run_execute(run_id=run_id)
    except ClaimFailed as exc:
        raise self.retry(exc=exc, countdown=CLAIM_RETRY_DELAY) from None
    except RunReleased as exc:
        raise self.retry(
            exc=exc,
            countdown=settings.RUN_KEY_STORE_RETRY_DELAY,
            max_retries=self.max_retries + settings.RUN_KEY_STORE_RETRIES,
        ) from None
    except TenantBusy:
        log.info("run %s waits: its tenant is at its running limit", run_id)
        run_defer(run_id)
        return
    if run is not None:
        log.info("run %s ended %s %s", run_id, run.status, run.error_code)


@shared_task(name="runs.tasks.reap_runs", ignore_result=True)
def reap_runs() -> dict[str, int]:
    """Every minute, on the maintenance queue: fail runs whose worker was lost and queued runs
    whose keys expired; enqueue again queued runs that no worker claimed in time."""
    return runs_reap()


@shared_task(name="runs.tasks.sweep_orphan_tokens", ignore_result=True)
def sweep_orphan_tokens() -> int:
    """Delete tokens whose run does not exist or was already started (every minute)."""
    return orphan_tokens_sweep()


@shared_task(name="runs.tasks.purge_run_content", ignore_result=True)
def purge_run_content() -> dict[str, int]:
    """Every RETENTION_PURGE_INTERVAL seconds, on the maintenance queue: purge the content of
    runs past their tenant's retention period (runs.retention)."""
    return run_content_purge()
