"""A run that meets an unavailable key store at its start waits instead of failing.

The executor's first GETDEL fails (a closed port, a Sentinel failover, a key store that refuses
the command): no key is held yet, so the claim is given back (`run.released`) and the task tries
the run again later; after RUN_KEY_STORE_RETRIES releases it fails `key_store_unavailable`. A
failure after a key was taken fails the run as before. Real servers throughout: the session's key
store, Valkey servers of the tests' own, a real Celery worker, the sandbox provider.
"""

import socket
import time
from datetime import timedelta

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from runs.executor import RunReleased, run_execute, runs_requeue
from runs.models import Run, RunError, RunStatus, StepStatus
from runs.services import orphan_tokens_sweep
from swrly import metrics
from swrly.audit.models import AuditEvent
from swrly.celery import app
from swrly.dev.devstack import start_embedded_valkey
from swrly.dev.valkey_ha import start_sentinel_group
from swrly.keys.store import redis_key
from tenants.models import Role
from tests.runs.conftest import wait_for_run

KEY = "sk-ant-api03-canary-release-0123456789"
OPENAI_KEY = "sk-proj-canary-release-0123456789"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def _queued_run(world, keys=None) -> Run:
    """A run of a one-step workflow per provider in `keys`, posted through the API."""
    keys = keys or {"anthropic": KEY}
    steps = [
        {"name": f"s{i}", "provider": provider, "model": "m", "prompt": "hello"}
        for i, provider in enumerate(sorted(keys))
    ]
    api = world.api(Role.DEVELOPER)
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": keys},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["id"])


def _token(run, provider="anthropic") -> str:
    return redis_key(tenant_id=run.tenant_id, run_id=run.pk, provider=provider)


def _audited(run, action) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target=f"run:{run.pk}", action=action).order_by("seq"))


def _assert_queued_as_before_its_claim(run: Run) -> None:
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert (run.keys_consumed_at, run.started_at, run.heartbeat_at, run.worker) == (
        None,
        None,
        None,
        "",
    )
    assert run.requeued_at is not None
    assert set(run.step_runs.values_list("status", flat=True)) == {StepStatus.PENDING}


def _declare_queues() -> None:
    """Declare the broker's queues, so a run posted before the worker starts keeps its message.

    In tests the broker may share the key store's Redis database, which the `key_store` fixture
    flushed, bindings included, while this process's producer still counts them as declared.
    """
    with app.connection_for_write() as connection:
        for queue in app.amqp.queues.values():
            queue.bind(connection.default_channel).declare()


def _released() -> float:
    return metrics._REGISTRY.get_sample_value("swrly_runs_released_total") or 0


def test_a_run_released_by_a_stopped_key_store_is_retried_by_its_task_and_succeeds(
    transactional_db, acme, key_store, provider_server, published, settings
):
    # given: a queued run whose token is in the key store, then the key store gone
    settings.RUN_KEY_STORE_RETRY_DELAY = 0.5
    settings.RUN_KEY_STORE_RETRIES = 100  # this test decides when the key store comes back
    url = settings.BYOK_REDIS_URL
    _declare_queues()
    run = _queued_run(acme)
    settings.BYOK_REDIS_URL = _closed_port_url()
    released_before = _released()

    # when: a real worker takes the run's message
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=20
    ):
        deadline = time.monotonic() + 30
        while not _audited(run, "run.released") and time.monotonic() < deadline:
            time.sleep(0.05)

        # then: the run is queued again as before its claim, its token intact, audited
        [first, *_] = _audited(run, "run.released")
        assert first.metadata == {
            "reason": "key store unavailable",
            "provider": "anthropic",
            "worker": first.metadata["worker"],
            "releases": 1,
        }
        assert first.metadata["worker"]
        assert key_store.exists(_token(run)) == 1
        assert provider_server.requests == []
        assert _released() >= released_before + 1

        # and when the key store is back, the task's retry runs the run, its key used once
        settings.BYOK_REDIS_URL = url
        run = wait_for_run(run.pk)

    assert (run.status, run.error_code) == (RunStatus.SUCCEEDED, "")
    assert run.releases >= 1
    assert len(_audited(run, "run.released")) == run.releases
    assert [r.headers.get("x-api-key") for r in provider_server.requests] == [KEY]
    assert len(_audited(run, "key.consumed")) == 1
    assert key_store.exists(_token(run)) == 0
    retries = [
        headers
        for headers, body in published
        if list(body[0]) == [str(run.pk)] and headers.get("retries")
    ]
    assert retries, "the task was not sent again"
    assert all(headers["eta"] is not None for headers in retries)  # a countdown


def test_a_released_run_is_left_to_its_task_by_the_sweeps_and_cancel_discards_its_token(
    acme, key_store, provider_server, settings
):
    url = settings.BYOK_REDIS_URL
    run = _queued_run(acme)
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=1))
    settings.BYOK_REDIS_URL = _closed_port_url()
    with pytest.raises(RunReleased):
        run_execute(run_id=str(run.pk))
    settings.BYOK_REDIS_URL = url
    _assert_queued_as_before_its_claim(run)

    # the orphan sweep leaves the token of a queued run alone
    assert orphan_tokens_sweep(min_idle=0) == 0
    assert key_store.exists(_token(run)) == 1
    # the sweeper leaves it to the task's retry, and takes over if that message is lost
    assert runs_requeue() == 0
    later = timezone.now() + timedelta(seconds=settings.RUN_REQUEUE_AFTER + 1)
    Run.objects.filter(pk=run.pk).update(keys_expire_at=later + timedelta(minutes=5))
    assert runs_requeue(now=later) == 1

    # cancelled while released: cancelled at once, its token discarded
    response = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert key_store.exists(_token(run)) == 0
    [discarded] = _audited(run, "key.discarded")
    assert discarded.metadata["token_found"] is True
    # the retry that was pending finds nothing to do
    assert run_execute(run_id=str(run.pk)) is None
    assert provider_server.requests == []


def test_after_its_releases_the_run_fails_key_store_unavailable(
    acme, key_store, provider_server, settings
):
    settings.RUN_KEY_STORE_RETRIES = 2
    url = settings.BYOK_REDIS_URL
    run = _queued_run(acme)
    settings.BYOK_REDIS_URL = _closed_port_url()

    for _ in range(2):
        with pytest.raises(RunReleased):
            run_execute(run_id=str(run.pk))
    ended = run_execute(run_id=str(run.pk))

    assert (ended.status, ended.error_code) == (RunStatus.FAILED, RunError.KEY_STORE_UNAVAILABLE)
    ended.refresh_from_db()
    assert ended.releases == 2
    assert [e.metadata["releases"] for e in _audited(run, "run.released")] == [1, 2]
    [failed] = _audited(run, "run.failed")
    assert failed.metadata["error_code"] == RunError.KEY_STORE_UNAVAILABLE
    assert set(ended.step_runs.values_list("status", flat=True)) == {StepStatus.SKIPPED}
    assert provider_server.requests == []
    # The failed run's token (its DEL refused too) is the orphan sweep's once the store is back.
    settings.BYOK_REDIS_URL = url
    assert key_store.exists(_token(run)) == 1
    assert orphan_tokens_sweep(min_idle=0) == 1
    assert key_store.exists(_token(run)) == 0


def test_a_run_whose_keys_expire_before_the_retry_fails_at_once(
    acme, key_store, provider_server, settings
):
    settings.RUN_KEY_STORE_RETRY_DELAY = 60.0
    run = _queued_run(acme)
    # valid for less than twice the delay: a retry would meet expired keys
    Run.objects.filter(pk=run.pk).update(keys_expire_at=timezone.now() + timedelta(seconds=100))
    settings.BYOK_REDIS_URL = _closed_port_url()

    ended = run_execute(run_id=str(run.pk))

    assert (ended.status, ended.error_code) == (RunStatus.FAILED, RunError.KEY_STORE_UNAVAILABLE)
    assert _audited(run, "run.released") == []


@pytest.fixture
def anthropic_only_key_store(settings):
    """A Valkey of this test's own as the key store, its admin client, and the URL of a user that
    may touch anthropic tokens only: every command on another provider's token is refused."""
    server = start_embedded_valkey()
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    admin.execute_command("ACL", "SETUSER", "anthropic-only", "on", ">pw", "~*:anthropic", "+@all")
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{server.port}/0"
    yield admin, f"redis://anthropic-only:pw@127.0.0.1:{server.port}/0"
    admin.close()
    server.stop()


def test_a_key_store_failure_after_a_key_was_taken_fails_the_run_as_before(
    acme, provider_server, settings, anthropic_only_key_store
):
    # given: a two-provider run; the worker's key-store user may read the first token only
    admin, anthropic_only = anthropic_only_key_store
    run = _queued_run(acme, {"anthropic": KEY, "openai": OPENAI_KEY})
    settings.BYOK_REDIS_URL = anthropic_only

    # when: the anthropic key is taken, then the openai GETDEL is refused
    ended = run_execute(run_id=str(run.pk))

    # then: the run fails key_store_unavailable as before: no release, nothing sent
    assert (ended.status, ended.error_code) == (RunStatus.FAILED, RunError.KEY_STORE_UNAVAILABLE)
    ended.refresh_from_db()
    assert ended.releases == 0
    assert _audited(run, "run.released") == []
    assert [e.metadata["provider"] for e in _audited(run, "key.consumed")] == ["anthropic"]
    assert provider_server.requests == []
    assert admin.exists(_token(run, "anthropic")) == 0  # taken (its plaintext discarded)
    assert admin.exists(_token(run, "openai")) == 1  # its DEL refused too: the orphan sweep's


def test_a_run_started_during_a_sentinel_failover_waits_and_uses_its_key_once(
    acme, provider_server, settings
):
    group = start_sentinel_group()
    try:
        # given: a run whose token reached the replica
        settings.BYOK_REDIS_URL = group.url
        run = _queued_run(acme)
        old = group.primary()
        old.client().execute_command("WAIT", 1, 5000)

        # when: the primary dies as the run starts
        group.kill_primary()
        with pytest.raises(RunReleased):
            run_execute(run_id=str(run.pk))
        _assert_queued_as_before_its_claim(run)

        # then: once the replica is promoted, the run's retry finds its token
        promoted = group.wait_for_failover()
        assert promoted.client().exists(_token(run)) == 1
        ended = run_execute(run_id=str(run.pk))
    finally:
        group.stop()

    assert (ended.status, ended.error_code) == (RunStatus.SUCCEEDED, "")
    assert [r.headers.get("x-api-key") for r in provider_server.requests] == [KEY]
    assert len(_audited(run, "key.consumed")) == 1
    assert len(_audited(run, "run.released")) == 1
