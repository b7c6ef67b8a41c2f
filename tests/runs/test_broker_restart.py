"""A broker restart under load: every worker process survives and new runs succeed.

This is the test that proves the pinned engine (celery, kombu, redis-py in constraints.txt).
The broker is stopped while both worker processes hold unacknowledged runs and started again
once both have noticed, three times over. With celery 5.7.0 / kombu 5.7.0 / redis-py 8.1.0 it
fails: both workers exit (`AttributeError: 'NoneType' object has no attribute 'hostname'`,
docs/operations.md, "Known engine bug").

With SWRLY_TEST_BROKER=amqp (.ci/run) the broker is a RabbitMQ virtual host reached through a
relay the test owns: RabbitMQ is a shared service and is never restarted, so stopping the relay
(every connection dropped, new ones refused) is the restart as the workers see it, and the
quorum queues keep their messages as across a real restart.
"""

import re
import time

import pytest

from runs.executor import runs_requeue
from runs.models import Run, RunStatus
from tenants.models import Role
from tests.runs.real_workers import wait_until, worker_env

SLOW = "[sandbox:sleep=2] busy"
WORKERS = ("w1", "w2")
THREADS = 4  # as `make run` starts its run worker
RESTARTS = 3


def _workflow(api, prompt):
    steps = [{"name": "s", "provider": "sandbox", "model": "sandbox-1", "prompt": prompt}]
    response = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _trigger(api, workflow_id, count, label):
    ids = []
    for index in range(count):
        response = api.post(
            "/api/v1/runs/",
            {
                "workflow": workflow_id,
                "provider_keys": {"sandbox": f"sk-sandbox-restart-{label}-{index:04d}"},
            },
            "application/json",
        )
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    return ids


# What a worker logs once it has noticed its broker is gone: celery's "Connection to broker lost"
# warning, then "Cannot connect to …" for each reconnection attempt. Either counts. (CI once gave
# up waiting while both workers' logs showed reconnection attempts within 2 s of the stop; the
# 6,000-character tail it printed did not reach back far enough to show the warning.)
_NOTICED = re.compile(r"Connection to broker lost|consumer: Cannot connect to")


def _losses(workers, name):
    return len(_NOTICED.findall(workers.log(name)))


def _statuses(ids):
    return dict(Run.objects.filter(pk__in=ids).values_list("pk", "status"))


@pytest.mark.django_db(transaction=True)
def test_every_worker_survives_broker_restarts_under_load(
    acme, key_store, provider_server, broker, workers, settings
):
    env = worker_env(broker_url=broker.url, provider_url=provider_server.url)
    for name in WORKERS:
        workers.worker(name, env, "--pool=threads", f"--concurrency={THREADS}")
    # Both consuming before the first runs: else one worker can take them all while the other is
    # still starting, and a worker that never connected has no connection to lose.
    wait_until(
        lambda: all(re.search(rf"{name}@\S+ ready\.", workers.log(name)) for name in WORKERS),
        timeout=45,
        what="every worker to be ready",
        on_fail=workers.logs,
    )
    api = acme.api(Role.DEVELOPER)
    slow_workflow = _workflow(api, SLOW)
    fast_workflow = _workflow(api, "after the restart")
    triggered = []

    for restart in range(RESTARTS):
        slow = _trigger(api, slow_workflow, 2 * len(WORKERS), f"slow{restart}")
        triggered += slow
        # The workers busy: they hold unacknowledged messages when the broker goes away.
        wait_until(
            lambda slow=slow: (
                list(_statuses(slow).values()).count(RunStatus.RUNNING) >= len(WORKERS)
            ),
            timeout=45,
            what="every worker to be running a run",
            on_fail=workers.logs,
        )
        # A real restart takes a while: the broker stays down until every worker has noticed.
        lost = {name: _losses(workers, name) for name in WORKERS}
        broker.stop()
        wait_until(
            lambda lost=lost: all(
                _losses(workers, name) > lost[name] or name in workers.dead() for name in WORKERS
            ),
            timeout=45,
            what="every worker to notice the broker is gone",
            on_fail=lambda lost=lost: (
                f"noticed before the stop {lost}, now "
                f"{ {name: _losses(workers, name) for name in WORKERS} }\n{workers.logs()}"
            ),
        )
        broker.start()

        fast = _trigger(api, fast_workflow, 2, f"fast{restart}")
        triggered += fast
        wait_until(
            lambda fast=fast: set(_statuses(fast).values()) == {RunStatus.SUCCEEDED},
            timeout=45,
            what=f"the runs triggered after restart {restart + 1} to succeed",
            on_fail=lambda: f"{workers.dead()=}\n{workers.logs()}",
        )
        assert workers.dead() == {}, workers.logs()

    # Nothing is stranded: every run, the ones in flight during a restart included, ends. A
    # message a worker had popped from the broker's list but not yet recorded as unacknowledged
    # when the broker went away is gone with the connection (the Redis transport's window); the
    # run then stays queued until the sweeper enqueues it again, as beat does in production
    # every RUN_REQUEUE_AFTER. The sweep is run here (with RUN_REQUEUE_AFTER at 0) for the runs
    # still queued once the others have finished; each must then succeed.
    def settled():
        statuses = _statuses(triggered)
        return set(statuses.values()) <= {RunStatus.SUCCEEDED, RunStatus.QUEUED} and (
            list(statuses.values()).count(RunStatus.QUEUED) <= len(WORKERS)
        )

    wait_until(
        settled,
        timeout=45,
        what="every run to succeed or stay queued",
        on_fail=lambda: f"{_statuses(triggered)}\n{workers.logs()}",
    )
    time.sleep(5)  # a late delivery of a still-queued run has time to be claimed
    stranded = [pk for pk, status in _statuses(triggered).items() if status == RunStatus.QUEUED]
    if stranded:
        settings.RUN_REQUEUE_AFTER = 0
        assert runs_requeue() >= len(stranded)
    wait_until(
        lambda: set(_statuses(triggered).values()) == {RunStatus.SUCCEEDED},
        timeout=45,
        what=f"every run to succeed ({len(stranded)} enqueued again by the sweeper)",
        on_fail=lambda: f"{_statuses(triggered)}\n{workers.logs()}",
    )
    assert workers.dead() == {}, workers.logs()
    for name in WORKERS:
        assert "Unrecoverable error" not in workers.log(name), workers.logs()
