"""The sweeper: queued runs with valid keys that no worker claimed in time are enqueued again."""

from datetime import timedelta

from django.utils import timezone

from runs.executor import runs_requeue
from runs.models import Run, RunStatus
from swrly.audit.models import AuditEvent
from tests.runs.real_workers import publishing_to


def _published_run_ids(published):
    return [body[0][0] for _, body in published]


def test_only_unclaimed_queued_runs_with_valid_keys_are_enqueued_again(
    acme, key_store, published, settings
):
    settings.RUN_REQUEUE_AFTER = 120
    now = timezone.now()
    lost, fresh, expired, running, recent = (acme.run() for _ in range(5))
    Run.objects.filter(pk__in=[r.pk for r in (lost, fresh, expired, running, recent)]).update(
        keys_expire_at=now + timedelta(seconds=600)
    )
    Run.objects.filter(pk__in=[r.pk for r in (lost, expired, running, recent)]).update(
        created_at=now - timedelta(seconds=121)
    )
    Run.objects.filter(pk=expired.pk).update(keys_expire_at=now - timedelta(seconds=1))
    Run.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING)
    Run.objects.filter(pk=recent.pk).update(requeued_at=now - timedelta(seconds=60))

    assert runs_requeue(now=now) == 1

    assert _published_run_ids(published) == [str(lost.pk)]
    lost.refresh_from_db()
    assert (lost.status, lost.requeued_at, lost.requeues) == (RunStatus.QUEUED, now, 1)
    event = AuditEvent.objects.get(target=f"run:{lost.pk}", action="run.requeued")
    assert event.metadata == {"requeues": 1}
    # Not again within the bound; again once it has passed without a claim.
    assert runs_requeue(now=now + timedelta(seconds=60)) == 0
    assert runs_requeue(now=now + timedelta(seconds=121)) == 3  # `lost`, `recent` and `fresh`
    lost.refresh_from_db()
    assert lost.requeues == 2


def test_a_sweep_the_broker_refuses_records_nothing(acme, key_store, settings):
    settings.RUN_REQUEUE_AFTER = 120
    now = timezone.now()
    run = acme.run()
    Run.objects.filter(pk=run.pk).update(
        keys_expire_at=now + timedelta(seconds=600), created_at=now - timedelta(seconds=121)
    )
    with publishing_to("redis://127.0.0.1:1/0"):  # nothing listens on port 1
        assert runs_requeue(now=now) == 0

    run.refresh_from_db()
    assert (run.status, run.requeued_at, run.requeues) == (RunStatus.QUEUED, None, 0)
    assert not AuditEvent.objects.filter(target=f"run:{run.pk}", action="run.requeued").exists()
    assert runs_requeue(now=now) == 1  # the broker answers again: the next sweep does it
