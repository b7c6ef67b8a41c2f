"""A worker killed mid-step (kill -9): the run does not stay `running`, the step that reached the
provider says so (never `skipped`), and the key is never used again — not by a redelivery of
its message, not by the reaper."""

import os
import signal
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
