"""The runs API end to end: API → key store → Celery → GETDEL → sandbox provider → done."""

import json
import logging
import secrets
import socket
from datetime import UTC, datetime

import pytest
from django.db import connection

from runs.models import Run, RunStatus, StepRun, Workflow
from swrly.audit.models import AuditEvent
from swrly.custody.models import ProviderKey
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.runs.conftest import wait_for_run

THREE_STEPS = [
    {
        "name": "outline",
        "provider": "anthropic",
        "model": "claude-test",
        "prompt": "Outline {{ input.topic }}",
    },
    {
        "name": "draft",
        "provider": "openai",
        "model": "gpt-test",
        "system": "Be brief.",
        "prompt": "Draft from: {{ steps.outline.output }}",
    },
    {
        "name": "review",
        "provider": "anthropic",
        "model": "claude-test",
        "prompt": "Review {{ steps.draft.output }}",
    },
]


def _canary(provider):
    return f"sk-{'ant-' if provider == 'anthropic' else 'proj-'}canary{secrets.token_hex(16)}"


def _workflow(world, steps=THREE_STEPS, role=Role.DEVELOPER):
    response = world.api(role).post(
        "/api/v1/workflows/", {"name": "report", "steps": steps}, "application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _trigger(world, workflow_id, keys, run_input=None, role=Role.DEVELOPER):
    return world.api(role).post(
        "/api/v1/runs/",
        {"workflow": workflow_id, "input": run_input or {"topic": "BYOK"}, "provider_keys": keys},
        "application/json",
    )


def _database_text():
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def _actions(run_id):
    return list(
        AuditEvent.objects.filter(target=f"run:{run_id}")
        .order_by("seq")
        .values_list("action", flat=True)
    )


def test_a_run_goes_end_to_end_and_leaves_no_key_behind(
    acme, provider_server_factory, celery_worker, published, key_store, caplog
):
    keys = {"anthropic": _canary("anthropic"), "openai": _canary("openai")}
    server = provider_server_factory(expected_keys=set(keys.values()))
    workflow = _workflow(acme)

    with caplog.at_level(logging.DEBUG):
        response = _trigger(acme, workflow["id"], keys)
        assert response.status_code == 202, response.content
        run = wait_for_run(response.json()["id"])
        detail = acme.api(Role.DEVELOPER).get(f"/api/v1/runs/{run.pk}/")

    # then the run succeeded with every step recorded
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    body = detail.json()
    assert [s["status"] for s in body["steps"]] == ["succeeded"] * 3
    for step in body["steps"]:
        assert step["provider_request_id"].startswith("req_") or step["provider_request_id"]
        assert step["input_tokens"] > 0
        assert step["output_tokens"] > 0
        assert step["latency_ms"] is not None
        assert step["output_text"].startswith("sandbox:")
    # each provider got its own key, in its own header, and nothing else did
    received = [
        (r.path, r.headers.get("x-api-key") or r.headers.get("authorization"))
        for r in server.requests
    ]
    assert received == [
        ("/v1/messages", keys["anthropic"]),
        ("/v1/chat/completions", f"Bearer {keys['openai']}"),
        ("/v1/messages", keys["anthropic"]),
    ]
    # the second step's prompt carried the first step's output
    assert body["steps"][0]["output_text"] in server.requests[1].body["messages"][-1]["content"]
    # the key is gone from Redis and its trail is in the audit log
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    actions = _actions(run.pk)
    assert actions[:3] == ["run.created", "key.deposited", "key.deposited"]
    assert actions[3:6] == ["run.started", "key.consumed", "key.consumed"]
    assert actions[-1] == "run.succeeded"
    consumed = AuditEvent.objects.filter(target=f"run:{run.pk}", action="key.consumed")
    assert {e.metadata["fingerprint"] for e in consumed} == {
        v["fingerprint"] for v in run.key_fingerprints.values()
    }
    assert ProviderKey.objects.filter(tenant=acme.tenant).count() == 2
    # the canary keys are nowhere: database, logs, broker messages, API responses
    everywhere = "\n".join(
        [
            _database_text(),
            caplog.text,
            repr(published),
            response.content.decode(),
            detail.content.decode(),
            acme.api(Role.DEVELOPER).get("/api/v1/runs/").content.decode(),
        ]
    )
    for key in keys.values():
        assert key not in everywhere
    assert published, "the run was published to the broker"
    assert json.dumps(published[0][1], default=str).count(str(run.pk)) >= 1


def test_auditors_read_runs_without_inputs_or_outputs(acme, provider_server, celery_worker):
    workflow = _workflow(acme)
    response = _trigger(
        acme, workflow["id"], {"anthropic": _canary("anthropic"), "openai": _canary("openai")}
    )
    run = wait_for_run(response.json()["id"])
    body = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/").json()
    assert "input" not in body
    assert all("output_text" not in step for step in body["steps"])
    assert body["steps"][0]["provider_request_id"]
    listed = acme.api(Role.AUDITOR).get("/api/v1/workflows/").json()["results"][0]
    assert all("prompt" not in step and "system" not in step for step in listed["steps"])


@pytest.mark.parametrize(
    ("keys", "field", "message"),
    [
        ({"anthropic": "sk-ant-aaaaaaaaaaaa"}, "provider_keys.openai", "key is required"),
        (
            {
                "anthropic": "sk-ant-aaaaaaaaaaaa",
                "openai": "sk-proj-bbbbbbbbbbb",
                "gemini": "k" * 20,
            },
            "provider_keys.gemini",
            "unknown provider",
        ),
        (
            {"anthropic": "sk-ant-aaaaaaaaaaaa", "openai": "sk-proj-bbbb\nX-Injected: 1"},
            "provider_keys.openai",
            "whitespace or control",
        ),
        (
            # Keys echoed escaped (JSON, HTML, URL) would not look like themselves: refused.
            {"anthropic": "sk-ant-aaaa&quot;aaaa", "openai": "sk-proj-bbbbbbbbbbb"},
            "provider_keys.anthropic",
            "other than letters, digits, '-' and '_'",
        ),
        (
            {
                "anthropic": "sk-ant-aaaaaaaaaaaa",
                "openai": "sk-proj-bbbbbbbbbbb",
                "sandbox": "sk-x-cccccccc",
            },
            "provider_keys.sandbox",
            "does not use sandbox",
        ),
    ],
)
def test_bad_keys_are_refused_naming_the_provider(acme, key_store, keys, field, message):
    workflow = _workflow(acme)
    response = _trigger(acme, workflow["id"], keys)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in " ".join(error["fields"][field])
    for key in keys.values():
        assert key not in response.content.decode()
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []


def test_more_key_entries_than_providers_could_need_are_refused_before_any_is_held(acme, key_store):
    workflow = _workflow(acme)
    keys = {f"p{i}": f"sk-{i:02d}-" + "k" * 20 for i in range(9)}
    response = _trigger(acme, workflow["id"], keys)
    assert response.status_code == 400
    assert "at most 8 provider keys" in " ".join(
        response.json()["error"]["fields"]["provider_keys"]
    )
    assert not Run.objects.exists()


def test_a_provider_the_platform_does_not_enable_is_refused_before_any_key_is_taken(
    acme, key_store, settings
):
    settings.PROVIDER_BASE_URLS = {"openai": "https://api.openai.com"}
    workflow = _workflow(acme)
    response = _trigger(
        acme, workflow["id"], {"anthropic": "sk-ant-aaaaaaaaaaaa", "openai": "sk-proj-bbbbbbbbbbb"}
    )
    assert response.status_code == 400
    assert "not enabled" in " ".join(response.json()["error"]["fields"]["provider_keys.anthropic"])
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []


def test_an_input_missing_a_referenced_field_is_refused(acme, key_store):
    workflow = _workflow(acme)
    response = _trigger(
        acme,
        workflow["id"],
        {"anthropic": "sk-ant-aaaaaaaaaaaa", "openai": "sk-proj-bbbbbbbbbbb"},
        run_input={"subject": "typo"},
    )
    assert response.status_code == 400
    assert "input.topic" in " ".join(response.json()["error"]["fields"]["input"])
    assert not Run.objects.exists()


def test_unknown_fields_are_refused(acme):
    workflow = _workflow(acme)
    response = acme.api(Role.DEVELOPER).post(
        "/api/v1/runs/",
        {"workflow": workflow["id"], "provider_keys": {}, "base_url": "https://evil.example"},
        "application/json",
    )
    assert response.status_code == 400
    assert "base_url" in response.json()["error"]["fields"]


def test_key_store_down_answers_503_and_leaves_no_run(acme, settings):
    workflow = _workflow(acme)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/0"
    response = _trigger(
        acme, workflow["id"], {"anthropic": "sk-ant-aaaaaaaaaaaa", "openai": "sk-proj-bbbbbbbbbbb"}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "key_store_unavailable"
    assert not Run.objects.exists()
    assert not AuditEvent.objects.filter(action__in=["run.created", "key.deposited"]).exists()


def test_auditors_cannot_write(acme):
    response = acme.api(Role.AUDITOR).post(
        "/api/v1/workflows/", {"name": "x", "steps": THREE_STEPS}, "application/json"
    )
    assert response.status_code == 403
    workflow = _workflow(acme)
    assert _trigger(acme, workflow["id"], {}, role=Role.AUDITOR).status_code == 403
    assert not Run.objects.exists()


def test_workflow_errors_say_which_step_and_why(acme):
    steps = [dict(THREE_STEPS[0]), {**THREE_STEPS[1], "prompt": "{{ steps.missing.output }}"}]
    response = acme.api(Role.DEVELOPER).post(
        "/api/v1/workflows/", {"name": "bad", "steps": steps}, "application/json"
    )
    assert response.status_code == 400
    assert (
        "steps[1].prompt: 'steps.missing' is not an earlier step"
        in response.json()["error"]["fields"]["steps"]
    )


def test_workflow_update_and_delete_are_audited_and_runs_keep_their_steps(acme):
    workflow = _workflow(acme)
    run = acme.run()
    run.workflow_id = workflow["id"]
    run.steps = THREE_STEPS
    run.save()
    api = acme.api(Role.DEVELOPER)
    patched = api.patch(
        f"/api/v1/workflows/{workflow['id']}/",
        {"description": "v2", "steps": THREE_STEPS[:1]},
        "application/json",
    )
    assert patched.status_code == 200
    assert len(patched.json()["steps"]) == 1
    assert api.delete(f"/api/v1/workflows/{workflow['id']}/").status_code == 204
    run.refresh_from_db()
    assert run.workflow_id is None
    assert len(run.steps) == 3
    actions = set(AuditEvent.objects.filter(tenant=acme.tenant).values_list("action", flat=True))
    assert {"workflow.created", "workflow.updated", "workflow.deleted"} <= actions
    assert not Workflow.objects.filter(pk=workflow["id"]).exists()


def test_run_list_filters_and_paginates_with_a_cursor(acme):
    other = Workflow.objects.create(tenant=acme.tenant, name="other", steps=acme.workflow().steps)
    runs = [acme.run() for _ in range(5)]
    Run.objects.filter(pk=runs[0].pk).update(status=RunStatus.FAILED)
    Run.objects.filter(pk=runs[1].pk).update(workflow=other)
    api = acme.api(Role.AUDITOR)
    failed = api.get("/api/v1/runs/?status=failed").json()["results"]
    assert [r["id"] for r in failed] == [str(runs[0].pk)]
    by_workflow = api.get(f"/api/v1/runs/?workflow={other.pk}").json()["results"]
    assert [r["id"] for r in by_workflow] == [str(runs[1].pk)]
    page = api.get("/api/v1/runs/?page_size=2").json()
    assert len(page["results"]) == 2
    second = api.get(page["next"]).json()
    seen = {r["id"] for r in page["results"]} | {r["id"] for r in second["results"]}
    assert len(seen) == 4
    assert api.get("/api/v1/runs/?status=bogus").status_code == 400
    future = api.get("/api/v1/runs/?created_after=2999-01-01T00:00:00Z").json()["results"]
    assert future == []
    assert StepRun.objects.count() == 0


def test_run_list_date_times_are_compared_in_utc_whatever_their_offset(acme):
    """An offset PostgreSQL cannot store (beyond ±15:59) is converted to UTC first, not a 500;
    an instant that does not exist in UTC is a 400 naming the parameter (found by the contract)."""
    run = acme.run()
    Run.objects.filter(pk=run.pk).update(created_at=datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    api = acme.api(Role.AUDITOR)

    def ids(query: str) -> list[str]:
        answer = api.get("/api/v1/runs/", {"created_after": query})
        assert answer.status_code == 200, answer.content
        return [r["id"] for r in answer.json()["results"]]

    # 2030-06-01T12:00 UTC is 2030-06-02T06:49+18:49: just before and just after it.
    assert ids("2030-06-02T06:48:59+18:49") == [str(run.pk)]
    assert ids("2030-06-02T06:49:01+18:49") == []
    assert ids("2000-01-01T00:00:00.967+18:49") == [str(run.pk)]
    refused = api.get("/api/v1/runs/", {"created_before": "0001-01-01T00:00:00+18:00"})
    assert refused.status_code == 400
    assert "created_before" in refused.json()["error"]["fields"]


def test_a_run_the_broker_refuses_fails_at_once_and_discards_its_keys(
    acme, transactional_db, key_store, settings
):
    from swrly.celery import app

    workflow = _workflow(acme, steps=[THREE_STEPS[0]])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker, options = app.conf.get("broker_write_url"), app.conf.broker_transport_options

    def use_broker(url, transport_options):
        # Celery caches its connection and producer pools: drop both so the URL takes effect.
        # Publishing uses broker_write_url (broker_url when unset).
        app.conf.broker_write_url, app.conf.broker_transport_options = url, transport_options
        app._pool = None
        app.amqp._producer_pool = None

    use_broker(f"redis://127.0.0.1:{port}/0", {"max_retries": 0})  # a broker that is down
    assert app.conf.broker_write_url.endswith(f":{port}/0")
    try:
        response = _trigger(acme, workflow["id"], {"anthropic": "sk-ant-aaaaaaaaaaaa"})
    finally:
        use_broker(broker, options)
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.status, run.error_code) == (RunStatus.FAILED, "queue_unavailable")
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    assert "key.discarded" in _actions(run.pk)
