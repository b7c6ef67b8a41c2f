"""LOG_FORMAT=json: one JSON object per line, redacted, and one request id from a run's POST
to a real worker process's lines for that run."""

import json
import logging
import secrets

import pytest
from django.test import Client

from runs.models import RunStatus
from swrly.keys.redaction import REDACTED
from swrly.keys.secret import ProviderSecret
from swrly.logs import logging_config, request_id
from tenants.models import Role
from tests.runs.conftest import wait_for_run
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)
from tests.runs.real_workers import broker, wait_until, worker_env, workers  # noqa: F401


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _escaped_forms(value):
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=True)[1:-1]}


def test_text_is_the_plain_format_and_json_is_json():
    plain = logging_config(log_format="text", level="INFO")
    assert "json" not in plain["formatters"]
    assert plain["handlers"]["console"]["formatter"] == "plain"
    assert logging_config(log_format="json", level="INFO")["formatters"]["json"] == {
        "()": "swrly.logs.JsonFormatter"
    }


def test_a_held_key_never_reaches_a_json_line_escaped_or_not(captured):
    # Not shaped like a provider key, with characters JSON escapes: only redaction by value
    # catches it, and the JSON encoder must not turn it into a form redaction did not see.
    value = 'canary"\\é-' + secrets.token_hex(12)
    secret = ProviderSecret(value)
    log = logging.getLogger("swrly.tests.json")
    token = request_id.set("req-canary")
    try:
        log.warning("key=%s", value)
        log.warning("body %s", json.dumps({"api_key": value}))
        log.warning({"openai": value})
        try:
            raise ValueError(f"upstream echoed {value!r}")
        except ValueError:
            log.exception("provider failed for %r", value)
    finally:
        request_id.reset(token)
        secret.discard()
    output = captured.getvalue()
    entries = _lines(output)
    assert len(entries) == 4
    for form in _escaped_forms(value):
        assert form not in output
    decoded = json.dumps(entries, ensure_ascii=False)
    assert value not in "".join(str(e.get(f, "")) for e in entries for f in e)
    assert value not in decoded
    assert all(REDACTED in e["message"] for e in entries)
    assert REDACTED in entries[-1]["exception"]
    assert {e["request_id"] for e in entries} == {"req-canary"}


def test_each_request_has_an_access_line_under_its_id_without_the_query(db, captured):
    Client(headers={"X-Request-Id": "req-access-1"}).get("/accounts/login/?next=/secret&x=1")
    Client().get("/healthz")  # probes are not logged
    access = [e for e in _lines(captured.getvalue()) if e["logger"] == "swrly.access"]
    assert len(access) == 1
    (entry,) = access
    assert entry["request_id"] == "req-access-1"
    assert entry["message"].startswith("GET /accounts/login/ 200 ")
    assert "next" not in entry["message"]


def test_a_forged_line_in_a_path_is_escaped(db, caplog):
    caplog.set_level(logging.INFO, logger="swrly.access")
    Client().get("/no-such-page%0a2026-01-01 INFO forged")
    (record,) = [r for r in caplog.records if r.name == "swrly.access"]
    assert "\n" not in record.getMessage()
    assert "\\x0a" in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_a_runs_post_and_its_worker_lines_share_one_request_id_in_json(
    acme,
    key_store,
    provider_server,  # noqa: F811  (the fixtures imported above)
    broker,  # noqa: F811
    workers,  # noqa: F811
    captured,
):
    env = worker_env(
        broker_url=broker.url,
        provider_url=provider_server.url,
        LOG_FORMAT="json",
        # Printed before any logging exists, and only because this test machine runs as root.
        PYTHONWARNINGS="ignore:You're running the worker with superuser privileges",
    )
    # --quiet: no start-up banner, the one thing Celery prints that is not a log record.
    workers.start(
        "json", env, "--quiet", "worker", "--loglevel=INFO", "--pool=threads", "--concurrency=1"
    )
    api = Client(
        headers={
            "Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}",
            "X-Request-Id": "trace-json-7",
        }
    )
    response = api.post(
        "/api/v1/runs/",
        {"workflow": str(acme.workflow().pk), "provider_keys": {"sandbox": "sk-sandbox-json-01"}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    assert wait_for_run(run_id, timeout=60).status == RunStatus.SUCCEEDED

    api_lines = [
        e
        for e in _lines(captured.getvalue())
        if e["logger"] == "swrly.access" and e["message"].startswith("POST /api/v1/runs/ 202")
    ]
    assert [e["request_id"] for e in api_lines] == ["trace-json-7"]

    def worker_lines():
        lines = []
        for raw in workers.log("json").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return [e for e in lines if e["logger"] == "runs.tasks" and run_id in e["message"]]

    from_worker = wait_until(
        worker_lines, timeout=20, what="the worker's JSON line for the run", on_fail=workers.logs
    )
    assert {e["request_id"] for e in from_worker} == {"trace-json-7"}
    # Every line the worker wrote is JSON (Celery's own lines included), and none holds the key.
    text = workers.log("json")
    assert all(raw.startswith("{") for raw in text.splitlines() if raw.strip()), text[-3000:]
    assert "sk-sandbox-json-01" not in text
