"""The Celery application. Tasks receive ids only; a provider key never enters the broker."""

import contextlib
import os
import threading

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_init

from swrly.logs import TASK_HEADER, request_id_scope, stamp_task_headers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")

app = Celery("swrly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The request id rides along with every task published while a request is handled.
before_task_publish.connect(stamp_task_headers, weak=False)


@worker_init.connect
def _refuse_misconfigured_worker(**_: object) -> None:
    from swrly.checks import raise_on_startup_errors

    raise_on_startup_errors()


# One scope per task being executed, by task id, open until Celery has logged its outcome (a
# failure is logged before task_postrun is sent): the task's keys stay known to redaction, and
# its log lines carry the request id of the request that queued it.
_task_scopes: dict[str, contextlib.ExitStack] = {}
_task_scopes_lock = threading.Lock()


@task_prerun.connect
def _open_task_scope(task_id: str | None = None, task: object = None, **_: object) -> None:
    from swrly.keys.secret import redaction_scope

    stack = contextlib.ExitStack()
    stack.enter_context(redaction_scope())
    stack.enter_context(
        request_id_scope(getattr(getattr(task, "request", None), TASK_HEADER, None))
    )
    with _task_scopes_lock:
        _task_scopes[str(task_id)] = stack


@task_postrun.connect
def _close_task_scope(task_id: str | None = None, **_: object) -> None:
    with _task_scopes_lock:
        stack = _task_scopes.pop(str(task_id), None)
    if stack is not None:
        stack.close()
