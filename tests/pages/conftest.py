"""Factories for the security-team pages: runs with steps, keys and a realistic audit trail.

Runs are made through the models (the key service and the executor are tested elsewhere);
their audit events use the real action names and metadata shapes, through audit_record.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from runs.models import Run, RunStatus, StepRun, StepStatus
from swrly.audit.writer import Actor, audit_record
from swrly.custody.models import KeyRotation, KeyRotationTenant, RotationOutcome
from swrly.custody.services import provider_key_seen
from swrly.keys.fingerprint import legacy_fingerprint as fingerprint

CANARY = "CANARY-7f3a9c-do-not-show-auditors"
KEY_A = "sk-ant-api03-" + "a" * 40 + "Qa1x"
KEY_B = "sk-ant-api03-" + "b" * 40 + "Zb2y"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def key_print(key: str, provider: str = "anthropic"):
    return fingerprint(provider=provider, key=key)


def make_run(
    world,
    *,
    at: datetime = T0,
    status: str = RunStatus.SUCCEEDED,
    key: str = KEY_A,
    provider: str = "anthropic",
    steps: int = 2,
    error_code: str = "",
    canary: str = CANARY,
    events: bool = False,
) -> Run:
    """A run made at `at`, its steps (with tokens and outputs), and its key's ProviderKey row.

    With `events`, the run's audit trail too: created, deposited, started, consumed, ended.
    """
    workflow = world.workflow()
    print_ = key_print(key, provider)
    with time_machine.travel(at, tick=False):
        run = Run.objects.create(
            tenant=world.tenant,
            workflow=workflow,
            workflow_name=workflow.name,
            steps=[
                {
                    "name": f"step{i}",
                    "provider": provider,
                    "model": "model-1",
                    "system": f"system {canary}",
                    "prompt": f"prompt {canary} {{{{ input.topic }}}}",
                }
                for i in range(steps)
            ],
            input={"topic": f"input {canary}"},
            status=status,
            error_code=error_code,
            error_message="step step1: the provider answered 500" if error_code else "",
            triggered_by="token:ci (swr_abc…)",
            key_fingerprints={provider: {"fingerprint": print_.value, "hint": print_.hint}},
            keys_expire_at=at + timedelta(seconds=900),
            keys_consumed_at=at + timedelta(seconds=1) if status != RunStatus.QUEUED else None,
            worker="worker-7" if status != RunStatus.QUEUED else "",
            started_at=at + timedelta(seconds=1) if status != RunStatus.QUEUED else None,
            finished_at=at + timedelta(seconds=3)
            if status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
            else None,
        )
        StepRun.objects.bulk_create(
            StepRun(
                tenant=world.tenant,
                run=run,
                position=i,
                name=f"step{i}",
                provider=provider,
                model="model-1",
                status=StepStatus.SUCCEEDED,
                provider_request_id=f"req_{i}_{run.pk.hex[:8]}",
                input_tokens=10,
                output_tokens=5,
                latency_ms=120,
                attempts=1,
                output_text=f"output {canary}",
            )
            for i in range(steps)
        )
        provider_key_seen(
            tenant=world.tenant, provider=provider, fingerprint=print_.value, hint=print_.hint
        )
        if events:
            run_trail(world, run, provider=provider, print_=print_, status=status)
    return run


def run_trail(world, run, *, provider, print_, status) -> None:
    """The audit events the run engine writes for one run, with their real shapes (audit_record
    checks each against the registry in swrly/audit/events.py)."""
    target = f"run:{run.pk}"
    actor = Actor(label="token:ci (swr_abc…)")
    worker = Actor.system("worker worker-7")
    tenant = world.tenant
    audit_record(
        tenant=tenant,
        action="run.created",
        actor=actor,
        target=target,
        metadata={"workflow": str(run.workflow_id), "providers": [provider]},
    )
    audit_record(
        tenant=tenant,
        action="key.deposited",
        actor=actor,
        target=target,
        metadata={
            "provider": provider,
            "fingerprint": print_.value,
            "hint": print_.hint,
            "ttl": 900,
            "encryption_key_id": "0a1b2c3d",
        },
    )
    if status == RunStatus.QUEUED:
        return
    audit_record(
        tenant=tenant, action="run.started", actor=worker, target=target, metadata={"worker": "w7"}
    )
    audit_record(
        tenant=tenant,
        action="key.consumed",
        actor=worker,
        target=target,
        metadata={
            "provider": provider,
            "fingerprint": print_.value,
            "worker": "worker-7",
            "encryption_key_id": "0a1b2c3d",
            "destination": "https://api.anthropic.com",
        },
    )
    ended = {"keys_released": [provider]}
    if status == RunStatus.FAILED:
        ended["error_code"] = "provider_error"
    audit_record(tenant=tenant, action=f"run.{status}", actor=worker, target=target, metadata=ended)


def make_rotation(world, *, at: datetime = T0, rewrapped: int | None = 3) -> KeyRotation:
    """A finished rotation; `rewrapped` of the world's tokens (None: it touched no token)."""
    rotation = KeyRotation.objects.create(
        started_at=at,
        finished_at=at + timedelta(seconds=2),
        actor="system:rotate-keys",
        from_key_ids=["0a1b2c3d"],
        to_key_id="9f8e7d6c",
        scanned=50,
        rewrapped=40,
        outcome=RotationOutcome.SUCCEEDED,
    )
    if rewrapped is not None:
        KeyRotationTenant.objects.create(
            rotation=rotation, tenant=world.tenant, rewrapped=rewrapped
        )
    return rotation


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)


def assert_clean_html(html: str) -> None:
    """No inline script and no style attribute: what the CSP would block."""
    assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html).group(0)
    assert not STYLE_ATTRIBUTE.search(html), STYLE_ATTRIBUTE.search(html).group(0)
    assert "<style" not in html.lower()


@pytest.fixture
def frozen_now():
    """The clock at T0 + 1 day (the dashboard's 14 days end here)."""
    with time_machine.travel(T0 + timedelta(days=1), tick=False) as traveller:
        yield traveller
