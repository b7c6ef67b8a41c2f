"""Provider calls through a gateway that renames response headers.

The sandbox's gateway mode renames its headers the way LiteLLM's proxy 1.108.7 was seen to in
front of it (docs/operations.md, "Gateways"): the provider's `x-request-id` and `retry-after`
arrive only as `llm_provider-x-request-id` and `llm_provider-retry-after`, with the id also
copied to `request-id`. Steps run through the real executor, key store and an HTTP server.
"""

import httpx
import pytest

from runs.executor import run_execute
from runs.models import Run, RunStatus
from runs.providers import ModelCall, ProviderError, call_provider
from runs.providers.anthropic import ANTHROPIC
from runs.providers.client import response_request_id, retry_after_seconds
from runs.providers.openai import OPENAI
from swrly.providers import (
    GATEWAY_HEADER_PREFIXES,
    REQUEST_ID_HEADERS,
    request_id_header_names,
    retry_after_header_names,
)
from tenants.models import Role
from tests.runs.provider_server import make_secret

BUSY = "[sandbox:fail=1 status=429] [sandbox:retry-after=7] busy"


def test_request_id_names_put_the_providers_own_first_then_gateway_renamings():
    assert request_id_header_names(OPENAI.wire) == (
        "x-request-id",
        "llm_provider-x-request-id",
        "request-id",
        "llm_provider-request-id",
    )
    assert request_id_header_names(ANTHROPIC.wire) == (
        "request-id",
        "llm_provider-request-id",
        "x-request-id",
        "llm_provider-x-request-id",
    )
    assert retry_after_header_names() == (
        "retry-after-ms",
        "retry-after",
        "llm_provider-retry-after-ms",
        "llm_provider-retry-after",
    )


@pytest.mark.parametrize("protocol", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
@pytest.mark.parametrize("prefix", GATEWAY_HEADER_PREFIXES)
@pytest.mark.parametrize("name", REQUEST_ID_HEADERS)
def test_a_request_id_is_read_under_every_name_in_the_table(protocol, prefix, name):
    assert response_request_id(httpx.Headers({prefix + name: " req_42 "}), protocol) == "req_42"


def test_the_providers_own_request_id_header_wins():
    headers = httpx.Headers(
        {"request-id": "gateway", "llm_provider-x-request-id": "upstream", "x-request-id": "own"}
    )
    assert response_request_id(headers, OPENAI) == "own"
    del headers["x-request-id"]
    assert response_request_id(headers, OPENAI) == "upstream"
    assert response_request_id(httpx.Headers({"x-request-id": " "}), OPENAI) == ""


def test_retry_after_is_read_under_gateway_names_and_direct_names_win():
    assert retry_after_seconds(httpx.Headers({"llm_provider-retry-after": "4"})) == 4.0
    assert retry_after_seconds(httpx.Headers({"llm_provider-retry-after-ms": "250"})) == 0.25
    both = httpx.Headers({"retry-after": "2", "llm_provider-retry-after": "9"})
    assert retry_after_seconds(both) == 2.0
    unreadable = httpx.Headers({"retry-after": "soon", "llm_provider-retry-after": "3"})
    assert retry_after_seconds(unreadable) == 3.0
    assert retry_after_seconds(httpx.Headers({"llm_provider-retry-after-ms": "x"})) is None


@pytest.mark.parametrize("provider", ["openai", "sandbox", "anthropic"])
def test_a_call_through_the_gateway_records_the_request_id_and_honours_retry_after(
    provider, provider_server_factory, retry_delays
):
    server = provider_server_factory(gateway="litellm")

    result = call_provider(
        provider,
        secret=make_secret(),
        call=ModelCall(model="m", prompt=BUSY, max_tokens=50),
        pause=retry_delays.append,
    )

    assert (result.attempts, result.request_id) == (2, "req_sandbox_2")
    assert retry_delays == [7.0]
    assert len(server.requests) == 2


def test_a_failed_call_through_the_gateway_keeps_the_request_id(
    provider_server_factory, retry_delays
):
    provider_server_factory(gateway="litellm")
    with pytest.raises(ProviderError) as caught:
        call_provider(
            "openai",
            secret=make_secret(),
            call=ModelCall(model="m", prompt="[sandbox:status=400] nope"),
            pause=retry_delays.append,
        )
    assert (caught.value.http_status, caught.value.request_id) == (400, "req_sandbox_1")


def test_a_run_step_through_the_gateway_records_the_request_id(
    acme, key_store, provider_server_factory, retry_delays
):
    server = provider_server_factory(gateway="litellm")
    api = acme.api(Role.DEVELOPER)
    steps = [{"name": "s0", "provider": "openai", "model": "m", "prompt": BUSY}]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    created = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {"openai": "sk-proj-gateway-0123456"}},
        "application/json",
    )
    assert created.status_code == 202, created.content

    run = run_execute(run_id=created.json()["id"], pause=retry_delays.append)

    assert run.status == RunStatus.SUCCEEDED, run.error_message
    step = Run.objects.get(pk=run.pk).step_runs.get()
    assert (step.provider_request_id, step.attempts) == ("req_sandbox_2", 2)
    assert step.input_tokens is not None
    assert retry_delays == [7.0]
    assert len(server.requests) == 2
