"""Retention: a tenant's run content is purged `retention_days` after each run ended.

Content is what a run was given and what it said: its input, the prompt templates frozen with
it (Swrly never stores a rendered prompt), its steps' outputs, and the error texts (the run's
error message and each step's error, which may quote a provider's answer). What stays: the
run's metadata (status, error code, times, workflow name, triggered by), its key fingerprints,
its steps' names, providers, models, usage, request ids and destinations, and the audit log.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.models import FINISHED, IdempotencyKey, Run, StepRun
from swrly.audit.writer import Actor, audit_record
from tenants.models import Tenant

log = logging.getLogger(__name__)

# The fields of a frozen step that hold content; the others (name, provider, model, limits) stay.
STEP_CONTENT_FIELDS = ("system", "prompt")


def _purged_steps(steps: Any) -> list[Any]:
    if not isinstance(steps, list):
        return []
    return [
        {**step, **dict.fromkeys(STEP_CONTENT_FIELDS, "")} if isinstance(step, dict) else step
        for step in steps
    ]


@transaction.atomic
def _purge_batch(
    *, tenant: Tenant, cutoff: datetime, size: int, now: datetime, actor: Actor
) -> tuple[int, int]:
    """Purge up to `size` of the tenant's runs that ended before `cutoff`, and audit how many,
    in one transaction. Returns (runs, steps) purged."""
    due = Run.objects.filter(
        tenant=tenant,
        content_purged_at=None,
        finished_at__lt=cutoff,
        status__in=FINISHED,
    )
    # Locked and skipped when locked: two purges at once never take the same run.
    runs = list(
        due.select_for_update(skip_locked=True, of=("self",))
        .order_by("finished_at", "id")
        .only("id", "steps")[:size]
    )
    if not runs:
        return 0, 0
    for run in runs:
        Run.objects.filter(pk=run.pk, content_purged_at=None).update(
            input={},
            steps=_purged_steps(run.steps),
            error_message="",
            content_purged_at=now,
        )
    ids = [run.pk for run in runs]
    steps = StepRun.objects.filter(tenant=tenant, run_id__in=ids).update(output_text="", error="")
    # An Idempotency-Key's request hash is a hash of the input: gone with it (its 24-hour window
    # closed long before a run could be purged).
    IdempotencyKey.objects.filter(tenant=tenant, run_id__in=ids).delete()
    audit_record(
        tenant=tenant,
        action="run.content_purged",
        actor=actor,
        target=f"tenant:{tenant.slug}",
        metadata={
            "runs": len(ids),
            "steps": steps,
            "retention_days": tenant.retention_days,
            "finished_before": cutoff.isoformat(),
        },
    )
    return len(ids), steps


def run_content_purge(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> dict[str, int]:
    """Purge the content of every tenant's runs that ended more than its `retention_days` ago.

    Bounded: batches of RETENTION_PURGE_BATCH runs, each its own transaction with one
    `run.content_purged` event (counts, never content), at most RETENTION_PURGE_MAX_BATCHES per
    tenant per call (the next call, an interval later, goes on). Idempotent: a purged run is
    never taken again. Returns {tenant slug: runs purged} for the tenants where it purged any.
    """
    now = now or timezone.now()
    size = batch_size or settings.RETENTION_PURGE_BATCH
    batches = max_batches or settings.RETENTION_PURGE_MAX_BATCHES
    actor = Actor.system("retention")
    purged: dict[str, int] = {}
    for tenant in Tenant.objects.filter(retention_days__isnull=False).order_by("slug"):
        cutoff = now - timedelta(days=tenant.retention_days or 0)
        total = 0
        for _ in range(batches):
            runs, _steps = _purge_batch(
                tenant=tenant, cutoff=cutoff, size=size, now=now, actor=actor
            )
            total += runs
            if runs < size:
                break
        if total:
            purged[tenant.slug] = total
            log.info("purged the content of %d runs of tenant %s", total, tenant.slug)
    return purged
