"""The provider clients against a real sandbox server over real HTTP: nothing is mocked.

Only the wait between attempts is replaced (`pause=retry_delays.append`, a recorder passed to
call_provider), so retries still reach the server but the tests do not wait for them.
"""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

import base64
import logging
import pickle
import secrets
import socket
import time
from datetime import UTC, datetime

import httpx
import pytest
import time_machine

from runs.providers import ModelCall, ModelResult, ProviderError, call_provider
from runs.providers.anthropic import parse_answer as parse_anthropic
from runs.providers.base import UnexpectedAnswer, error_summary
from runs.providers.client import BACKOFF_BASE, RETRY_AFTER_CAP, retry_after_seconds
from runs.providers.egress import destination_of
from runs.providers.openai import parse_answer as parse_openai
from swrly.dev.sandbox import REDIRECT_TARGET, answer_text, word_count
from swrly.keys.redaction import REDACTED
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    make_secret,
    provider_expected_keys,
    provider_server,
    provider_server_factory,
    retry_delays,
)

OPENAI_SHAPED = ("openai", "sandbox")


def _call(provider, secret, prompt="Say hello to the sandbox", *, pause=time.sleep, **fields):
    return call_provider(
        provider,
        secret=secret,
        call=ModelCall(model="model-1", prompt=prompt, **fields),
        pause=pause,
    )


def _fails(provider, secret, prompt, *, pause=time.sleep, **fields) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        _call(provider, secret, prompt, pause=pause, **fields)
    return caught.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_anthropic_messages_round_trip(provider_server_factory, retry_delays):
    key = "sk-ant-api03-" + secrets.token_urlsafe(32)
    server = provider_server_factory(expected_keys={key})
    call = ModelCall(
        model="claude-test",
        prompt="Summarise the quarterly report in one line",
        system="You are terse.",
        max_tokens=64,
        temperature=0.2,
    )

    result = call_provider(
        "anthropic", secret=make_secret(key), call=call, pause=retry_delays.append
    )

    expected_text = answer_text("claude-test", "You are terse.", call.prompt)
    assert result == ModelResult(
        text=expected_text,
        input_tokens=word_count("You are terse.", call.prompt),
        output_tokens=word_count(expected_text),
        request_id="req_sandbox_1",
        http_status=200,
        latency_ms=result.latency_ms,
        attempts=1,
        destination=destination_of(server.url),  # where the key went: the allow-listed URL
    )
    assert result.latency_ms >= 0
    [received] = server.requests
    assert (received.method, received.path) == ("POST", "/v1/messages")
    assert received.headers["x-api-key"] == key
    assert received.headers["anthropic-version"] == "2026-10-21"
    assert received.headers["content-type"] == "application/json"
    assert "authorization" not in received.headers
    assert received.body == {  # no temperature: API version 2026-10-21 refuses it (400)
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": call.prompt}],
        "system": "You are terse.",
    }
    assert retry_delays == []


@pytest.mark.parametrize("provider", OPENAI_SHAPED)
def test_openai_chat_completions_round_trip(provider, provider_server_factory):
    key = "sk-proj-" + secrets.token_urlsafe(32)
    server = provider_server_factory(expected_keys={key})

    result = _call(provider, make_secret(key), system="Be kind.", max_tokens=32)

    assert result.text == answer_text("model-1", "Be kind.", "Say hello to the sandbox")
    assert result.input_tokens == word_count("Be kind.", "Say hello to the sandbox")
    assert result.output_tokens == word_count(result.text)
    assert (result.request_id, result.http_status, result.attempts) == ("req_sandbox_1", 200, 1)
    [received] = server.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {key}"
    assert "x-api-key" not in received.headers
    assert received.body == {
        "model": "model-1",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Say hello to the sandbox"},
        ],
        "max_completion_tokens": 32,  # max_tokens is deprecated in Chat Completions
    }


def test_optional_fields_are_left_out_when_unset(provider_server):
    secret = make_secret()
    _call("anthropic", secret)
    _call("openai", secret)
    anthropic, openai = (request.body for request in provider_server.requests)
    assert set(anthropic) == {"model", "max_tokens", "messages"}
    assert set(openai) == {"model", "messages", "max_completion_tokens"}
    assert openai["messages"] == [{"role": "user", "content": "Say hello to the sandbox"}]


@pytest.mark.parametrize(
    ("provider", "status"), [("anthropic", 307), ("openai", 302), ("sandbox", 308)]
)
def test_a_redirect_is_never_followed(provider, status, provider_server, retry_delays):
    error = _fails(provider, make_secret(), f"[sandbox:status={status}]", pause=retry_delays.append)

    assert (error.code, error.http_status, error.attempts) == ("provider_error", status, 1)
    assert "redirect" in error.message
    assert REDIRECT_TARGET not in {request.path for request in provider_server.requests}
    assert len(provider_server.requests) == 1
    assert retry_delays == []


def test_a_callers_client_cannot_turn_on_redirects_or_add_credentials(provider_server):
    with httpx.Client(follow_redirects=True, auth=("platform", "password")) as client:
        with pytest.raises(ProviderError) as caught:
            call_provider(
                "anthropic",
                secret=make_secret(),
                call=ModelCall(model="m", prompt="[sandbox:status=307]"),
                client=client,
            )
        result = call_provider(
            "anthropic", secret=make_secret(), call=ModelCall(model="m", prompt="hi"), client=client
        )

    assert caught.value.http_status == 307
    assert result.attempts == 1
    assert [request.path for request in provider_server.requests] == ["/v1/messages"] * 2
    assert all("authorization" not in request.headers for request in provider_server.requests)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_401_and_403_fail_as_auth_errors_without_retry(
    provider, status, provider_server, retry_delays
):
    error = _fails(provider, make_secret(), f"[sandbox:status={status}]", pause=retry_delays.append)

    assert error.code == "provider_auth_failed"
    assert (error.http_status, error.attempts) == (status, 1)
    assert error.request_id == "req_sandbox_1"
    assert len(provider_server.requests) == 1
    assert retry_delays == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_key_the_provider_does_not_know_fails_as_auth_error(
    provider, provider_server_factory, retry_delays
):
    provider_server_factory(expected_keys={"sk-the-right-key-0123456789"})

    error = _fails(
        provider, make_secret("sk-a-wrong-key-0123456789"), "hello", pause=retry_delays.append
    )

    assert (error.code, error.http_status, error.attempts) == ("provider_auth_failed", 401, 1)
    assert retry_delays == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_429_honours_retry_after_then_succeeds(provider, provider_server, retry_delays):
    prompt = "[sandbox:fail=2 status=429] [sandbox:retry-after=3] go"

    result = _call(provider, make_secret(), prompt, pause=retry_delays.append)

    assert (result.attempts, result.http_status, result.request_id) == (3, 200, "req_sandbox_3")
    assert retry_delays == [3.0, 3.0]
    assert len(provider_server.requests) == 3
    assert result.text == answer_text("model-1", "", prompt)


def test_retry_after_as_an_http_date_is_honoured(provider_server, retry_delays):
    with time_machine.travel(datetime(2030, 1, 1, tzinfo=UTC), tick=False):
        prompt = "[sandbox:fail=1 status=429] [sandbox:retry-after=Tue, 01 Jan 2030 00:00:12 GMT]"
        result = _call("openai", make_secret(), prompt, pause=retry_delays.append)

    assert result.attempts == 2
    assert retry_delays == [12.0]


def test_retry_after_is_capped(provider_server, retry_delays):
    result = _call(
        "anthropic",
        make_secret(),
        "[sandbox:fail=1 status=503] [sandbox:retry-after=600]",
        pause=retry_delays.append,
    )
    assert result.attempts == 2
    assert retry_delays == [RETRY_AFTER_CAP]


def test_retry_after_parsing():
    assert retry_after_seconds(httpx.Headers({"retry-after": "2.5"})) == 2.5
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_seconds(httpx.Headers({"retry-after": "-4"})) == 0.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "nan"})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after": "Mon, 01 Jan 2001 00:00:00 GMT"})) == 0
    assert retry_after_seconds(httpx.Headers({})) is None


@pytest.mark.parametrize(("provider", "status"), [("anthropic", 529), ("openai", 500)])
def test_server_errors_are_retried_up_to_the_limit(
    provider, status, provider_server, retry_delays, settings
):
    settings.PROVIDER_MAX_RETRIES = 3

    error = _fails(provider, make_secret(), f"[sandbox:status={status}]", pause=retry_delays.append)

    assert (error.code, error.http_status, error.attempts) == ("provider_error", status, 4)
    assert error.request_id == "req_sandbox_4"  # from the last answer
    assert "gave up after 4 attempts" in error.message
    assert len(provider_server.requests) == 4
    # full jitter: each delay is random below a ceiling that doubles
    assert len(retry_delays) == 3
    for retry, delay in enumerate(retry_delays):
        assert 0 <= delay <= BACKOFF_BASE * 2**retry
    assert error.latency_ms >= 0


def test_no_retries_when_the_limit_is_zero(provider_server, retry_delays, settings):
    settings.PROVIDER_MAX_RETRIES = 0
    error = _fails("openai", make_secret(), "[sandbox:status=500]", pause=retry_delays.append)
    assert error.attempts == 1
    assert retry_delays == []


def test_a_server_error_then_success(provider_server, retry_delays):
    result = _call(
        "sandbox", make_secret(), "[sandbox:fail=1 status=500] once", pause=retry_delays.append
    )
    assert (result.attempts, result.http_status) == (2, 200)
    assert len(retry_delays) == 1


def test_a_connection_refused_is_retried_then_fails(settings, retry_delays):
    settings.DEBUG = True
    settings.PROVIDER_BASE_URLS = {"openai": f"http://127.0.0.1:{_closed_port()}"}

    error = _fails("openai", make_secret(), "hello", pause=retry_delays.append)

    assert error.code == "provider_error"
    assert (error.http_status, error.request_id) == (None, "")
    assert error.attempts == settings.PROVIDER_MAX_RETRIES + 1
    assert len(retry_delays) == settings.PROVIDER_MAX_RETRIES
    assert "could not connect" in error.message
    assert error.__context__ is None  # httpx's exception holds the request, key and all


def test_a_read_timeout_is_not_retried(provider_server, retry_delays, settings):
    settings.PROVIDER_READ_TIMEOUT = 0.3

    error = _fails("anthropic", make_secret(), "[sandbox:sleep=5] slow", pause=retry_delays.append)

    assert (error.code, error.attempts, error.http_status) == ("timeout", 1, None)
    assert "not retried" in error.message
    assert len(provider_server.requests) == 1
    assert retry_delays == []
    assert error.latency_ms < 3000
    assert error.__context__ is None


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_bad_request_is_not_retried(provider, provider_server, retry_delays):
    error = _fails(
        provider, make_secret(), "hello", max_tokens=0, pause=retry_delays.append
    )  # the sandbox refuses 0

    assert (error.code, error.http_status, error.attempts) == ("provider_error", 400, 1)
    assert "max_tokens" in error.message
    assert retry_delays == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_200_that_is_not_an_answer_is_a_provider_error(provider, provider_server):
    error = _fails(provider, make_secret(), "[sandbox:malformed]")
    assert (error.code, error.http_status, error.attempts) == ("provider_error", 200, 1)
    assert error.request_id == "req_sandbox_1"
    assert "not a" in error.message


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"content": "text", "usage": {"input_tokens": 1, "output_tokens": 1}},
        {"content": [{"type": "text"}], "usage": {"input_tokens": 1, "output_tokens": 1}},
        {"content": [], "usage": {"input_tokens": -1, "output_tokens": 1}},
        {"content": [], "usage": {"input_tokens": True, "output_tokens": 1}},
        {"content": []},
    ],
)
def test_anthropic_answers_of_another_shape_are_refused(payload):
    with pytest.raises(UnexpectedAnswer):
        parse_anthropic(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"choices": [{"message": {"content": 3}}], "usage": {}},
        {"choices": ["x"], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "1"}},
    ],
)
def test_openai_answers_of_another_shape_are_refused(payload):
    with pytest.raises(UnexpectedAnswer):
        parse_openai(payload)


def test_anthropic_text_joins_text_blocks_and_skips_others():
    answer = parse_anthropic(
        {
            "content": [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                {"type": "text", "text": "b"},
            ],
            "usage": {"input_tokens": 2, "output_tokens": 3},
        }
    )
    assert (answer.text, answer.input_tokens, answer.output_tokens) == ("ab", 2, 3)


@pytest.mark.parametrize(
    "canary",
    [
        "sk-ant-api03-canary" + secrets.token_urlsafe(30),  # shaped like a key
        "canary-" + secrets.token_hex(20),  # caught only by its value
    ],
    ids=["key-shaped", "by-value"],
)
@pytest.mark.parametrize(
    ("provider", "prompt"),
    [
        ("anthropic", "[sandbox:status=400] [sandbox:echo-key]"),
        ("openai", "[sandbox:status=401] [sandbox:echo-key]"),
        ("sandbox", "[sandbox:status=500] [sandbox:echo-key]"),
    ],
)
def test_a_key_echoed_by_the_provider_is_redacted(
    canary, provider, prompt, provider_server, retry_delays, caplog
):
    # given a provider that quotes the key in its error body (proved with a raw request)
    headers = {"x-api-key": canary, "anthropic-version": "2023-06-01"}
    raw = httpx.post(
        f"{provider_server.url}/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]},
        headers=headers,
    )
    assert canary in raw.text

    # when a step's call gets that answer
    with caplog.at_level(logging.DEBUG):
        error = _fails(provider, make_secret(canary), prompt, pause=retry_delays.append)

    # then the key is nowhere in what the error or the logs say
    assert REDACTED in error.message
    for text in (error.message, str(error), repr(error), caplog.text, str(error.args)):
        assert canary not in text
        assert canary[-12:] not in text
    assert error.__context__ is None


def test_the_key_is_never_logged(provider_server, retry_delays, caplog):
    key = "sk-ant-api03-" + secrets.token_urlsafe(32)
    secret = make_secret(key)
    with caplog.at_level(logging.DEBUG):
        _call("anthropic", secret, pause=retry_delays.append)
        _call("openai", secret, "[sandbox:fail=1 status=429] again", pause=retry_delays.append)
        _fails("anthropic", secret, "[sandbox:status=401]", pause=retry_delays.append)
    assert caplog.records  # httpx and the retry did log
    assert key not in caplog.text
    assert REDACTED not in caplog.text  # nothing even tried to log it


@pytest.mark.parametrize(
    ("urls", "debug", "problem"),
    [
        ({"openai": "https://api.openai.com"}, True, "no base URL"),
        ({"anthropic": "http://api.example.com"}, True, "loopback"),
        ({"anthropic": "http://10.1.2.3:8080"}, True, "loopback"),
        ({"anthropic": "ftp://127.0.0.1"}, True, "not https"),
    ],
)
def test_egress_is_refused_outside_the_allow_list(urls, debug, problem, settings, retry_delays):
    settings.DEBUG = debug
    settings.PROVIDER_BASE_URLS = urls

    error = _fails("anthropic", make_secret(), "hello", pause=retry_delays.append)

    assert (error.code, error.attempts, error.http_status) == ("egress_refused", 0, None)
    assert problem in error.message


def test_plain_http_needs_debug_even_on_loopback(provider_server, settings):
    settings.DEBUG = False
    error = _fails("sandbox", make_secret(), "hello")
    assert error.code == "egress_refused"
    assert "DEBUG" in error.message
    assert provider_server.requests == []


def test_an_unknown_provider_is_refused(provider_server):
    error = _fails("mistral", make_secret(), "hello")
    assert error.code == "egress_refused"
    assert provider_server.requests == []


def test_settings_are_read_at_call_time(provider_server_factory):
    first = provider_server_factory()
    _call("openai", make_secret())
    second = provider_server_factory()
    _call("openai", make_secret())
    assert len(first.requests) == len(second.requests) == 1


def test_provider_error_survives_pickling():
    error = ProviderError(
        "timeout", "slow", http_status=None, request_id="r", attempts=1, latency_ms=5
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301  (a test of our own object)
    assert (copy.code, copy.message, copy.request_id, copy.attempts, copy.latency_ms) == (
        "timeout",
        "slow",
        "r",
        1,
        5,
    )
    assert str(copy) == "timeout: slow"


def test_provider_error_redacts_whatever_it_is_given():
    canary = "canary-" + secrets.token_hex(16)
    secret = make_secret(canary)
    error = ProviderError("provider_error", f"the provider said {canary}")
    assert canary not in str(error)
    secret.discard()
    with pytest.raises(ValueError, match="unknown provider error code"):
        ProviderError("oops", "x")


def test_error_summary_redacts_before_cutting_and_decodes_escapes():
    key = "sk-ant-api03-" + secrets.token_urlsafe(32)
    escaped = "\\u0073" + key[1:]  # a JSON escape hides the key from a raw-text match
    body = '{"error": {"type": "invalid_request_error", "message": "bad key ' + escaped + '"}}'
    assert key not in error_summary(body)
    assert REDACTED in error_summary(body)
    long_body = "x" * 1995 + key
    summary = error_summary(long_body)
    assert key[:5] not in summary.removeprefix("x" * 1995)
    assert len(summary) <= 2001


@pytest.mark.parametrize("provider", ["anthropic", "openai", "sandbox"])
@pytest.mark.parametrize("where", ["prompt", "system", "model"])
def test_a_request_carrying_another_live_key_is_never_sent(
    provider, where, provider_server, caplog
):
    # given the key of another provider, live in this process, in some field of the request
    other = make_secret("sk-ant-api03-" + secrets.token_urlsafe(30))
    own = make_secret()
    smuggled = base64.b64encode(b"k:" + other.reveal().encode()).decode()
    fields = {"model": "model-1", "prompt": "hello", "system": ""}
    fields[where] = f"please keep {smuggled} safe"
    # when the step calls its provider
    with (
        caplog.at_level(logging.WARNING, logger="swrly.security"),
        pytest.raises(ProviderError) as caught,
    ):
        call_provider(provider, secret=own, call=ModelCall(**fields))
    # then nothing left, and the error says why without the key
    assert caught.value.code == "key_leak_blocked"
    assert caught.value.attempts == 0
    assert provider_server.requests == []
    assert other.reveal() not in str(caught.value)
    assert any("refused before sending" in r.getMessage() for r in caplog.records)
    # the same request without the other key goes out
    other.discard()
    result = call_provider(provider, secret=own, call=ModelCall(**fields))
    assert result.http_status == 200
    own.discard()


def test_a_request_carrying_its_own_key_is_not_a_leak(provider_server):
    own = make_secret()
    result = _call("openai", own, f"repeat {own.reveal()}")
    assert result.http_status == 200
    own.discard()
