"""A worker killed mid-step (kill -9): the run does not stay `running`, the step that reached the
provider says so (never `skipped`), and the key is never used again — not by a redelivery of
its message, not by the reaper."""

import os
import re
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.executor import run_execute, runs_reap
from runs.models import Run, RunError, RunStatus, StepRun, StepStatus
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.runs.real_workers import wait_until, worker_env

KEY = "sk-sandbox-killed-0123456789abcdef"


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_step_ends_its_run_and_never_reuses_the_key(
    acme, key_store, provider_server, broker, workers, settings
):
    env = worker_env(broker_url=broker.url, provider_url=provider_server.url)
    victim = workers.worker("victim", env, "--pool=threads", "--concurrency=1")
    api = acme.api(Role.DEVELOPER)
    steps = [
        {
            "name": "slow",
            "provider": "sandbox",
            "model": "sandbox-1",
            "prompt": "[sandbox:sleep=20] a",
        },
        {"name": "after", "provider": "sandbox", "model": "sandbox-1", "prompt": "b"},
    ]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    from tests.runs.real_workers import publishing_to

    with publishing_to(broker.url):
        response = api.post(
            "/api/v1/runs/",
            {"workflow": workflow.json()["id"], "provider_keys": {"sandbox": KEY}},
            "application/json",
        )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]

    # when: the worker is killed while the provider holds the first step's request
    wait_until(
        lambda: any(KEY in str(r.headers) for r in provider_server.requests),
        timeout=45,
        what="the first step to reach the provider",
        on_fail=workers.logs,
    )
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=15)

    # a redelivery of its message (visibility timeout, or the sweeper) finds the run claimed
    assert run_execute(run_id=run_id, worker="survivor") is None
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.RUNNING  # nobody ran it again

    # then: the reaper ends it once the worker has been silent for RUN_INTERRUPTED_AFTER
    later = timezone.now() + timedelta(seconds=settings.RUN_INTERRUPTED_AFTER + 1)
    assert runs_reap(now=later)["interrupted"] == 1
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.INTERRUPTED)
    first, second = StepRun.objects.filter(run=run).order_by("position")
    assert first.status == StepStatus.FAILED
    assert "provider" in first.error  # it may have received (and billed) the request
    assert second.status == StepStatus.SKIPPED
    # the key reached the provider exactly once, and no token of it is left
    assert sum(KEY in str(r.headers) for r in provider_server.requests) == 1
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []


@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_unacknowledged_run_is_redelivered_and_left_alone(
    acme, key_store, provider_server, broker, workers, settings
):
    """acks_late: the message of a run whose worker died is handed to another worker, which
    finds the run claimed and acknowledges it without using the key again. RabbitMQ hands it
    over as soon as the dead worker's connection closes; the Redis broker once the visibility
    timeout (5 s here) has passed, when a worker restores unacknowledged messages: at its start
    and every 100 s after (kombu's cadence), so there the survivor starts once it has passed."""
    env = worker_env(
        broker_url=broker.url, provider_url=provider_server.url, CELERY_VISIBILITY_TIMEOUT="5"
    )
    victim = workers.worker("victim", env, "--pool=threads", "--concurrency=1")
    api = acme.api(Role.DEVELOPER)
    slow = "[sandbox:sleep=20] a"
    steps = [{"name": "slow", "provider": "sandbox", "model": "sandbox-1", "prompt": slow}]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {"sandbox": KEY}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    wait_until(
        lambda: any(KEY in str(r.headers) for r in provider_server.requests),
        timeout=45,
        what="the step to reach the provider",
        on_fail=workers.logs,
    )

    # when: its worker dies holding the unacknowledged message, and another worker starts
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=15)
    if broker.kind == "redis":
        visible_at = time.monotonic() + 6
        wait_until(lambda: time.monotonic() > visible_at, timeout=30, what="the visibility timeout")
    workers.worker("survivor", env, "--pool=threads", "--concurrency=1")

    # then: the survivor receives the message and acknowledges it (acks_late: on success)
    wait_until(
        lambda: re.search(
            r"Task runs\.tasks\.execute_run\[[^\]]+\] succeeded", workers.log("survivor")
        ),
        timeout=60,
        what="the survivor to receive and finish the dead worker's message",
        on_fail=workers.logs,
    )
    assert broker.message_count(settings.CELERY_TASK_DEFAULT_QUEUE) == 0
    assert Run.objects.get(pk=run_id).status == RunStatus.RUNNING  # claimed by the dead worker
    assert sum(KEY in str(r.headers) for r in provider_server.requests) == 1
    assert workers.dead() == {"victim": -signal.SIGKILL}, workers.logs()
