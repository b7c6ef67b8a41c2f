"""Handing a run to a worker: the `execute_run` task, sent by its name.

The services and the executor enqueue through here instead of importing runs/tasks.py, which
imports them: the runs app's imports form no cycle. Only the run's id enters the broker.
"""

import uuid

from celery import current_app

EXECUTE_RUN = "runs.tasks.execute_run"


def enqueue_run(run_id: uuid.UUID | str, *, countdown: float | None = None) -> None:
    """Publish `execute_run` for the run (to be run `countdown` seconds from now, if given);
    raises whatever the broker raises."""
    current_app.send_task(EXECUTE_RUN, args=[str(run_id)], countdown=countdown)
