"""The official `openai` and `anthropic` Python SDKs, as they are today, against the sandbox.

Each SDK talks to a real sandbox server on loopback, with its own default headers, auth style,
API version, retry policy and stream parser: what the sandbox accepts and answers is what the
real providers' current clients expect. Error answers carry `retry-after: 0.001` so that the
SDKs' own retries go to the server for real without waiting their back-off.
"""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

import anthropic
import openai
import pytest

from swrly.dev.sandbox import ECHO_ENCODINGS, MODELS, answer_text, word_count
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

ANTHROPIC_KEY = "sk-ant-api03-sdk-test-0123456789abcdef"
OPENAI_KEY = "sk-proj-sdk-test-0123456789abcdef"
FAST_RETRY = "[sandbox:retry-after=0.001]"  # the SDKs honour a positive retry-after as given


def _anthropic(server, key=ANTHROPIC_KEY, **options):
    return anthropic.Anthropic(api_key=key, base_url=server.url, **options)


def _openai(server, key=OPENAI_KEY, **options):
    return openai.OpenAI(api_key=key, base_url=server.url + "/v1", **options)


def _ask_anthropic(client, prompt, **fields):
    messages = [{"role": "user", "content": prompt}]
    return client.messages.create(model="claude-test", max_tokens=64, messages=messages, **fields)


def _ask_openai(client, prompt, **fields):
    messages = [{"role": "user", "content": prompt}]
    return client.chat.completions.create(model="gpt-test", messages=messages, **fields)


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider_expected_keys", [{ANTHROPIC_KEY}])
def test_anthropic_sdk_message_with_ids_usage_and_request_id(provider_server):
    client = _anthropic(provider_server)
    prompt = "Summarise the quarterly report"

    raw = client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=64,
        system="Be terse.",
        messages=[{"role": "user", "content": prompt}],
    )
    message = raw.parse()

    assert message.id == "msg_sandbox_1"
    assert raw.request_id == "req_sandbox_1"
    assert message.content[0].text == answer_text("claude-test", "Be terse.", prompt)
    assert message.usage.input_tokens == word_count("Be terse.", prompt)
    assert message.usage.output_tokens == word_count(message.content[0].text)
    assert message.stop_reason == "end_turn"
    [received] = provider_server.requests
    # what the current SDK sends, and the sandbox accepts: a Bearer key and version 2026-10-21
    assert received.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert received.headers["anthropic-version"] == "2026-10-21"
    assert "temperature" not in received.body


@pytest.mark.parametrize("provider_expected_keys", [{OPENAI_KEY}])
def test_openai_sdk_completion_with_ids_usage_and_request_id(provider_server):
    client = _openai(provider_server)

    completion = _ask_openai(client, "Say hello", max_completion_tokens=32)

    assert completion.id == "chatcmpl-sandbox-1"
    assert completion._request_id == "req_sandbox_1"
    assert completion.choices[0].message.content == answer_text("gpt-test", "", "Say hello")
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.total_tokens == 2 + completion.usage.completion_tokens
    [received] = provider_server.requests
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openai_sdk_developer_role_is_the_system_prompt(provider_server):
    completion = _openai(provider_server).chat.completions.create(
        model="o-test",
        messages=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
        ],
    )
    assert completion.choices[0].message.content == answer_text(
        "o-test", "Answer in French.", "Hello"
    )


def test_both_sdks_list_models(provider_server):
    assert [model.id for model in _openai(provider_server).models.list()] == list(MODELS)
    listed = _anthropic(provider_server).models.list()
    assert [model.id for model in listed] == list(MODELS)
    assert {model.type for model in listed} == {"model"}
    assert _openai(provider_server).models.retrieve(MODELS[1]).id == MODELS[1]


def test_anthropic_sdk_counts_tokens(provider_server):
    counted = _anthropic(provider_server).messages.count_tokens(
        model="claude-test",
        system="Be terse.",
        messages=[{"role": "user", "content": "one two three"}],
    )
    assert counted.input_tokens == word_count("Be terse.", "one two three")
    assert provider_server.requests[-1].path == "/v1/messages/count_tokens"


# --- streaming -----------------------------------------------------------------------------


def test_anthropic_sdk_streams_text_deltas_and_final_usage(provider_server):
    prompt = "Stream me a short answer please"
    with _anthropic(provider_server).messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()

    expected = answer_text("claude-test", "", prompt)
    assert len(deltas) == len(expected.split()) > 1  # one delta a word, not one blob
    assert "".join(deltas) == expected
    assert final.content[0].text == expected
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        word_count(prompt),
        word_count(expected),
    )
    assert final.stop_reason == "end_turn"
    assert provider_server.requests[-1].body["stream"] is True


def test_anthropic_sdk_raw_stream_events(provider_server):
    events = list(_ask_anthropic(_anthropic(provider_server), "a b c", stream=True))
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(answer_text("claude-test", "", "a b c").split()),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops `ping`


def test_openai_sdk_streams_text_deltas_and_final_usage(provider_server):
    prompt = "Stream me a short answer please"
    chunks = list(
        _ask_openai(
            _openai(provider_server),
            prompt,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    expected = answer_text("gpt-test", "", prompt)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) == len(expected.split()) > 1
    assert "".join(deltas) == expected
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == word_count(prompt)
    assert chunks[-1].usage.completion_tokens == word_count(expected)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]


def test_openai_sdk_stream_without_usage_option_has_no_usage(provider_server):
    chunks = list(_ask_openai(_openai(provider_server), "hi", stream=True))
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)


# --- errors --------------------------------------------------------------------------------

# status → (anthropic exception, openai exception, whether both SDKs retry it)
STATUS_ERRORS = [
    (400, anthropic.BadRequestError, openai.BadRequestError, False),
    (401, anthropic.AuthenticationError, openai.AuthenticationError, False),
    (402, anthropic.PaymentRequiredError, openai.APIStatusError, False),
    (403, anthropic.PermissionDeniedError, openai.PermissionDeniedError, False),
    (404, anthropic.NotFoundError, openai.NotFoundError, False),
    (408, anthropic.RequestTimeoutError, openai.APIStatusError, True),
    (409, anthropic.ConflictError, openai.ConflictError, True),
    (413, anthropic.ContentTooLargeError, openai.APIStatusError, False),
    (422, anthropic.UnprocessableEntityError, openai.UnprocessableEntityError, False),
    (429, anthropic.RateLimitError, openai.RateLimitError, True),
    (500, anthropic.InternalServerError, openai.InternalServerError, True),
    (503, anthropic.ServiceUnavailableError, openai.InternalServerError, True),
    (504, anthropic.GatewayTimeoutError, openai.InternalServerError, True),
    (529, anthropic.OverloadedError, openai.InternalServerError, True),
]


@pytest.mark.parametrize(("status", "anthropic_error", "openai_error", "retried"), STATUS_ERRORS)
def test_status_directive_maps_to_each_sdks_exception_and_retry_policy(
    provider_server, status, anthropic_error, openai_error, retried
):
    prompt = f"[sandbox:status={status}] {FAST_RETRY}"
    attempts = 3 if retried else 1  # max_retries=2

    with pytest.raises(anthropic_error) as from_anthropic:
        _ask_anthropic(_anthropic(provider_server, max_retries=2), prompt)
    assert type(from_anthropic.value) is anthropic_error
    assert from_anthropic.value.status_code == status
    assert from_anthropic.value.request_id == f"req_sandbox_{attempts}"
    assert from_anthropic.value.body["type"] == "error"  # Anthropic's own error shape
    assert from_anthropic.value.body["request_id"] == from_anthropic.value.request_id
    assert from_anthropic.value.body["error"]["message"].startswith(f"sandbox: HTTP {status}")
    assert len(provider_server.requests) == attempts

    provider_server.clear_requests()
    with pytest.raises(openai_error) as from_openai:
        _ask_openai(_openai(provider_server, max_retries=2), prompt)
    assert type(from_openai.value) is openai_error
    assert from_openai.value.status_code == status
    assert from_openai.value.request_id == f"req_sandbox_{2 * attempts}"
    assert from_openai.value.body["message"].startswith(f"sandbox: HTTP {status}")  # `error`
    assert len(provider_server.requests) == attempts


@pytest.mark.parametrize("status", [429, 500, 529])
def test_fail_directive_is_retried_by_both_sdks_until_it_succeeds(provider_server, status):
    prompt = f"[sandbox:fail=2 status={status}] {FAST_RETRY} hello"

    raw = _anthropic(provider_server, max_retries=2).messages.with_raw_response.create(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )
    assert (raw.retries_taken, raw.request_id) == (2, "req_sandbox_3")
    assert raw.parse().content[0].text == answer_text("claude-test", "", prompt)

    provider_server.clear_requests()
    raw = _openai(provider_server, max_retries=2).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": prompt}]
    )
    assert (raw.retries_taken, raw.request_id) == (2, "req_sandbox_6")
    assert raw.parse().choices[0].message.content == answer_text("gpt-test", "", prompt)
    assert len(provider_server.requests) == 3


@pytest.mark.parametrize("provider_expected_keys", [{ANTHROPIC_KEY, OPENAI_KEY}])
def test_a_wrong_key_is_an_authentication_error_in_both_sdks(provider_server):
    with pytest.raises(anthropic.AuthenticationError) as from_anthropic:
        _ask_anthropic(_anthropic(provider_server, key="sk-ant-wrong-key-0000000000"), "hi")
    assert from_anthropic.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as from_openai:
        _ask_openai(_openai(provider_server, key="sk-wrong-key-0000000000"), "hi")
    assert from_openai.value.body["code"] == "invalid_api_key"
    assert len(provider_server.requests) == 2  # neither SDK retries a 401


def test_echo_key_errors_reach_the_sdk_with_the_key_quoted(provider_server):
    with pytest.raises(anthropic.BadRequestError) as caught:
        _ask_anthropic(_anthropic(provider_server), "[sandbox:status=400] [sandbox:echo-key]")
    assert ANTHROPIC_KEY in caught.value.body["error"]["message"]


def test_an_unknown_directive_is_a_bad_request_in_both_sdks(provider_server):
    with pytest.raises(anthropic.BadRequestError, match="unknown sandbox directive"):
        _ask_anthropic(_anthropic(provider_server), "[sandbox:explode]")
    with pytest.raises(openai.BadRequestError, match="unknown sandbox directive"):
        _ask_openai(_openai(provider_server), "[sandbox:explode]")


def test_sleep_directive_times_out_each_sdk(provider_server):
    with pytest.raises(anthropic.APITimeoutError):
        _ask_anthropic(_anthropic(provider_server, max_retries=0, timeout=0.2), "[sandbox:sleep=5]")
    with pytest.raises(openai.APITimeoutError):
        _ask_openai(_openai(provider_server, max_retries=0, timeout=0.2), "[sandbox:sleep=5]")


def test_malformed_answers_reach_the_sdks_as_raw_text(provider_server):
    # A 200 that is not JSON: the SDKs hand back the body as text rather than a parsed model.
    anthropic_answer = _ask_anthropic(_anthropic(provider_server), "[sandbox:malformed]")
    openai_answer = _ask_openai(_openai(provider_server), "[sandbox:malformed]")
    assert anthropic_answer == openai_answer == "<html>not a model answer</html>"


def test_redirect_directive_sends_the_sdks_to_a_404(provider_server):
    # The SDKs follow redirects (Swrly's client does not); the target does not exist.
    with pytest.raises(anthropic.NotFoundError):
        _ask_anthropic(_anthropic(provider_server), "[sandbox:status=307]")
    with pytest.raises(openai.NotFoundError):
        _ask_openai(_openai(provider_server), "[sandbox:status=308]")


def test_anthropic_2026_10_21_refuses_sampling_parameters_sent_as_extra_body(provider_server):
    # The 2.x SDK has no `temperature` argument; extra_body still sends it, and the API (and
    # the sandbox) refuse it at version 2026-10-21.
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        _ask_anthropic(_anthropic(provider_server), "hi", extra_body={"temperature": 0.2})


@pytest.mark.parametrize("encoding", ["raw", "base64"])
def test_answer_key_directive_reaches_both_sdks_in_the_answer_text(provider_server, encoding):
    prompt = f"[sandbox:answer-key={encoding}] hi"
    message = _ask_anthropic(_anthropic(provider_server), prompt)
    completion = _ask_openai(_openai(provider_server), prompt)
    shown = ECHO_ENCODINGS[encoding]
    assert message.content[0].text.endswith(f"key presented: {shown(ANTHROPIC_KEY)}")
    assert completion.choices[0].message.content.endswith(f"key presented: {shown(OPENAI_KEY)}")


def test_stream_delay_directive_still_streams_every_delta(provider_server):
    prompt = "[sandbox:stream-delay=0.001] a b c"
    with _anthropic(provider_server).messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        assert "".join(stream.text_stream) == answer_text("claude-test", "", prompt)


def test_stream_error_directive_raises_in_both_sdks_after_partial_output(provider_server):
    prompt = "[sandbox:stream-error] one two three"
    received = []
    stream = _anthropic(provider_server).messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )
    with pytest.raises(anthropic.APIStatusError) as from_anthropic, stream as events:
        received.extend(events.text_stream)
    assert received == [answer_text("claude-test", "", prompt).split()[0]]
    assert from_anthropic.value.body["error"]["type"] == "overloaded_error"

    received.clear()
    with pytest.raises(openai.APIError, match="broke off") as from_openai:  # noqa: PT012
        for chunk in _ask_openai(_openai(provider_server), prompt, stream=True):
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(received) == answer_text("gpt-test", "", prompt).split()[0]
    assert from_openai.value.body["type"] == "server_error"
