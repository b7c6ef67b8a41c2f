"""Where each key went: every step records the allow-listed destination its requests went to,
and `key.consumed`, the run's end event, the run page and the API show it.

Through the real executor, key store and sandbox provider (a real HTTP server on loopback).
"""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from runs.executor import run_execute, runs_reap
from runs.models import Run, RunError, RunStatus, StepRun, StepStatus
from runs.providers.egress import Destination, destination_of
from swrly.audit.models import AuditEvent
from tenants.models import Role

KEY = "sk-ant-api03-canary-destinations-0123456789"


def _queued_run(world, prompts, provider="anthropic"):
    api = world.api(Role.DEVELOPER)
    steps = [
        {"name": f"s{i}", "provider": provider, "model": "m", "prompt": prompt}
        for i, prompt in enumerate(prompts)
    ]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    response = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {provider: KEY}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["id"])


def _event(run, action):
    return AuditEvent.objects.get(target=f"run:{run.pk}", action=action)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.anthropic.com", Destination("https", "api.anthropic.com", 443)),
        ("https://GW.Example.com:8443/openai", Destination("https", "gw.example.com", 8443)),
        ("http://127.0.0.1:8765", Destination("http", "127.0.0.1", 8765)),
        ("http://[::1]/", Destination("http", "::1", 80)),
    ],
)
def test_a_destination_is_the_allow_listed_scheme_host_and_explicit_port(url, expected):
    assert destination_of(url) == expected
    assert Destination("http", "::1", 80).address == "[::1]:80"
    assert expected.origin.startswith(f"{expected.scheme}://")


def test_each_step_records_where_its_requests_went_and_the_run_says_how_many(
    acme, key_store, provider_server, retry_delays
):
    # given: two steps, the second answered only at its second attempt
    run = _queued_run(acme, ["hello", "[sandbox:fail=1 status=429] again"])
    where = urlsplit(provider_server.url)
    origin = f"http://{where.hostname}:{where.port}"

    run = run_execute(run_id=str(run.pk), pause=retry_delays.append)

    # then: each step names the destination, with the provider's request id
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    steps = list(run.step_runs.order_by("position"))
    for step in steps:
        assert (step.destination_scheme, step.destination_host, step.destination_port) == (
            "http",
            where.hostname,
            where.port,
        )
        assert step.provider_request_id
    assert [step.attempts for step in steps] == [1, 2]
    assert len(provider_server.requests) == 3
    # key.consumed names the one address the key may go to; the end event counts the requests
    assert _event(run, "key.consumed").metadata["destination"] == origin
    assert _event(run, "run.succeeded").metadata["sent_to"] == [
        {"provider": "anthropic", "destination": origin, "requests": 3}
    ]
    # the run page: per step, and in the key's timeline
    html = acme.client(Role.AUDITOR).get(f"/t/acme/runs/{run.pk}/").content.decode()
    assert f'<code title="{origin}">{where.hostname}:{where.port}</code>' in html
    assert f"{origin}: 3 requests" in html
    assert f"<dd>{origin}</dd>" in html  # "May only go to", on the consumed entry
    # the API's steps carry it (the schema lists these fields: the contract checks them)
    body = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/").json()
    assert [
        (s["destination_scheme"], s["destination_host"], s["destination_port"])
        for s in body["steps"]
    ] == [("http", where.hostname, where.port)] * 2
    timeline = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/timeline/").json()
    assert f"{origin}: 3 requests" in str(timeline)


def test_a_step_refused_before_sending_records_no_destination(
    acme, key_store, provider_server, settings
):
    run = _queued_run(acme, ["hello"])
    settings.PROVIDER_BASE_URLS = {"openai": provider_server.url}  # anthropic: nowhere allowed

    run = run_execute(run_id=str(run.pk))

    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.EGRESS_REFUSED)
    step = run.step_runs.get()
    assert (step.destination_host, step.destination_port, step.destination) == ("", None, None)
    assert "destination" not in _event(run, "key.consumed").metadata
    assert "sent_to" not in _event(run, "run.failed").metadata
    assert provider_server.requests == []
    body = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/").json()
    assert body["steps"][0]["destination_port"] is None
    html = acme.client(Role.AUDITOR).get(f"/t/acme/runs/{run.pk}/").content.decode()
    assert "not sent" in html


def test_a_step_lost_in_flight_counts_as_one_request_that_may_have_been_sent(acme, settings):
    # The worker died mid-call: the step's destination was recorded when it started, its
    # answer never; the reaper's run.failed still says where the key may have gone.
    settings.RUN_INTERRUPTED_AFTER = 600
    lost = acme.run()
    now = timezone.now()
    Run.objects.filter(pk=lost.pk).update(
        status=RunStatus.RUNNING, heartbeat_at=now - timedelta(seconds=601)
    )
    api = Destination("https", "api.anthropic.com", 443)
    for position, (status, attempts, destination) in enumerate(
        [
            (StepStatus.SUCCEEDED, 2, api),
            (StepStatus.RUNNING, 0, api),
            (StepStatus.PENDING, 0, None),
        ]
    ):
        step = StepRun(
            tenant=lost.tenant,
            run=lost,
            position=position,
            name=f"s{position}",
            provider="anthropic",
            model="m",
            status=status,
            attempts=attempts,
        )
        step.destination = destination
        step.save()

    assert runs_reap(now=now)["interrupted"] == 1

    assert _event(lost, "run.failed").metadata == {
        "error_code": RunError.INTERRUPTED,
        "sent_to": [
            {"provider": "anthropic", "destination": "https://api.anthropic.com:443", "requests": 3}
        ],
    }
