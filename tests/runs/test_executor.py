"""Every way a run can end, through the real executor, key store and sandbox provider.

Runs are created through the API (which deposits the keys); the executor is then called the way
the Celery task calls it, except where a test needs the worker itself (cancelling a running run).
"""

import logging
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.executor import run_execute, runs_reap
from runs.models import Run, RunError, RunStatus, StepRun, StepStatus
from swrly.audit.models import AuditEvent
from swrly.keys.secret import live_secrets
from swrly.keys.store import KEY_PATTERN, redis_key
from tenants.models import Role
from tests.runs.conftest import wait_for_run

KEY = "sk-ant-api03-canary-executor-0123456789"


def _steps(*prompts, provider="anthropic"):
    return [
        {"name": f"s{i}", "provider": provider, "model": "m", "prompt": prompt}
        for i, prompt in enumerate(prompts)
    ]


def _queued_run(world, steps, key=KEY, provider="anthropic"):
    api = world.api(Role.DEVELOPER)
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {provider: key}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["id"])


def _token_name(run, provider="anthropic"):
    return redis_key(tenant_id=run.tenant_id, run_id=run.pk, provider=provider)


def _audited(run):
    return list(
        AuditEvent.objects.filter(target=f"run:{run.pk}")
        .order_by("seq")
        .values_list("action", flat=True)
    )


def test_a_run_whose_token_expired_fails_key_expired(acme, key_store, provider_server):
    run = _queued_run(acme, _steps("hello"))
    key_store.delete(_token_name(run))  # what Redis does at the TTL
    Run.objects.filter(pk=run.pk).update(keys_expire_at=timezone.now() - timedelta(seconds=1))

    run = run_execute(run_id=str(run.pk))

    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.KEY_EXPIRED)
    assert "key.expired" in _audited(run)
    assert provider_server.requests == []
    assert run.step_runs.get().status == StepStatus.SKIPPED


def test_a_run_whose_token_vanished_early_fails_key_missing(acme, key_store, provider_server):
    run = _queued_run(acme, _steps("hello"))
    key_store.delete(_token_name(run))
    run = run_execute(run_id=str(run.pk))
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.KEY_MISSING)
    assert "key.missing" in _audited(run)


def test_a_tampered_token_fails_key_rejected_and_is_a_security_event(
    acme, key_store, provider_server, caplog
):
    run = _queued_run(acme, _steps("hello"))
    token = bytearray(key_store.get(_token_name(run)))
    token[30] ^= 0x40
    key_store.set(_token_name(run), bytes(token), keepttl=True)
    with caplog.at_level(logging.WARNING, logger="swrly.security"):
        run = run_execute(run_id=str(run.pk))
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.KEY_REJECTED)
    rejected = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.rejected")
    assert rejected.metadata["reason"] == "TokenAuthenticationFailed"
    assert any("rejected" in r.getMessage() for r in caplog.records)
    assert provider_server.requests == []


def test_a_key_the_provider_refuses_fails_provider_auth_failed_redacted(
    acme, key_store, provider_server_factory
):
    server = provider_server_factory(expected_keys={"sk-ant-some-other-key-entirely"})
    run = _queued_run(acme, _steps("[sandbox:echo-key] one", "two"))
    run = run_execute(run_id=str(run.pk))
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.PROVIDER_AUTH_FAILED)
    first, second = run.step_runs.order_by("position")
    assert (first.status, first.http_status, first.attempts) == (StepStatus.FAILED, 401, 1)
    assert second.status == StepStatus.SKIPPED
    assert len(server.requests) == 1
    assert KEY not in first.error + run.error_message
    assert "[REDACTED]" in first.error


def test_provider_errors_are_retried_then_fail_provider_error(
    acme, key_store, provider_server, retry_delays, settings
):
    settings.PROVIDER_MAX_RETRIES = 2
    run = _queued_run(acme, _steps("[sandbox:status=500] always failing"))
    run = run_execute(run_id=str(run.pk), pause=retry_delays.append)
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.PROVIDER_ERROR)
    step = run.step_runs.get()
    assert (step.http_status, step.attempts) == (500, 3)
    assert len(retry_delays) == 2
    assert step.provider_request_id


def test_a_transient_429_is_retried_and_the_run_succeeds(
    acme, key_store, provider_server, retry_delays
):
    run = _queued_run(acme, _steps("[sandbox:fail=1 status=429] [sandbox:retry-after=3] busy"))
    run = run_execute(run_id=str(run.pk), pause=retry_delays.append)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.step_runs.get().attempts == 2
    assert retry_delays == [3.0]


def test_a_provider_that_does_not_answer_in_time_fails_timeout(
    acme, key_store, provider_server, settings
):
    settings.PROVIDER_READ_TIMEOUT = 0.3
    run = _queued_run(acme, _steps("[sandbox:sleep=2] slow"))
    run = run_execute(run_id=str(run.pk))
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.TIMEOUT)
    assert run.step_runs.get().attempts == 1


def test_a_provider_without_an_allowed_address_fails_egress_refused(
    acme, key_store, provider_server, settings
):
    run = _queued_run(acme, _steps("hello"))
    settings.PROVIDER_BASE_URLS = {"openai": provider_server.url}
    run = run_execute(run_id=str(run.pk))
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.EGRESS_REFUSED)
    assert provider_server.requests == []


def test_a_duplicate_delivery_or_a_resurrected_token_never_runs_twice(
    acme, key_store, provider_server
):
    run = _queued_run(acme, _steps("once"))
    token = key_store.get(_token_name(run))
    assert run_execute(run_id=str(run.pk)).status == RunStatus.SUCCEEDED
    # a failover brings the token back, and the task is delivered again
    key_store.set(_token_name(run), token, ex=60)
    assert run_execute(run_id=str(run.pk)) is None
    assert len(provider_server.requests) == 1
    assert _audited(run).count("key.consumed") == 1


def test_keys_are_released_when_the_run_ends(acme, key_store, provider_server):
    run = _queued_run(acme, _steps("hello"))
    run = run_execute(run_id=str(run.pk))
    assert KEY not in live_secrets()
    finished = AuditEvent.objects.get(target=f"run:{run.pk}", action="run.succeeded")
    assert finished.metadata["keys_released"] == ["anthropic"]
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    # the same story over the API, for auditors too
    timeline = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/timeline/").json()
    (key,) = timeline["keys"]
    assert key["provider"] == "anthropic"
    assert key["fingerprint"] == run.key_fingerprints["anthropic"]["fingerprint"]
    assert [entry["kind"] for entry in key["entries"]] == ["deposited", "consumed", "released"]


def test_cancelling_a_queued_run_discards_its_tokens_at_once(acme, key_store, provider_server):
    run = _queued_run(acme, _steps("hello"))
    response = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    discarded = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.discarded")
    assert discarded.metadata["token_found"] is True
    assert discarded.metadata["fingerprint"] == run.key_fingerprints["anthropic"]["fingerprint"]
    assert set(run.step_runs.values_list("status", flat=True)) == {StepStatus.SKIPPED}
    assert run_execute(run_id=str(run.pk)) is None
    assert provider_server.requests == []
    again = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_finished"


def test_cancelling_a_running_run_stops_it_before_the_next_step(
    acme, provider_server, celery_worker
):
    run = _queued_run(acme, _steps("[sandbox:sleep=1] first", "second"))
    _wait_for_step(run, 0, StepStatus.RUNNING)  # the first call is in flight
    response = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["cancel_requested_at"] is not None

    run = wait_for_run(run.pk)

    assert run.status == RunStatus.CANCELLED
    assert [s.status for s in run.step_runs.order_by("position")] == [
        StepStatus.SUCCEEDED,
        StepStatus.SKIPPED,
    ]
    assert len(provider_server.requests) == 1
    assert {"run.cancel_requested", "run.cancelled"} <= set(_audited(run))


def test_a_run_the_reaper_ended_is_not_continued_or_overwritten(
    acme, provider_server, celery_worker, settings
):
    run = _queued_run(acme, _steps("[sandbox:sleep=1] first", "second"))
    _wait_for_step(run, 0, StepStatus.RUNNING)
    # the reaper, believing the worker lost, ends the run while its first call is in flight
    later = timezone.now() + timedelta(seconds=settings.RUN_INTERRUPTED_AFTER + 1)
    assert runs_reap(now=later) == {"interrupted": 1, "expired": 0, "requeued": 0}

    _wait_for_step(run, 0, StepStatus.SUCCEEDED)
    time.sleep(0.5)  # give the worker the chance it must not take
    run.refresh_from_db()

    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.INTERRUPTED)
    assert len(provider_server.requests) == 1
    actions = _audited(run)
    assert actions.count("run.failed") == 1
    assert "run.succeeded" not in actions
    assert "run.cancelled" not in actions


def _wait_for_step(run, position, status, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if StepRun.objects.filter(run=run, position=position, status=status).exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"step {position} of run {run.pk} never became {status}")


def test_the_reaper_fails_lost_runs_and_runs_whose_keys_expired_unclaimed(acme, settings):
    settings.RUN_INTERRUPTED_AFTER = 600
    lost, waiting, fresh = acme.run(), acme.run(), acme.run()
    now = timezone.now()
    Run.objects.filter(pk=lost.pk).update(
        status=RunStatus.RUNNING, heartbeat_at=now - timedelta(seconds=601)
    )
    for position, status in enumerate([StepStatus.SUCCEEDED, StepStatus.RUNNING, "pending"]):
        StepRun.objects.create(
            tenant=lost.tenant,
            run=lost,
            position=position,
            name=f"s{position}",
            provider="sandbox",
            model="m",
            status=status,
        )
    Run.objects.filter(pk=waiting.pk).update(keys_expire_at=now - timedelta(seconds=1))
    Run.objects.filter(pk=fresh.pk).update(keys_expire_at=now + timedelta(seconds=600))

    assert runs_reap(now=now) == {"interrupted": 1, "expired": 1, "requeued": 0}

    lost.refresh_from_db(), waiting.refresh_from_db(), fresh.refresh_from_db()
    assert (lost.status, lost.error_code) == (RunStatus.FAILED, RunError.INTERRUPTED)
    # The step in flight may have reached the provider: never recorded as skipped.
    steps = list(lost.step_runs.order_by("position"))
    assert [s.status for s in steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED, "skipped"]
    assert "may have received the request" in steps[1].error
    assert (waiting.status, waiting.error_code) == (RunStatus.FAILED, RunError.KEY_EXPIRED)
    assert fresh.status == RunStatus.QUEUED
    assert runs_reap(now=now) == {"interrupted": 0, "expired": 0, "requeued": 0}


@pytest.mark.parametrize("role", [Role.AUDITOR])
def test_auditors_cannot_cancel(acme, key_store, provider_server, role):
    run = _queued_run(acme, _steps("hello"))
    assert acme.api(role).post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
