"""The run and maintenance queues on either broker (SWRLY_TEST_BROKER): a task sent with a
countdown (a run whose claim failed is retried so) comes back to its queue, and on RabbitMQ the
queues are durable quorum queues."""

import pytest
from amqp.exceptions import PreconditionFailed
from django.conf import settings
from kombu import Connection, Queue

from runs.models import Run, RunStatus
from runs.tasks import execute_run
from swrly.celery import app
from tenants.models import Role
from tests.runs.real_workers import publishing_to, wait_until, worker_env


@pytest.mark.django_db(transaction=True)
def test_a_run_sent_with_a_countdown_comes_back_to_its_queue_and_runs(
    acme, key_store, provider_server, broker, workers
):
    env = worker_env(broker_url=broker.url, provider_url=provider_server.url)
    # The maintenance worker starts first (on RabbitMQ: a new virtual host, where it must still
    # set up delayed delivery for the run queue it does not consume).
    workers.worker("maintenance", env, "--pool=threads", "--concurrency=1", "--queues=maintenance")
    workers.worker("runs", env, "--pool=threads", "--concurrency=1")
    wait_until(
        lambda: all(" ready." in workers.log(name) for name in ("maintenance", "runs")),
        timeout=45,
        what="both workers to be ready",
        on_fail=workers.logs,
    )
    api = acme.api(Role.DEVELOPER)
    with publishing_to(broker.unheard_url):  # committed, keys deposited, its message elsewhere
        response = api.post(
            "/api/v1/runs/",
            {
                "workflow": str(acme.workflow().pk),
                "provider_keys": {"sandbox": "sk-sandbox-countdown-0001"},
            },
            "application/json",
        )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]

    execute_run.apply_async(args=[run_id], countdown=2)

    wait_until(
        lambda: Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED,
        timeout=60,
        what="the run sent with a countdown to succeed",
        on_fail=lambda: f"{Run.objects.get(pk=run_id).status}\n{workers.logs()}",
    )
    logs = workers.logs()
    for word in ("ERROR", "CRITICAL", "QoS is not supported", "delayed delivery will not"):
        assert word not in logs, logs


def test_the_queues_are_durable_quorum_queues_on_rabbitmq(rabbitmq):
    queues = list(app.amqp.queues.values())
    assert {q.name for q in queues} == {
        settings.CELERY_TASK_DEFAULT_QUEUE,
        settings.MAINTENANCE_QUEUE,
    }
    with Connection(rabbitmq.url, connect_timeout=10) as conn:
        for queue in queues:
            assert queue.durable
            queue(conn.default_channel).declare()  # as a worker or a publisher declares it
            # A classic queue of the same name is refused: the broker holds a quorum queue.
            with pytest.raises(PreconditionFailed):
                Queue(queue.name, queue.exchange, queue.routing_key, durable=True)(
                    conn.channel()
                ).declare()
