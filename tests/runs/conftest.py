"""Fixtures for the run engine: a real Celery worker in this process, and a sandbox provider."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish

from runs.models import FINISHED, Run
from swrly.celery import app
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    make_secret,
    provider_expected_keys,
    provider_server,
    provider_server_factory,
    retry_delays,
)
from tests.runs.real_workers import broker, workers  # noqa: F401  (pytest fixtures)


@pytest.fixture
def celery_worker(transactional_db, key_store):
    """A real Celery worker (threads) consuming from the real broker, for this test only."""
    app.conf.broker_url = app.conf.broker_url  # the Redis database of this test worker
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=20
    ) as worker:
        yield worker


@pytest.fixture
def published():
    """Every message published to the broker during the test: (headers, body)."""
    messages = []

    def record(sender=None, headers=None, body=None, **_):
        messages.append((headers, body))

    before_task_publish.connect(record, weak=False)
    yield messages
    before_task_publish.disconnect(record)


def wait_for_run(run_id, *, until=FINISHED, timeout=30.0):
    """Poll the database until the run reaches one of `until` (a bound, not an assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status in until:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is still {Run.objects.get(pk=run_id).status}")
