"""Maintenance has its own queue and worker: it never waits behind runs, and it saves runs
whose message was lost. Real `celery worker` processes on a broker of the test's own."""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from runs.models import Run, RunError, RunStatus
from runs.tasks import execute_run, reap_runs
from swrly.audit.models import AuditEvent
from swrly.celery import app
from tenants.models import Role
from tests.runs.real_workers import publishing_to, wait_until, worker_env

BACKLOG = 30


def test_routes_send_maintenance_to_its_own_queue_and_runs_to_the_default_one():
    router = app.amqp.router
    assert router.route({}, reap_runs.name)["queue"].name == settings.MAINTENANCE_QUEUE
    assert router.route({}, execute_run.name)["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
    assert settings.MAINTENANCE_QUEUE != settings.CELERY_TASK_DEFAULT_QUEUE


@pytest.mark.django_db(transaction=True)
def test_the_reaper_runs_while_the_run_queue_is_backlogged(
    acme, key_store, provider_server, broker, workers
):
    env = worker_env(broker_url=broker.url, provider_url=provider_server.url)
    workers.worker("maintenance", env, "--pool=threads", "--concurrency=1", "--queues=maintenance")
    expired = acme.run()
    Run.objects.filter(pk=expired.pk).update(keys_expire_at=timezone.now() - timedelta(seconds=1))
    for _ in range(BACKLOG):  # runs no worker is free for
        execute_run.delay(str(uuid.uuid4()))

    reap_runs.delay()

    wait_until(
        lambda: Run.objects.get(pk=expired.pk).status == RunStatus.FAILED,
        timeout=45,
        what="the maintenance worker to reap the expired run",
        on_fail=workers.logs,
    )
    expired.refresh_from_db()
    assert expired.error_code == RunError.KEY_EXPIRED
    # The maintenance worker took nothing from the run queue.
    assert broker.message_count(settings.CELERY_TASK_DEFAULT_QUEUE) == BACKLOG
    assert workers.dead() == {}, workers.logs()


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_message_was_lost_runs_after_the_sweep(
    acme, key_store, provider_server, broker, workers
):
    env = worker_env(broker_url=broker.url, provider_url=provider_server.url)
    workers.worker("runs", env, "--pool=threads", "--concurrency=1")
    workers.worker("maintenance", env, "--pool=threads", "--concurrency=1", "--queues=maintenance")
    api = acme.api(Role.DEVELOPER)
    workflow = acme.workflow()
    # The run is committed, its keys deposited, and its message goes where no worker listens.
    with publishing_to(broker.unheard_url):
        response = api.post(
            "/api/v1/runs/",
            {"workflow": str(workflow.pk), "provider_keys": {"sandbox": "sk-sandbox-lost-0001"}},
            "application/json",
        )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    # No worker claimed it within RUN_REQUEUE_AFTER (the workers use the default).
    Run.objects.filter(pk=run_id).update(
        created_at=timezone.now() - timedelta(seconds=settings.RUN_REQUEUE_AFTER + 1)
    )
    assert Run.objects.get(pk=run_id).status == RunStatus.QUEUED

    reap_runs.delay()

    run = wait_until(
        lambda: Run.objects.filter(pk=run_id, status=RunStatus.SUCCEEDED).first(),
        timeout=45,
        what="the swept run to succeed",
        on_fail=lambda: f"{Run.objects.get(pk=run_id).status}\n{workers.logs()}",
    )
    assert run.requeues == 1
    assert AuditEvent.objects.filter(target=f"run:{run_id}", action="run.requeued").exists()
    assert len(provider_server.requests) == 1  # the key was used once
    assert workers.dead() == {}, workers.logs()
