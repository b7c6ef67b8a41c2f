"""Retention: run content purged after the tenant's period, metadata and audit kept; bounded,
idempotent, audited with counts; the run page and the API say "purged" instead of showing
empty values."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from runs.models import IdempotencyKey, Run, RunStatus, StepRun
from runs.retention import run_content_purge
from swrly.audit.models import AuditEvent
from tenants.models import Role, Tenant
from tests.pages.conftest import CANARY, T0, make_run

NOW = T0 + timedelta(days=40)


def _retention(world, days):
    Tenant.objects.filter(pk=world.tenant.pk).update(retention_days=days)
    world.tenant.refresh_from_db()


def _purges(tenant):
    return AuditEvent.objects.filter(tenant=tenant, action="run.content_purged").order_by("seq")


def _holds_canary(run: Run) -> bool:
    run = Run.objects.get(pk=run.pk)
    texts = [str(run.input), str(run.steps), run.error_message]
    texts += [f"{s.output_text} {s.error}" for s in StepRun.objects.filter(run=run)]
    return any(CANARY in text for text in texts)


@pytest.fixture
def runs(acme, globex):
    """acme: runs that ended 40 and 10 days before NOW, an old one still running; globex (no
    retention): an old run."""
    old = make_run(acme, at=T0, events=True)
    failed = make_run(acme, at=T0, status=RunStatus.FAILED, error_code="provider_error")
    StepRun.objects.filter(run=failed, position=1).update(error=f"provider said {CANARY}")
    recent = make_run(acme, at=T0 + timedelta(days=30))
    running = make_run(acme, at=T0, status=RunStatus.RUNNING)
    foreign = make_run(globex, at=T0)
    IdempotencyKey.objects.create(tenant=acme.tenant, key="k-1", request_hash="a" * 64, run=old)
    return {"old": old, "failed": failed, "recent": recent, "running": running, "foreign": foreign}


def test_content_past_the_period_is_purged_and_metadata_and_audit_stay(acme, globex, runs):
    _retention(acme, 30)
    before = {
        name: (run.status, run.key_fingerprints, run.error_code)
        for name, run in runs.items()
        for run in [Run.objects.get(pk=run.pk)]
    }
    events_before = AuditEvent.objects.filter(tenant=acme.tenant).count()

    purged = run_content_purge(now=NOW)

    assert purged == {"acme": 2}
    for name in ("old", "failed"):
        run = Run.objects.get(pk=runs[name].pk)
        assert not _holds_canary(run), name
        assert run.content_purged_at == NOW
        assert run.input == {}
        assert run.error_message == ""
        assert [(s["name"], s["provider"], s["model"], s["prompt"]) for s in run.steps] == [
            ("step0", "anthropic", "model-1", ""),
            ("step1", "anthropic", "model-1", ""),
        ]
        assert (run.status, run.key_fingerprints, run.error_code) == before[name]
        steps = StepRun.objects.filter(run=run).order_by("position")
        assert [(s.input_tokens, s.output_tokens) for s in steps] == [(10, 5), (10, 5)]
        assert all(s.provider_request_id.startswith("req_") for s in steps)
    for name in ("recent", "running", "foreign"):
        assert _holds_canary(runs[name]), name
        assert Run.objects.get(pk=runs[name].pk).content_purged_at is None
    assert not IdempotencyKey.objects.filter(run=runs["old"]).exists()
    (event,) = _purges(acme.tenant)
    assert event.actor == "system:retention"
    assert event.target == "tenant:acme"
    assert event.metadata == {
        "runs": 2,
        "steps": 4,
        "retention_days": 30,
        "finished_before": (NOW - timedelta(days=30)).isoformat(),
    }
    assert CANARY not in str(event.metadata)
    # the audit log keeps every earlier event (the run's whole trail)
    assert AuditEvent.objects.filter(tenant=acme.tenant).count() == events_before + 1
    assert not _purges(globex.tenant).exists()


def test_a_second_pass_purges_nothing_and_audits_nothing(acme, runs):
    _retention(acme, 30)
    run_content_purge(now=NOW)
    assert run_content_purge(now=NOW + timedelta(hours=1)) == {}
    assert _purges(acme.tenant).count() == 1
    # the recent run's turn comes when its period is over
    assert run_content_purge(now=NOW + timedelta(days=25)) == {"acme": 1}


def test_the_purge_goes_in_bounded_batches_each_audited(acme, runs):
    _retention(acme, 30)

    first = run_content_purge(now=NOW, batch_size=1, max_batches=1)
    second = run_content_purge(now=NOW, batch_size=1, max_batches=5)

    assert (first, second) == ({"acme": 1}, {"acme": 1})
    assert [event.metadata["runs"] for event in _purges(acme.tenant)] == [1, 1]
    assert Run.objects.filter(tenant=acme.tenant, content_purged_at__isnull=False).count() == 2


def test_no_retention_keeps_everything(acme, runs):
    assert run_content_purge(now=NOW + timedelta(days=3650)) == {}
    assert all(_holds_canary(run) for run in runs.values())


def test_the_audit_chain_still_verifies_after_a_purge(acme, runs, capsys):
    _retention(acme, 30)
    run_content_purge(now=NOW)
    call_command("verify-audit", "--tenant", "acme", "--full")
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("role", [Role.OWNER, Role.DEVELOPER, Role.AUDITOR])
def test_the_api_says_purged_with_nulls_not_empty_values(acme, runs, role):
    _retention(acme, 30)
    run_content_purge(now=NOW)
    body = acme.api(role).get(f"/api/v1/runs/{runs['failed'].pk}/").json()
    assert body["content_purged_at"] is not None
    assert body["error_message"] is None
    assert body["error_code"] == "provider_error"
    assert {step.get("error", "gone") for step in body["steps"]} == {None}
    if role != Role.AUDITOR:
        assert body["input"] is None
        assert {step["output_text"] for step in body["steps"]} == {None}
    kept = acme.api(role).get(f"/api/v1/runs/{runs['recent'].pk}/").json()
    assert kept["content_purged_at"] is None
    assert kept["error_message"] == ""


def test_the_run_page_says_purged_on_and_downloads_answer_410(acme, runs):
    _retention(acme, 30)
    run_content_purge(now=NOW)
    client = acme.client(Role.OWNER)
    run = runs["failed"]
    html = client.get(reverse("runs:run-detail", args=["acme", run.pk])).content.decode()
    assert 'id="run-purged"' in html
    assert 'id="run-content-purged"' in html
    assert "Error message purged on" in html
    assert CANARY not in html
    assert 'id="run-input"' not in html
    download = client.get(reverse("runs:run-value", args=["acme", run.pk, "input"]))
    assert download.status_code == 410
    assert "Purged on" in download.content.decode()


def test_the_purge_is_a_beat_task_on_the_maintenance_queue():
    entry = next(
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"].endswith("purge_run_content")
    )
    assert entry["schedule"] == settings.RETENTION_PURGE_INTERVAL
    assert settings.CELERY_TASK_ROUTES[entry["task"]] == {"queue": settings.MAINTENANCE_QUEUE}
    from runs.tasks import purge_run_content
    from swrly.celery import app

    assert purge_run_content.name == entry["task"]
    queue = app.amqp.router.route({}, purge_run_content.name)["queue"].name
    assert queue == settings.MAINTENANCE_QUEUE
