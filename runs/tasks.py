"""Celery tasks. They receive run ids only: a provider key never enters the broker."""

import logging

from celery import shared_task

from runs.executor import run_execute, runs_reap
from runs.services import orphan_tokens_sweep

log = logging.getLogger(__name__)


@shared_task(name="runs.tasks.execute_run", acks_late=True, ignore_result=True)
def execute_run(run_id: str) -> None:
    """Execute one run (a duplicate delivery finds it claimed and does nothing)."""
    run = run_execute(run_id=run_id)
    if run is not None:
        log.info("run %s ended %s %s", run_id, run.status, run.error_code)


@shared_task(name="runs.tasks.reap_runs", ignore_result=True)
def reap_runs() -> dict[str, int]:
    """Fail runs whose worker was lost and queued runs whose keys expired (every minute)."""
    return runs_reap()


@shared_task(name="runs.tasks.sweep_orphan_tokens", ignore_result=True)
def sweep_orphan_tokens() -> int:
    """Delete tokens whose run does not exist or was already started (every minute)."""
    return orphan_tokens_sweep()
