"""Per-tenant fairness (issue 14 §3): limits on runs queued (429 at submission, before any key is
deposited) and running (a claim over the limit leaves the run queued with its keys).

The concurrency tests use real threads, each on its own database connection; CI runs them on
PostgreSQL as well as SQLite. Every wait is a poll with a deadline: nothing asserts a duration.
"""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

import runs.services
from runs.executor import run_execute, runs_requeue
from runs.fairness import QUEUE_FULL_RETRY_AFTER, TenantBusy
from runs.models import Run, RunError, RunStatus
from runs.tasks import execute_run
from swrly import metrics
from swrly.audit.models import AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import Actor, chain_for
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role, Tenant
from tenants.services import tenant_limits_set
from tests.runs.conftest import wait_for_run

CANARY = "sk-sandbox-CANARY-fairness-7f3a9c"
SLOW = "[sandbox:sleep=1] slow"
ENDED = ("run.succeeded", "run.failed", "run.cancelled")


def _workflow(world, prompt="hello"):
    steps = [{"name": "s", "provider": "sandbox", "model": "sandbox-1", "prompt": prompt}]
    response = world.api(Role.DEVELOPER).post(
        "/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _post(world, workflow_id, key=CANARY, **headers):
    return world.api(Role.DEVELOPER).post(
        "/api/v1/runs/",
        {"workflow": workflow_id, "provider_keys": {"sandbox": key}},
        "application/json",
        headers=headers,
    )


def _limits(world, **limits):
    tenant_limits_set(tenant=world.tenant, actor=Actor.system("tests"), **limits)


def _tokens(key_store):
    return list(key_store.scan_iter(match=KEY_PATTERN))


def _refused():
    return metrics._REGISTRY.get_sample_value("swrly_runs_refused_total", {"reason": "queue_full"})


# --- Admission: the queued limit ----------------------------------------------------------


def test_over_the_queued_limit_the_api_answers_429_before_any_key_is_deposited(
    acme, globex, key_store, provider_server
):
    _limits(acme, max_queued_runs=2)
    workflow = _workflow(acme)
    assert [_post(acme, workflow).status_code for _ in range(2)] == [202, 202]
    events, refused = AuditEvent.objects.count(), _refused() or 0

    response = _post(acme, workflow)

    assert response.status_code == 429
    assert response["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER)
    error = response.json()["error"]
    assert error["code"] == "run_queue_full"
    assert "2 runs" in error["message"]
    assert CANARY not in response.content.decode()
    assert Run.objects.filter(tenant=acme.tenant).count() == 2  # nothing created
    assert len(_tokens(key_store)) == 2  # nothing deposited, not even for a moment
    assert AuditEvent.objects.count() == events  # nothing audited: no key was handled
    assert _refused() == refused + 1
    # Another tenant's queue is its own.
    assert _post(globex, _workflow(globex)).status_code == 202


def test_the_platform_default_applies_until_the_tenant_has_its_own_limit(
    acme, key_store, provider_server, settings
):
    settings.RUN_MAX_QUEUED_PER_TENANT = 1
    workflow = _workflow(acme)
    assert _post(acme, workflow).status_code == 202
    assert _post(acme, workflow).status_code == 429
    _limits(acme, max_queued_runs=2)
    assert _post(acme, workflow).status_code == 202
    assert _post(acme, workflow).status_code == 429
    # A run that leaves the queue (here: cancelled) frees its place.
    run = Run.objects.filter(tenant=acme.tenant).first()
    cancel = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert cancel.status_code == 202
    assert _post(acme, workflow).status_code == 202
    # 0: the tenant may queue nothing (a stop, short of suspending it).
    _limits(acme, max_queued_runs=0)
    assert _post(acme, workflow).status_code == 429


def test_a_retry_with_the_same_idempotency_key_is_answered_with_its_run_even_when_full(
    acme, key_store, provider_server
):
    _limits(acme, max_queued_runs=1)
    workflow = _workflow(acme)
    first = _post(acme, workflow, **{"Idempotency-Key": "once"})
    assert first.status_code == 202
    again = _post(acme, workflow, **{"Idempotency-Key": "once"})
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert _post(acme, workflow, **{"Idempotency-Key": "other"}).status_code == 429


@pytest.fixture
def no_early_check(monkeypatch):
    """Let every request past the count taken before the deposit, as if all of them had taken
    it at the same moment: only the count under the chain head stands between them."""
    real = runs.services.admit_run

    def only_under_the_lock(tenant, *, including_new):
        if including_new:
            real(tenant, including_new=True)

    monkeypatch.setattr(runs.services, "admit_run", only_under_the_lock)


def _race(world, workflow, count) -> list:
    """`count` POSTs at once, each from its own thread (its own database connection)."""
    results, barrier = [], threading.Barrier(count)

    def send(index):
        barrier.wait()
        try:
            results.append(_post(world, workflow, key=f"sk-sandbox-race-{index:04d}-abcdef"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("early_check", ["as built", "skipped"])
def test_concurrent_posts_never_both_take_the_last_place(
    request, acme, key_store, provider_server, early_check
):
    """Six POSTs race for two places: exactly two runs, and only their tokens in the key store.

    With the early check skipped, every request deposits its key and the count under the chain
    head alone decides: the losers roll back and their tokens are discarded at once.
    """
    if early_check == "skipped":
        request.getfixturevalue("no_early_check")
    _limits(acme, max_queued_runs=2)
    workflow = _workflow(acme)

    results = _race(acme, workflow, 6)

    codes = sorted(r.status_code for r in results)
    assert codes == [202, 202, 429, 429, 429, 429], [r.content for r in results]
    assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {
        "run_queue_full"
    }
    queued = Run.objects.filter(tenant=acme.tenant)
    assert queued.count() == 2
    assert len(_tokens(key_store)) == 2
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="key.deposited").count() == 2
    assert audit_verify_chain(chain_for(acme.tenant)).ok


# --- In flight: the running limit ----------------------------------------------------------


def test_a_claim_over_the_running_limit_leaves_the_run_queued_with_its_key(
    acme, key_store, provider_server
):
    _limits(acme, max_running_runs=1)
    workflow = _workflow(acme)
    first, second = (Run.objects.get(pk=_post(acme, workflow).json()["id"]) for _ in range(2))
    Run.objects.filter(pk=first.pk).update(status=RunStatus.RUNNING)  # in flight elsewhere
    tokens = _tokens(key_store)

    with pytest.raises(TenantBusy):
        run_execute(run_id=str(second.pk))

    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED
    assert second.keys_consumed_at is None
    assert second.started_at is None
    assert sorted(_tokens(key_store)) == sorted(tokens)  # nothing taken
    assert not AuditEvent.objects.filter(target=f"run:{second.pk}", action="run.started")

    Run.objects.filter(pk=first.pk).update(status=RunStatus.SUCCEEDED)  # its place is free
    assert run_execute(run_id=str(second.pk)).status == RunStatus.SUCCEEDED


def test_the_task_defers_a_busy_tenants_run_and_the_sweeper_leaves_it_alone(
    acme, key_store, provider_server, published, settings
):
    settings.RUN_DEFER_DELAY = 7.0
    _limits(acme, max_running_runs=0)
    run = Run.objects.get(pk=_post(acme, _workflow(acme)).json()["id"])
    published.clear()
    deferred = metrics._REGISTRY.get_sample_value("swrly_runs_deferred_total") or 0

    execute_run.apply(args=[str(run.pk)])

    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert run.keys_consumed_at is None
    assert run.requeued_at is not None
    assert run.requeues == 0
    [(headers, body)] = published
    assert headers["task"] == "runs.tasks.execute_run"
    assert body[0] == [str(run.pk)]
    assert headers["eta"] is not None  # RUN_DEFER_DELAY from now
    assert metrics._REGISTRY.get_sample_value("swrly_runs_deferred_total") == deferred + 1
    # Created long ago (keys still valid): unclaimed, it would be the sweeper's, but it was just
    # enqueued again.
    Run.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(hours=1))
    assert runs_requeue() == 0
    Run.objects.filter(pk=run.pk).update(requeued_at=None)
    assert runs_requeue() == 1  # the same run, were it not deferred


def _max_running(tenant: Tenant) -> int:
    """The most runs of the tenant running at once, replayed from its audit chain (whose order
    is the order in which claims and ends committed under the chain head)."""
    running = most = 0
    for action in (
        AuditEvent.objects.filter(tenant=tenant, action__in=("run.started", *ENDED))
        .order_by("seq")
        .values_list("action", flat=True)
    ):
        running += 1 if action == "run.started" else -1
        most = max(most, running)
    return most


@pytest.fixture
def quick_deferral(settings) -> None:
    settings.RUN_DEFER_DELAY = 0.2


@pytest.mark.django_db(transaction=True)
def test_a_worker_never_runs_more_than_the_tenants_limit(
    acme, key_store, provider_server, quick_deferral, celery_worker
):
    _limits(acme, max_running_runs=1)
    workflow = _workflow(acme, prompt="[sandbox:sleep=2] one at a time")
    ids = [_post(acme, workflow).json()["id"] for _ in range(3)]

    ended = [wait_for_run(run_id, timeout=90) for run_id in ids]

    assert [run.status for run in ended] == [RunStatus.SUCCEEDED] * 3
    assert _max_running(acme.tenant) == 1
    # The worker has two threads: the second took a run while the first was running, and put
    # it back (it then ran with the key it was given).
    assert any(run.requeued_at for run in ended)
    assert audit_verify_chain(chain_for(acme.tenant)).ok


# --- Fairness: one tenant's burst does not expire another's keys ---------------------------


@pytest.mark.django_db(transaction=True)
def test_a_burst_from_one_tenant_neither_delays_another_past_its_ttl_nor_expires_its_own(
    acme, globex, key_store, provider_server, quick_deferral, settings, celery_worker
):
    """acme bursts 40 slow runs (1 s each) at a worker of two threads while globex posts runs
    of its own. Unbounded, acme's backlog (20 s of work at the least) would outlast the short
    key TTL (20 s) and expire the runs behind it. With its limits (3 queued, 1 running) the
    excess is refused with 429, every accepted run of either tenant succeeds, and none fails
    `key_expired`."""
    settings.BYOK_TOKEN_TTL = 20
    _limits(acme, max_queued_runs=3, max_running_runs=1)
    slow, quick = _workflow(acme, prompt=SLOW), _workflow(globex)
    burst: dict[int, list[str]] = {202: [], 429: []}
    theirs = []
    for index in range(40):
        response = _post(acme, slow, key=f"sk-sandbox-burst-{index:04d}-abcdef")
        assert response.status_code in burst, response.content
        burst[response.status_code].append(response.json().get("id"))
        if response.status_code == 429:
            assert response["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER)
        if index % 5 == 0:
            other = _post(globex, quick, key=f"sk-sandbox-other-{index:04d}-abcdef")
            assert other.status_code == 202, other.content  # never refused for acme's burst
            theirs.append(other.json()["id"])

    assert burst[429], "the burst never reached acme's queued limit"
    ended = [wait_for_run(run_id, timeout=120) for run_id in burst[202] + theirs]

    codes = {run.error_code for run in ended if run.status != RunStatus.SUCCEEDED}
    assert RunError.KEY_EXPIRED not in codes
    assert [run.status for run in ended] == [RunStatus.SUCCEEDED] * len(ended), codes
    assert _max_running(acme.tenant) == 1
    assert len(_tokens(key_store)) == 0  # every key taken once, none left to expire
    assert audit_verify_chain(chain_for(acme.tenant)).ok
    assert audit_verify_chain(chain_for(globex.tenant)).ok


# --- Who sets a tenant's limits ------------------------------------------------------------


def test_tenant_limits_command_sets_shows_and_resets_audited(acme, settings):
    settings.RUN_MAX_RUNNING_PER_TENANT = 7
    out = StringIO()
    call_command("tenant-limits", "acme", "--max-queued-runs", "50", stdout=out)
    acme.tenant.refresh_from_db()
    assert (acme.tenant.max_queued_runs, acme.tenant.max_running_runs) == (50, None)
    assert "max_queued_runs: 50 (the tenant's own)" in out.getvalue()
    assert "max_running_runs: 7 (the platform default)" in out.getvalue()
    event = AuditEvent.objects.get(tenant=acme.tenant, action="tenant.limits_changed")
    assert event.metadata == {"max_queued_runs": {"from": None, "to": 50}}
    assert event.actor == "system:tenant-limits"

    call_command("tenant-limits", "acme", "--max-queued-runs", "default", stdout=StringIO())
    acme.tenant.refresh_from_db()
    assert acme.tenant.max_queued_runs is None
    assert AuditEvent.objects.filter(action="tenant.limits_changed").count() == 2
    call_command("tenant-limits", "acme", stdout=StringIO())  # shows only: nothing audited
    assert AuditEvent.objects.filter(action="tenant.limits_changed").count() == 2
    with pytest.raises(CommandError):
        call_command("tenant-limits", "acme", "--max-running-runs", "-1", stdout=StringIO())
    with pytest.raises(CommandError, match="no tenant"):
        call_command("tenant-limits", "nope", stdout=StringIO())
    assert audit_verify_chain(chain_for(acme.tenant)).ok


def test_an_owner_cannot_change_the_tenants_limits_through_the_api(acme):
    owner = acme.api(Role.OWNER)
    for method in ("patch", "put", "post"):
        response = getattr(owner, method)(
            "/api/v1/me/",
            {"max_queued_runs": 100000, "max_running_runs": 100000},
            "application/json",
        )
        assert response.status_code == 405, (method, response.content)
    acme.tenant.refresh_from_db()
    assert (acme.tenant.max_queued_runs, acme.tenant.max_running_runs) == (None, None)
    assert b"max_queued_runs" not in owner.get("/api/v1/me/").content


def test_the_schema_documents_the_429_of_run_creation(client, db):
    schema = client.get("/api/v1/schema/", headers={"Accept": "application/json"}).json()
    responses = schema["paths"]["/api/v1/runs/"]["post"]["responses"]
    assert "run_queue_full" in responses["429"]["description"]
    assert "run_queue_full" not in schema["paths"]["/api/v1/workflows/"]["post"]["responses"][
        "429"
    ].get("description", "")
