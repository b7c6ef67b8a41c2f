"""Celery tasks. They receive run ids only: a provider key never enters the broker."""

from celery import shared_task

from runs.executor import run_execute, runs_reap


@shared_task(name="runs.tasks.execute_run", acks_late=True, ignore_result=True)
def execute_run(run_id: str) -> None:
    """Execute one run (a duplicate delivery finds it claimed and does nothing)."""
    run_execute(run_id=run_id)


@shared_task(name="runs.tasks.reap_runs", ignore_result=True)
def reap_runs() -> dict[str, int]:
    """Every minute, on the maintenance queue: fail runs whose worker was lost and queued runs
    whose keys expired; enqueue again queued runs that no worker claimed in time."""
    return runs_reap()
