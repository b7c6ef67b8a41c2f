"""A lost database connection during a run: writes are retried on a fresh connection, and a run
is never left `running` for want of a working connection. PostgreSQL only (pg_terminate_backend
is how the fault review dropped connections); CI runs the suite on PostgreSQL too."""

import threading
import time

import pytest
from django.db import connection

from runs.models import FINISHED, Run, RunStatus, StepStatus
from tenants.models import Role
from tests.runs.conftest import wait_for_run

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"
)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate_other_backends(*spare: int) -> int:
    """Drop every connection to this test database but this thread's and `spare` (so: the
    workers' connections)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND NOT pid = ANY(%s)",
            [list(spare)],
        )
        return cursor.fetchone()[0]


def _trigger(world, prompts, key):
    api = world.api(Role.DEVELOPER)
    steps = [
        {"name": f"s{i}", "provider": "sandbox", "model": "m", "prompt": prompt}
        for i, prompt in enumerate(prompts)
    ]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {"sandbox": key}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _wait_for_step(run_id, position, status, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.step_runs.filter(position=position, status=status).exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"step {position} of run {run_id} never became {status}")


@postgresql_only
def test_a_connection_dropped_during_a_step_is_replaced_and_the_run_succeeds(
    acme, key_store, provider_server, celery_worker
):
    run_id = _trigger(acme, ["[sandbox:sleep=1] first", "second"], "sk-sandbox-dropped-0001")
    _wait_for_step(run_id, 0, StepStatus.RUNNING)

    assert _terminate_other_backends() >= 1  # the worker's connection, mid-step

    run = wait_for_run(run_id)
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error_message)
    assert [s.status for s in run.step_runs.order_by("position")] == [StepStatus.SUCCEEDED] * 2
    assert len(provider_server.requests) == 2  # each call made once, the key used once


@postgresql_only
def test_no_run_is_left_running_by_a_storm_of_dropped_connections(
    acme, key_store, provider_server, celery_worker
):
    run_ids = [
        _trigger(acme, ["[sandbox:sleep=0.3] a", "b"], f"sk-sandbox-storm-{i:04d}")
        for i in range(8)
    ]
    stop = threading.Event()
    killed = []
    test_connection = _backend_pid()  # the storm runs in its own thread, on its own connection

    def storm():
        from django.db import connections

        try:
            while not stop.wait(0.25):
                killed.append(_terminate_other_backends(test_connection))
        finally:
            connections.close_all()

    thread = threading.Thread(target=storm)
    thread.start()
    try:
        runs = [wait_for_run(run_id, until=FINISHED, timeout=60) for run_id in run_ids]
    finally:
        stop.set()
        thread.join()

    assert sum(killed) > 0, "the storm dropped no connection"
    outcomes = {str(run.pk): (run.status, run.error_code) for run in runs}
    # Every write the storm interrupted was retried on a fresh connection: none failed.
    assert set(outcomes.values()) == {(RunStatus.SUCCEEDED, "")}, outcomes
    assert len(provider_server.requests) == 2 * len(run_ids)


def test_a_step_in_flight_when_its_run_fails_says_the_request_was_sent(acme, key_store):
    """Whatever the database: a step still `running` when its run ends was sent to the
    provider, so it is recorded as such, never as `skipped`."""
    from runs.executor import NOT_RECORDED, _finish
    from runs.models import RunError
    from swrly.audit.writer import Actor

    run = acme.run()
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    run.step_runs.create(tenant=run.tenant, position=0, name="a", provider="sandbox", model="m")
    run.step_runs.update(status=StepStatus.RUNNING)
    run.step_runs.create(tenant=run.tenant, position=1, name="b", provider="sandbox", model="m")

    _finish(run, Actor.system("tests"), RunStatus.FAILED, RunError.INTERNAL_ERROR, "x", {})

    sent, pending = run.step_runs.order_by("position")
    assert (sent.status, sent.error) == (StepStatus.FAILED, NOT_RECORDED)
    assert sent.finished_at is not None
    assert pending.status == StepStatus.SKIPPED


@postgresql_only
def test_the_web_connection_dropped_during_a_post_is_a_clean_503(acme, transactional_db, key_store):
    import psycopg
    from django.test import Client

    from runs.services import workflow_create
    from swrly.audit.writer import Actor
    from swrly.keys.store import KEY_PATTERN
    from tests.runs.real_workers import database_url

    workflow = workflow_create(
        tenant=acme.tenant,
        name="one",
        steps=[{"name": "a", "provider": "anthropic", "model": "claude-x", "prompt": "Hi"}],
        actor=Actor.system("tests"),
    )
    killed = []

    def drop_before_the_audit_event(execute, sql, params, many, context):
        # after the run's rows and its key deposit, before its commit
        if not killed and "tenants_auditchainhead" in sql:
            pid = context["connection"].connection.info.backend_pid
            with psycopg.connect(database_url().replace("postgres://", "postgresql://")) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            killed.append(pid)
        return execute(sql, params, many, context)

    api = Client(headers={"Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}"})
    with connection.execute_wrapper(drop_before_the_audit_event):
        response = api.post(
            "/api/v1/runs/",
            {
                "workflow": str(workflow.pk),
                "provider_keys": {"anthropic": "sk-ant-canary-dropped-0123456789abcdef"},
            },
            "application/json",
        )
    assert killed
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "1"
    # nothing was kept: no run, and the token deposited before the drop was discarded
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    # and the next request gets a fresh connection
    assert api.get("/api/v1/runs/").status_code == 200
