"""The request id follows a run from the API through the broker to the worker's logs."""

import logging

from django.test import Client

from runs.models import RunStatus
from tenants.models import Role
from tests.runs.conftest import wait_for_run
from tests.test_logs import _lines


def test_the_request_id_follows_a_run_to_the_worker(
    acme, provider_server, celery_worker, key_store, captured, caplog
):
    caplog.set_level(logging.INFO, logger="runs.tasks")  # a started worker may lower the root
    api = Client(
        headers={
            "Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}",
            "X-Request-Id": "trace-run-42",
        }
    )
    workflow = api.post(
        "/api/v1/workflows/",
        {
            "name": "one",
            "steps": [{"name": "a", "provider": "sandbox", "model": "sandbox-1", "prompt": "Hi"}],
        },
        "application/json",
    ).json()
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow["id"], "provider_keys": {"sandbox": "sk-sandbox-0123456789ab"}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    assert response["X-Request-Id"] == "trace-run-42"
    assert wait_for_run(response.json()["id"]).status == RunStatus.SUCCEEDED
    from_worker = [
        e
        for e in _lines(captured)
        if e["logger"] == "runs.tasks" and response.json()["id"] in e["message"]
    ]
    assert from_worker
    assert {e["request_id"] for e in from_worker} == {"trace-run-42"}
