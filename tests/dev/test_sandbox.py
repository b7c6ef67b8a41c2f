"""The sandbox provider, spoken to over real HTTP, and `python -m swrly.dev.sandbox`."""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from runs.providers import ModelCall, call_provider
from swrly.dev.sandbox import (
    ECHO_ENCODINGS,
    MAX_SLEEP,
    MODELS,
    DirectiveError,
    SandboxServer,
    answer_text,
    parse_directives,
)
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    make_secret,
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-sandbox-test-0123456789abcdef"


def _openai(server, prompt="hello", key=KEY, **fields):
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], **fields}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)


def _anthropic(server, prompt="hello", key=KEY, version="2023-06-01", **fields):
    headers = {"x-api-key": key} if key is not None else {}
    if version:
        headers["anthropic-version"] = version
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]}
    return httpx.post(f"{server.url}/v1/messages", json={**body, **fields}, headers=headers)


def _sandbox_text(prompt, model="sandbox-1", system=""):
    call = ModelCall(model=model, prompt=prompt, system=system)
    return call_provider("sandbox", secret=make_secret(), call=call).text


def test_answers_are_deterministic_and_depend_on_the_whole_input(provider_server):
    first = _sandbox_text("Plan a trip to Lisbon in three steps")
    assert _sandbox_text("Plan a trip to Lisbon in three steps") == first
    assert first == answer_text("sandbox-1", "", "Plan a trip to Lisbon in three steps")
    assert first.startswith("sandbox:")
    assert first.endswith(" Plan a trip to Lisbon in")  # the first six words, echoed
    others = {
        _sandbox_text("Plan a trip to Porto in three steps"),
        _sandbox_text("Plan a trip to Lisbon in three steps", model="sandbox-2"),
        _sandbox_text("Plan a trip to Lisbon in three steps", system="Be brief."),
    }
    assert first not in others
    assert len(others) == 3


def test_both_apis_give_the_same_answer_and_word_count_usage(provider_server):
    prompt = "one two three four five six seven"
    openai = _openai(
        provider_server,
        prompt,
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": prompt},
        ],
    ).json()
    anthropic = _anthropic(provider_server, prompt, system="be nice").json()

    text = answer_text("m", "be nice", prompt)
    assert openai["choices"][0]["message"]["content"] == text
    assert anthropic["content"] == [{"type": "text", "text": text}]
    assert openai["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    assert anthropic["usage"] == {"input_tokens": 9, "output_tokens": 7}
    assert (openai["choices"][0]["finish_reason"], anthropic["stop_reason"]) == ("stop", "end_turn")


def test_max_tokens_truncates_the_answer(provider_server):
    openai = _openai(provider_server, "a b c d e f g", max_tokens=2).json()
    anthropic = _anthropic(provider_server, "a b c d e f g", max_tokens=2).json()
    assert openai["usage"]["completion_tokens"] == anthropic["usage"]["output_tokens"] == 2
    assert (openai["choices"][0]["finish_reason"], anthropic["stop_reason"]) == (
        "length",
        "max_tokens",
    )


def test_every_answer_carries_its_own_request_id(provider_server):
    assert _openai(provider_server).headers["x-request-id"] == "req_sandbox_1"
    assert _anthropic(provider_server).headers["request-id"] == "req_sandbox_2"
    error = _anthropic(provider_server, key=None)
    assert error.headers["request-id"] == "req_sandbox_3"


def test_a_missing_key_is_refused_in_each_apis_own_error_shape(provider_server):
    openai = _openai(provider_server, key=None)
    anthropic = _anthropic(provider_server, key=None)
    not_bearer = httpx.post(
        f"{provider_server.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Basic {KEY}"},
    )

    assert openai.status_code == anthropic.status_code == not_bearer.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"
    assert anthropic.json()["request_id"] == anthropic.headers["request-id"]
    assert "request_id" not in openai.json()


@pytest.mark.parametrize("provider_expected_keys", [{KEY}])
def test_only_expected_keys_are_accepted(provider_server):
    assert _openai(provider_server).status_code == 200
    assert _anthropic(provider_server).status_code == 200
    assert _openai(provider_server, key=KEY + "x").status_code == 401
    assert _anthropic(provider_server, key="sk-someone-elses-key-123456").status_code == 401
    # Anthropic takes the key as x-api-key or as a Bearer token (the 2.x SDKs send the latter);
    # when both are sent, x-api-key is the one checked
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    bearer = {"authorization": f"Bearer {KEY}", "anthropic-version": "2026-10-21"}
    url = f"{provider_server.url}/v1/messages"
    assert httpx.post(url, json=body, headers=bearer).status_code == 200
    both = {**bearer, "x-api-key": "sk-someone-elses-key-123456"}
    assert httpx.post(url, json=body, headers=both).status_code == 401
    # OpenAI takes only a Bearer token
    openai_x_api_key = httpx.post(
        f"{provider_server.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": KEY},
    )
    assert openai_x_api_key.status_code == 401


def test_the_server_logs_what_it_received(provider_server):
    _anthropic(provider_server, "logged")
    [received] = provider_server.requests
    assert received.headers["x-api-key"] == KEY
    assert received.body["messages"][0]["content"] == "logged"
    provider_server.clear_requests()
    assert provider_server.requests == []


def test_anthropic_requires_a_version_header_and_a_valid_body(provider_server):
    assert _anthropic(provider_server, version="").status_code == 400
    assert _anthropic(provider_server, max_tokens=None).status_code == 400
    assert _anthropic(provider_server, messages=[]).status_code == 400
    assert _openai(provider_server, model="").status_code == 400
    bad_json = httpx.post(
        f"{provider_server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert bad_json.status_code == 400


def test_unknown_paths_and_the_index(provider_server):
    assert httpx.get(provider_server.url + "/").json()["sandbox"] is True
    auth = {"authorization": f"Bearer {KEY}"}
    missing_get = httpx.get(provider_server.url + "/v1/nothing", headers=auth)
    assert missing_get.status_code == 404
    assert missing_get.headers["x-request-id"].startswith("req_sandbox_")
    missing = httpx.post(provider_server.url + "/v1/completions", json={}, headers={})
    assert missing.status_code == 404


def test_fail_directive_fails_the_first_n_identical_requests(provider_server):
    prompt = "[sandbox:fail=2 status=503] [sandbox:retry-after=7] hi"
    first, second, third = (_openai(provider_server, prompt) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "7"
    assert "retry-after" not in third.headers
    assert _openai(provider_server, prompt + "!").status_code == 503  # another prompt counts anew


def test_status_directive_answers_in_the_api_shape(provider_server):
    overloaded = _anthropic(provider_server, "[sandbox:status=529]")
    assert overloaded.status_code == 529
    assert overloaded.json()["error"]["type"] == "overloaded_error"
    limited = _openai(provider_server, "[sandbox:status=429]")
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    redirect = _openai(provider_server, "[sandbox:status=307]")
    assert redirect.status_code == 307
    assert redirect.headers["location"] == provider_server.url + "/v1/redirected"


def test_echo_key_quotes_the_presented_key_only_in_errors(provider_server):
    assert KEY in _openai(provider_server, "[sandbox:status=400] [sandbox:echo-key]").text
    assert KEY not in _openai(provider_server, "[sandbox:echo-key]").text


@pytest.mark.parametrize("encoding", sorted(ECHO_ENCODINGS))
def test_echo_and_answer_key_write_the_key_in_the_encoding_asked(provider_server, encoding):
    echoed = ECHO_ENCODINGS[encoding](KEY)
    refused = _openai(provider_server, f"[sandbox:status=500] [sandbox:echo-key={encoding}]")
    assert echoed in refused.json()["error"]["message"]
    answer = _openai(provider_server, f"[sandbox:answer-key={encoding}] hi")
    text = answer.json()["choices"][0]["message"]["content"]
    assert text.endswith(f"key presented: {echoed}")
    assert (encoding == "raw") == (KEY in text)
    assert KEY not in _openai(provider_server, "hi").text


def test_directives_are_parsed_strictly():
    assert parse_directives("[sandbox:sleep=999]").sleep == MAX_SLEEP
    directives = parse_directives("x [sandbox:fail=3 status=529] [sandbox:echo-key] y")
    assert (directives.fail_first, directives.fail_status, directives.echo_key) == (3, 529, True)
    assert parse_directives("[sandbox:fail=1]").fail_status == 500
    for bad in (
        "[sandbox:status=abc]",
        "[sandbox:status=700]",
        "[sandbox:sleep=-1]",
        "[sandbox:fail=x status=500]",
        "[sandbox:nonsense]",
        "[sandbox:colour=red]",
        "[sandbox:echo-key=rot13]",
        "[sandbox:answer-key=]",
    ):
        with pytest.raises(DirectiveError):
            parse_directives(bad)


def test_an_unknown_directive_is_a_400(provider_server):
    answer = _openai(provider_server, "[sandbox:explode]")
    assert answer.status_code == 400
    assert "unknown sandbox directive" in answer.json()["error"]["message"]


def test_stop_wakes_a_sleeping_answer(provider_server_factory):
    server = provider_server_factory()
    outcome = []

    def slow_request():
        try:
            outcome.append(_openai(server, "[sandbox:sleep=25]").status_code)
        except httpx.HTTPError as exc:  # the connection may close before the answer is sent
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=slow_request)
    started = time.monotonic()
    thread.start()
    while not server.requests:
        time.sleep(0.01)
    server.stop()
    thread.join(timeout=5)
    assert outcome  # answered or cut off, but not left waiting for 25 s
    assert time.monotonic() - started < 5


def test_concurrent_requests_are_all_logged_with_distinct_ids(provider_server):
    ids = []
    with httpx.Client() as client:

        def one(n):
            answer = client.post(
                f"{provider_server.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": f"n{n}"}]},
                headers={"authorization": f"Bearer {KEY}"},
            )
            ids.append(answer.headers["x-request-id"])

        threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(set(ids)) == 20
    assert len(provider_server.requests) == 20


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "example.com", ""])  # noqa: S104
def test_only_loopback_addresses_are_accepted(host):
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(host=host)


def test_context_manager_starts_and_stops():
    with SandboxServer() as server:
        assert _openai(server).status_code == 200
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_command_serves_until_ctrl_c():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "swrly.dev.sandbox", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        while not any("PROVIDER_BASE_URLS=" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = f"http://127.0.0.1:{port}"
        assert f"PROVIDER_BASE_URLS=sandbox={url}\n" in lines[-1]
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == answer_text("m", "", "hi")

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_second_signal_while_stopping_shows_no_traceback():
    """Ctrl-C in a terminal, then SIGTERM from a launcher: the second one used to land in the
    middle of the first one's shutdown as a KeyboardInterrupt with its traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "swrly.dev.sandbox", "--port", "0", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("Sandbox provider listening on http://127.0.0.1:"), first
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        assert process.wait(timeout=30) == 0
        rest = process.stdout.read()
        assert "Traceback" not in rest
        assert "KeyboardInterrupt" not in rest
        assert rest == ""  # --quiet: one line when listening, nothing when stopping
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_command_refuses_a_non_loopback_host():
    result = subprocess.run(
        [sys.executable, "-m", "swrly.dev.sandbox", "--host", "0.0.0.0"],  # noqa: S104
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr


def _events(response):
    """(event, data) pairs of a server-sent event stream; data parsed as JSON where it is."""
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields.get("data", "")
        events.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


def test_anthropic_streams_the_messages_event_sequence(provider_server):
    answer = _anthropic(provider_server, "one two three", stream=True)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["request-id"] == "req_sandbox_1"
    events = _events(answer)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)  # each event names its type
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == answer_text("m", "", "one two three")
    assert events[0][1]["message"]["usage"]["input_tokens"] == 3
    assert events[-2][1]["usage"]["output_tokens"] == len(text.split())
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_openai_streams_chunks_then_usage_then_done(provider_server):
    plain = _events(_openai(provider_server, "a b", stream=True))
    assert plain[-1] == (None, "[DONE]")
    assert all("usage" not in data for _, data in plain[:-1])
    with_usage = _events(
        _openai(provider_server, "a b", stream=True, stream_options={"include_usage": True})
    )
    chunks = [data for _, data in with_usage[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == answer_text("m", "", "a b")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": len(text.split()),
        "total_tokens": 2 + len(text.split()),
    }
    assert _openai(provider_server, "x", stream="yes").status_code == 400


def test_openai_developer_messages_are_the_system_prompt(provider_server):
    messages = [{"role": "developer", "content": "be nice"}, {"role": "user", "content": "hi"}]
    answer = _openai(provider_server, messages=messages).json()
    assert answer["choices"][0]["message"]["content"] == answer_text("m", "be nice", "hi")
    tool = _openai(provider_server, messages=[{"role": "tool", "content": "x"}])
    assert tool.status_code == 400


def test_anthropic_versions_and_the_sampling_parameters_2026_10_21_removed(provider_server):
    assert _anthropic(provider_server, version="2023-06-01", temperature=0.5).status_code == 200
    for name in ("temperature", "top_p", "top_k"):
        refused = _anthropic(provider_server, version="2026-10-21", **{name: 1})
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "type": "invalid_request_error",
            "message": f"{name}: Extra inputs are not permitted",
        }
    unknown = _anthropic(provider_server, version="2024-01-01")
    assert unknown.status_code == 400
    assert "not a known version" in unknown.json()["error"]["message"]


def test_count_tokens_counts_the_input_without_max_tokens(provider_server):
    answer = httpx.post(
        f"{provider_server.url}/v1/messages/count_tokens",
        json={
            "model": "m",
            "system": "be brief",
            "messages": [{"role": "user", "content": "a b c"}],
        },
        headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"},
    )
    assert answer.status_code == 200
    assert answer.json() == {"input_tokens": 5}
    assert answer.headers["request-id"].startswith("req_sandbox_")
    unauthenticated = httpx.post(
        f"{provider_server.url}/v1/messages/count_tokens",
        json={"model": "m", "messages": [{"role": "user", "content": "a"}]},
        headers={"anthropic-version": "2026-10-21"},
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"


def test_models_are_listed_in_the_shape_of_the_api_asked(provider_server):
    openai = httpx.get(
        f"{provider_server.url}/v1/models", headers={"authorization": f"Bearer {KEY}"}
    )
    anthropic = httpx.get(
        f"{provider_server.url}/v1/models",
        headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"},
    )
    assert openai.json()["object"] == "list"
    assert [model["id"] for model in openai.json()["data"]] == list(MODELS)
    assert "x-request-id" in openai.headers
    assert anthropic.json()["has_more"] is False
    assert {model["type"] for model in anthropic.json()["data"]} == {"model"}
    assert "request-id" in anthropic.headers
    one = httpx.get(
        f"{provider_server.url}/v1/models/{MODELS[0]}", headers={"authorization": f"Bearer {KEY}"}
    )
    assert one.json()["id"] == MODELS[0]
    assert httpx.get(f"{provider_server.url}/v1/models").status_code == 401


def test_gateway_mode_renames_headers_the_way_litellm_does(provider_server_factory):
    server = provider_server_factory(gateway="litellm")
    limited = _openai(server, "[sandbox:status=429] [sandbox:retry-after=3]")
    assert limited.status_code == 429
    assert limited.headers["llm_provider-x-request-id"] == "req_sandbox_1"
    assert limited.headers["llm_provider-retry-after"] == "3"
    assert limited.headers["request-id"] == "req_sandbox_1"  # LiteLLM copies the id there
    assert "x-request-id" not in limited.headers
    assert "retry-after" not in limited.headers
    assert "llm_provider-request-id" not in limited.headers
    assert limited.headers["x-litellm-call-id"]
    answer = _openai(server)
    assert answer.headers["llm_provider-request-id"] == "req_sandbox_2"
    assert answer.headers["llm_provider-x-request-id"] == "req_sandbox_2"
    assert "x-request-id" not in answer.headers
    with pytest.raises(ValueError, match="unknown gateway"):
        SandboxServer(gateway="nginx")


def test_stream_delay_lets_partial_output_be_read_while_the_answer_streams(provider_server):
    # Each delta is flushed at once; the 30 s of pacing after it would otherwise hit the read
    # timeout (a bound, not a measurement).
    body = {
        "model": "m",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "[sandbox:stream-delay=30] one two three"}],
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    seen = []
    with httpx.stream(
        "POST", f"{provider_server.url}/v1/messages", json=body, headers=headers, timeout=10
    ) as answer:
        for line in answer.iter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
            if seen and seen[-1] == "content_block_delta" and line.startswith("data: "):
                first = json.loads(line.removeprefix("data: "))["delta"]["text"]
                break
    provider_server.stop()  # wakes the pacing
    assert first == answer_text("m", "", body["messages"][0]["content"]).split()[0]
    assert "message_stop" not in seen
    assert parse_directives("[sandbox:stream-delay=99]").stream_delay == MAX_SLEEP
