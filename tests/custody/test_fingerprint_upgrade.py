"""Runs queued before the v2 upgrade (with legacy v1 fingerprints) still start, and a v2
fingerprint that does not match the key is still a rejection."""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

from runs.executor import run_execute
from runs.models import Run, RunError, RunStatus
from swrly.audit.models import AuditEvent
from swrly.keys.fingerprint import legacy_fingerprint
from tenants.models import Role
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
    retry_delays,
)

KEY = "sk-ant-api03-upgrade-0123456789abcdef"


def _queued_run(world):
    api = world.api(Role.DEVELOPER)
    steps = [{"name": "s0", "provider": "anthropic", "model": "m", "prompt": "hello"}]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {"anthropic": KEY}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["id"])


def _record(run, value):
    run.key_fingerprints["anthropic"]["fingerprint"] = value
    Run.objects.filter(pk=run.pk).update(key_fingerprints=run.key_fingerprints)


def test_a_run_recorded_with_a_legacy_fingerprint_still_runs(acme, key_store, provider_server):
    # given a queued run as the previous release recorded it (v1 fingerprint)
    run = _queued_run(acme)
    legacy = legacy_fingerprint(provider="anthropic", key=KEY).value
    _record(run, legacy)

    run = run_execute(run_id=str(run.pk))

    assert run.status == RunStatus.SUCCEEDED
    consumed = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.consumed")
    assert consumed.metadata["fingerprint"] == legacy


def test_a_v2_fingerprint_of_another_key_is_rejected(acme, key_store, provider_server):
    run = _queued_run(acme)
    _record(run, "v2:" + "0" * 64)

    run = run_execute(run_id=str(run.pk))

    assert run.status == RunStatus.FAILED
    assert run.error_code == RunError.KEY_REJECTED
    rejected = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.rejected")
    assert rejected.metadata["reason"] == "fingerprint mismatch"
