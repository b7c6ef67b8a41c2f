"""The tenant's policy where it bites: a workflow's save, a run's creation (through the API, with
the real key store), and a run's start (through the real executor and sandbox provider)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.executor import run_execute
from runs.models import Run, RunError, RunStatus, StepStatus, Workflow
from swrly.audit.models import AuditEvent
from swrly.keys.store import KEY_PATTERN, redis_key
from tenants.models import Role, Tenant

KEY = "sk-sandbox-canary-policy-0123456789"
WORKFLOWS = "/api/v1/workflows/"
RUNS = "/api/v1/runs/"


def _steps(*providers_models):
    return [
        {"name": f"s{i}", "provider": provider, "model": model, "prompt": "hello"}
        for i, (provider, model) in enumerate(providers_models)
    ]


def _policy(world, **policy):
    Tenant.objects.filter(pk=world.tenant.pk).update(**policy)
    world.tenant.refresh_from_db()


def _save(world, steps):
    return world.api(Role.DEVELOPER).post(
        WORKFLOWS, {"name": "w", "steps": steps}, "application/json"
    )


def test_a_workflow_naming_a_provider_the_policy_refuses_is_not_saved(acme, settings):
    _policy(acme, allowed_providers=["sandbox"])

    response = _save(acme, _steps(("sandbox", "sandbox-1"), ("openai", "gpt-4o-mini")))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {
        "steps": [
            "steps[1].provider: openai is not allowed by this tenant's policy (allowed: sandbox)"
        ]
    }
    assert not Workflow.objects.filter(tenant=acme.tenant).exists()
    assert not AuditEvent.objects.filter(tenant=acme.tenant, action="workflow.created").exists()


def test_a_model_outside_the_providers_list_is_refused_and_a_prefix_allows_a_family(acme):
    _policy(acme, allowed_models={"openai": ["gpt-4o-mini", "o3-*"]})

    refused = _save(acme, _steps(("openai", "o3-pro"), ("openai", "gpt-4o")))
    allowed = _save(acme, _steps(("openai", "o3-pro"), ("openai", "gpt-4o-mini"), ("sandbox", "x")))

    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["steps"] == [
        "steps[1].model: gpt-4o is not an allowed openai model in this tenant's policy "
        "(allowed: gpt-4o-mini, o3-*)"
    ]
    assert allowed.status_code == 201, allowed.content


def test_an_update_is_checked_and_a_rename_of_an_older_workflow_is_not(acme):
    created = _save(acme, _steps(("openai", "gpt-4o")))
    workflow = created.json()["id"]
    _policy(acme, allowed_providers=["anthropic"])
    api = acme.api(Role.DEVELOPER)

    refused = api.patch(
        f"{WORKFLOWS}{workflow}/", {"steps": _steps(("openai", "gpt-4o"))}, "application/json"
    )
    renamed = api.patch(f"{WORKFLOWS}{workflow}/", {"name": "renamed"}, "application/json")

    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["steps"][0].startswith("steps[0].provider: openai")
    assert renamed.status_code == 200
    assert Workflow.objects.get(pk=workflow).steps[0]["provider"] == "openai"


def test_a_run_of_a_workflow_the_policy_now_refuses_is_refused_before_any_key_is_deposited(
    acme, key_store, settings
):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    workflow = _save(acme, _steps(("sandbox", "sandbox-1"))).json()["id"]
    _policy(acme, allowed_models={"sandbox": ["sandbox-2"]})

    response = acme.api(Role.DEVELOPER).post(
        RUNS, {"workflow": workflow, "provider_keys": {"sandbox": KEY}}, "application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "workflow": [
            "steps[0].model: sandbox-1 is not an allowed sandbox model in this tenant's policy "
            "(allowed: sandbox-2)"
        ]
    }
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(KEY_PATTERN)) == []
    assert KEY not in response.content.decode()


def test_stored_keys_live_the_tenants_ttl_when_it_is_below_the_platforms(acme, key_store, settings):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    settings.BYOK_TOKEN_TTL = 900
    _policy(acme, max_key_ttl=400)
    workflow = _save(acme, _steps(("sandbox", "sandbox-1"))).json()["id"]
    before = timezone.now()

    response = acme.api(Role.DEVELOPER).post(
        RUNS, {"workflow": workflow, "provider_keys": {"sandbox": KEY}}, "application/json"
    )

    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["id"])
    ttl = key_store.ttl(redis_key(tenant_id=run.tenant_id, run_id=run.pk, provider="sandbox"))
    assert 0 < ttl <= 400
    deposited = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.deposited")
    assert deposited.metadata["ttl"] == 400
    assert run.keys_expire_at <= before + timedelta(seconds=401)
    assert run.keys_expire_at >= before + timedelta(seconds=399)


def test_a_run_queued_before_the_policy_was_narrowed_fails_policy_refused_at_its_start(
    acme, key_store, provider_server
):
    workflow = _save(acme, _steps(("sandbox", "sandbox-1"))).json()["id"]
    queued = acme.api(Role.DEVELOPER).post(
        RUNS, {"workflow": workflow, "provider_keys": {"sandbox": KEY}}, "application/json"
    )
    assert queued.status_code == 202, queued.content
    run_id = queued.json()["id"]
    token = redis_key(tenant_id=acme.tenant.pk, run_id=run_id, provider="sandbox")
    assert key_store.exists(token)
    # the owner narrows the policy while the run waits for a worker
    acme.api(Role.OWNER).patch(
        "/api/v1/policy/", {"allowed_providers": ["anthropic"]}, "application/json"
    )

    run = run_execute(run_id=run_id)

    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.POLICY_REFUSED)
    assert run.error_message == (
        "refused by the tenant's policy: steps[0].provider: sandbox is not allowed by this "
        "tenant's policy (allowed: anthropic)"
    )
    assert not key_store.exists(token)  # deleted, never taken
    assert provider_server.requests == []
    assert run.step_runs.get().status == StepStatus.SKIPPED
    trail = AuditEvent.objects.filter(target=f"run:{run_id}").order_by("seq")
    actions = list(trail.values_list("action", flat=True))
    assert "key.consumed" not in actions
    discarded = trail.get(action="key.discarded")
    assert discarded.metadata["reason"] == "policy_refused"
    assert discarded.metadata["token_found"] is True
    failed = trail.get(action="run.failed")
    assert failed.metadata == {"error_code": "policy_refused", "keys_released": []}
    assert actions.index("key.discarded") < actions.index("run.failed")


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_real_worker_runs_what_the_policy_allows(acme, provider_server, celery_worker, narrowed):
    from tests.runs.conftest import wait_for_run

    workflow = _save(acme, _steps(("sandbox", "sandbox-1"))).json()["id"]
    if narrowed:
        _policy(acme, allowed_providers=["sandbox"], allowed_models={"sandbox": ["sandbox-*"]})
    response = acme.api(Role.DEVELOPER).post(
        RUNS, {"workflow": workflow, "provider_keys": {"sandbox": KEY}}, "application/json"
    )
    assert response.status_code == 202, response.content
    run = wait_for_run(response.json()["id"])
    assert run.status == RunStatus.SUCCEEDED, run.error_message
