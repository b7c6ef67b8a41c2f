"""Prometheus metrics: a real run moves the counters a real scrape shows (parsed by
prometheus-client's own text-format parser); the endpoint is refused without its token; no key,
tenant, run id or fingerprint ever reaches a label; several processes add up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from runs.executor import run_execute
from runs.models import RunError, RunStatus
from swrly import metrics
from swrly.audit.writer import Actor, audit_record
from swrly.keys.store import redis_key
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)
from tests.runs.test_executor import _queued_run, _steps

TOKEN = "metrics-token-for-tests-0123456789"
CANARY = "sk-ant-api03-canary-metrics-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def _scrape(token=TOKEN):
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def _samples(text):
    """{(sample name, sorted labels): value}, through prometheus-client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.mark.usefixtures("provider_server")
def test_a_run_moves_its_counters_and_histograms(
    transactional_db,
    acme,
    key_store,
    metrics_on,
):
    before = _samples(_scrape())
    run = _queued_run(acme, _steps("hello"), key=CANARY)
    queued = _samples(_scrape())
    assert _value(queued, "swrly_runs_queued") == _value(before, "swrly_runs_queued") + 1

    run = run_execute(run_id=str(run.pk))
    assert run.status == RunStatus.SUCCEEDED
    text = _scrape()
    after = _samples(text)

    def moved(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("swrly_runs_finished_total", status="succeeded", error_code="none") == 1
    assert moved("swrly_key_events_total", event="deposited", provider="anthropic") == 1
    assert moved("swrly_key_events_total", event="consumed", provider="anthropic") == 1
    assert (
        moved("swrly_step_duration_seconds_count", provider="anthropic", outcome="succeeded") == 1
    )
    assert (
        moved("swrly_provider_request_duration_seconds_count", provider="anthropic", outcome="2xx")
        == 1
    )
    assert moved("swrly_key_store_duration_seconds_count", op="deposit", outcome="stored") == 1
    assert moved("swrly_key_store_duration_seconds_count", op="consume", outcome="taken") == 1
    assert moved("swrly_audit_write_duration_seconds_count", mode="batch") >= 3
    assert _value(after, "swrly_runs_queued") == _value(before, "swrly_runs_queued")
    # Nothing that names a tenant, a run or a key: not the key, its fingerprint or its hint.
    fingerprint = run.key_fingerprints["anthropic"]["fingerprint"]
    for secret in (CANARY, CANARY[-8:], fingerprint, str(run.pk), acme.tenant.slug):
        assert secret not in text


@pytest.mark.usefixtures("provider_server")
def test_a_run_that_fails_is_counted_with_its_error_code(
    transactional_db,
    acme,
    key_store,
    metrics_on,
):
    before = _samples(_scrape())
    run = _queued_run(acme, _steps("hello"), key=CANARY)
    key_store.delete(redis_key(tenant_id=run.tenant_id, run_id=run.pk, provider="anthropic"))
    run = run_execute(run_id=str(run.pk))
    assert run.error_code == RunError.KEY_MISSING
    after = _samples(_scrape())

    def moved(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("swrly_runs_finished_total", status="failed", error_code="key_missing") == 1
    assert moved("swrly_key_events_total", event="missing", provider="anthropic") == 1
    assert moved("swrly_key_store_duration_seconds_count", op="consume", outcome="missing") == 1
    assert moved("swrly_key_events_total", event="consumed", provider="anthropic") == 0


def test_an_event_whose_transaction_rolls_back_is_not_counted(transactional_db, acme):
    labels = {"event": "discarded", "provider": "anthropic"}
    before = metrics.KEY_EVENTS.labels(**labels)._value.get()

    def discarded():
        audit_record(
            tenant=acme.tenant,
            action="key.discarded",
            actor=Actor.system("tests"),
            target="run:x",
            metadata={"provider": "anthropic", "fingerprint": "f", "token_found": True},
        )

    def discarded_then_failed():
        with transaction.atomic():
            discarded()
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        discarded_then_failed()
    assert metrics.KEY_EVENTS.labels(**labels)._value.get() == before
    discarded()  # no transaction around it: committed at once, counted at once
    assert metrics.KEY_EVENTS.labels(**labels)._value.get() == before + 1


def test_labels_take_only_known_values():
    metrics.count_audited("key.deposited", {"provider": "acme-secret-provider"})
    metrics.count_audited("run.failed", {"error_code": "Robert'); DROP TABLE runs;--"})
    metrics.step_finished("https://evil.example", "succeeded", 10)
    text = metrics.exposition(scrape_gauges=False).decode()
    assert "acme-secret-provider" not in text
    assert "DROP" not in text
    assert "evil" not in text
    samples = _samples(text)
    assert _value(samples, "swrly_runs_finished_total", status="failed", error_code="other") >= 1
    assert _value(samples, "swrly_key_events_total", event="deposited", provider="other") >= 1


def test_metrics_are_off_without_a_token(db, settings):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 404
    assert b"swrly_" not in response.content


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}"],
)
def test_a_scrape_without_the_token_is_refused(db, metrics_on, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"swrly_" not in response.content


def test_only_reads_are_scrapes(db, metrics_on):
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


def test_the_node_exporter_applies_the_same_rules(db, metrics_on):
    statuses = []

    def call(path, authorization=None):
        environ = {"PATH_INFO": path}
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        body = b"".join(metrics._wsgi_app(environ, lambda status, _: statuses.append(status)))
        return statuses[-1], body

    assert call("/metrics")[0].startswith("401")
    assert call("/other", f"Bearer {TOKEN}")[0].startswith("404")
    status, body = call("/metrics", f"Bearer {TOKEN}")
    assert status.startswith("200")
    assert b"swrly_key_store_duration_seconds" in body
    assert b"swrly_runs_queued " in body


def test_several_processes_add_up_in_multiprocess_mode(tmp_path, monkeypatch):
    """Two processes (as two gunicorn or Celery workers) count a run each; one scrape of the
    shared directory shows both."""
    script = (
        "from swrly import metrics\n"
        "metrics.count_audited('run.succeeded', {})\n"
        "metrics.key_store_op('consume', 'taken', 0.0)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = _samples(metrics.exposition(scrape_gauges=False).decode())
    assert _value(samples, "swrly_runs_finished_total", status="succeeded", error_code="none") == 2
    assert (
        _value(samples, "swrly_key_store_duration_seconds_count", op="consume", outcome="taken")
        == 2
    )
