"""The Celery application. Tasks receive ids only; a provider key never enters the broker."""

import contextlib
import os
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
)
from celery.worker.consumer import Consumer as WorkerConsumer

from swrly.logs import TASK_HEADER, keep_logging_setting, request_id_scope, stamp_task_headers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")

app = Celery("swrly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The request id rides along with every task published while a request is handled.
before_task_publish.connect(stamp_task_headers, weak=False)
# Workers log as LOGGING says (plain or JSON, with request ids), not in Celery's own format.
setup_logging.connect(keep_logging_setting, weak=False)


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


class WakeLoopWhenTaskDone(bootsteps.StartStopStep):
    """With the threads pool, wake the worker's event loop as soon as a task has finished.

    The worker reserves at most `concurrency * prefetch multiplier` messages (acks_late): once
    it holds that many, it stops reading the queue until one is acknowledged. The threads pool
    acknowledges from the task's thread, which does not wake the event loop; the loop noticed
    only on its next timer (up to 2 s, the broker heartbeat), so a busy worker idled between
    batches (celery/celery#6941; measured in bench/runs.py: runs/s capped by the stall). Here
    each finished task (its acknowledgement included) writes a byte to a pipe the loop reads,
    so the loop turns at once and fetches the next message. The prefork pool wakes the loop by
    itself (its results arrive on pipes the loop watches); other pools are left alone.
    """

    requires = ("celery.worker.components:Pool",)

    def register_with_event_loop(self, worker: Any, hub: Any) -> None:
        """Watch the pool's wake-up pipe in `hub`.

        Called again each time the consumer restarts (a lost broker connection): the pipe and
        the pool's wrapper are made once per pool, and only the reader is registered anew.
        """
        from celery.concurrency.thread import TaskPool as ThreadTaskPool

        pool = worker.pool
        if not isinstance(pool, ThreadTaskPool):
            return
        read_fd = getattr(pool, "swrly_wake_fd", None)
        if read_fd is None:
            read_fd = pool.swrly_wake_fd = _wake_on_task_done(pool)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while os.read(read_fd, 4096):
                    pass

        hub.add_reader(read_fd, drain)


def _wake_on_task_done(pool: Any) -> int:
    """Wrap `pool.on_apply` so each task's callback is followed by a byte on a new pipe;
    returns the pipe's read end."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)

    def wake() -> None:
        # A full pipe already holds a wake-up the loop has not read: nothing is lost.
        with contextlib.suppress(BlockingIOError):
            os.write(write_fd, b"\0")

    apply = pool.on_apply

    def on_apply(target: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        callback = options.get("callback")
        if callback is not None:

            def done(*result: Any) -> None:
                try:
                    callback(*result)  # Request.on_success: the late ack happens here
                finally:
                    wake()

            options["callback"] = done
        return apply(target, args, kwargs, **options)

    pool.on_apply = on_apply
    return read_fd


app.steps["worker"].add(WakeLoopWhenTaskDone)


class Consumer(WorkerConsumer):
    """The worker's consumer (CELERY_WORKER_CONSUMER): on RabbitMQ, every connection it makes
    first declares every queue of CELERY_TASK_QUEUES with its exchange.

    A worker declares only the queues it consumes, but Celery's native delayed delivery (a
    retry's countdown on quorum queues) binds every queue's exchange when the worker starts: the
    first worker on a new virtual host found the other queue's exchange missing, logged a
    critical error and ran without delayed delivery. Declaring is idempotent; Redis needs none.
    """

    def connect(self) -> Any:
        connection = super().connect()
        if connection.transport.driver_type == "amqp":
            channel = connection.default_channel
            for queue in self.app.amqp.queues.values():
                queue(channel).declare()
        return connection
