"""Streamed steps: the provider's answer read as server-sent events while it arrives.

Calls go to the real sandbox server (which streams as each API does), or, for what the sandbox
cannot be made to do (a connection cut mid-stream, a gateway that ignores `stream`), to a small
real HTTP server started here. Runs go through the real executor, key store and worker.
"""

import http.server
import json
import threading
import time
from collections.abc import Iterator

import httpcore
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.executor import STREAM_STOPPED, _StreamProgress, run_execute, shown_so_far
from runs.models import Run, RunStatus, StepRun, StepStatus
from runs.providers import ModelCall, ProviderError, call_provider
from runs.providers.client import pooled_client, sse_events, sse_lines
from swrly.dev.sandbox import answer_text, word_count
from swrly.keys.secret import ProviderSecret
from tenants.models import Role
from tests.runs.conftest import wait_for_run
from tests.runs.provider_server import make_secret

PROVIDERS = ["anthropic", "openai"]
PROMPT = "Summarise the incident report for the security team"
KEY = "sk-ant-api03-canary-streaming-0123456789abcdef"
OPENAI_KEY = "sk-proj-streaming-0123456789abcdef"


def _call(provider, prompt=PROMPT, *, stream=True, secret=None, on_text=None, **options):
    return call_provider(
        provider,
        secret=secret or make_secret(),
        call=ModelCall(model="m", prompt=prompt, max_tokens=64, stream=stream),
        on_text=on_text,
        **options,
    )


# --- The wire -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_answer_is_the_whole_answer_heard_piece_by_piece(provider, provider_server):
    pieces: list[str] = []

    streamed = _call(provider, on_text=pieces.append)
    whole = _call(provider, stream=False)

    expected = answer_text("m", "", PROMPT)
    assert streamed.text == whole.text == expected
    assert "".join(pieces) == expected
    assert len(pieces) == len(expected.split())  # the sandbox sends one word an event
    assert (streamed.input_tokens, streamed.output_tokens) == (
        word_count(PROMPT),
        word_count(expected),
    )
    assert (streamed.input_tokens, streamed.output_tokens) == (
        whole.input_tokens,
        whole.output_tokens,
    )
    assert streamed.request_id.startswith("req_sandbox_")
    assert streamed.ttft_ms is not None
    assert 0 <= streamed.ttft_ms <= streamed.latency_ms
    assert whole.ttft_ms is None
    # what was asked: a stream, accepted as events, and (OpenAI) the usage in a last chunk
    sent = provider_server.requests[0]
    assert sent.body["stream"] is True
    assert sent.headers["accept"] == "text/event-stream"
    if provider == "openai":
        assert sent.body["stream_options"] == {"include_usage": True}
    assert "stream" not in provider_server.requests[1].body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_error_event_breaks_the_answer_off_and_is_not_retried(provider, provider_server):
    heard: list[str] = []
    prompt = f"[sandbox:stream-error] {PROMPT} {KEY}"
    with pytest.raises(ProviderError) as caught:
        _call(provider, prompt, on_text=heard.append)
    error = caught.value
    assert error.code == "provider_error"
    assert "broke off its answer with an error event" in error.message
    assert "the stream broke off as the request asked" in error.message  # the API's own text
    assert error.attempts == 1
    assert len(provider_server.requests) == 1
    assert error.http_status == 200
    assert error.request_id.startswith("req_sandbox_")
    assert error.ttft_ms is not None
    assert heard == [answer_text("m", "", prompt).split()[0]]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refusal_before_the_stream_is_retried_as_without_streaming(
    provider, provider_server, retry_delays
):
    result = _call(provider, f"[sandbox:fail=1 status=529] {PROMPT}", pause=retry_delays.append)
    assert result.attempts == 2
    assert len(retry_delays) == 1
    assert result.text == answer_text("m", "", f"[sandbox:fail=1 status=529] {PROMPT}")


def test_time_to_first_text_counts_from_the_attempt_that_answered(provider_server):
    # given a first attempt refused with retry-after 0.3 s, waited for real
    result = _call("openai", f"[sandbox:fail=1 status=429] [sandbox:retry-after=0.3] {PROMPT}")
    # then the wait is in the step's latency, not in its time to first text
    assert result.attempts == 2
    assert result.latency_ms - result.ttft_ms >= 300


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_answer_through_a_gateway_keeps_its_request_id(
    provider, provider_server_factory
):
    provider_server_factory(gateway="litellm")
    result = _call(provider)
    assert result.request_id == "req_sandbox_1"
    assert result.ttft_ms is not None


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the server's `reply`: (content type, body bytes, then close)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        content_type, body = self.server.reply  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("x-request-id", "req_scripted")
        if content_type == "application/json":
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.fixture
def scripted(settings) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.DEBUG = True
    settings.PROVIDER_BASE_URLS = {"openai": f"http://127.0.0.1:{server.server_port}"}
    settings.PROVIDER_MAX_RETRIES = 0
    yield server
    server.shutdown()
    server.server_close()


def _chunk(ensure_ascii: bool = True, **fields) -> bytes:
    chunk = json.dumps({"object": "chat.completion.chunk", **fields}, ensure_ascii=ensure_ascii)
    return b"data: " + chunk.encode() + b"\n\n"


def test_a_stream_cut_before_its_last_event_fails_with_what_arrived(scripted):
    # given an answer whose connection closes after one text chunk, before usage and [DONE]
    scripted.reply = (
        "text/event-stream",
        _chunk(choices=[{"index": 0, "delta": {"content": "partial"}}]),
    )
    heard: list[str] = []
    with pytest.raises(ProviderError) as caught:
        _call("openai", on_text=heard.append)
    assert caught.value.code == "provider_error"
    assert "ended before the answer's last event" in caught.value.message
    assert caught.value.request_id == "req_scripted"
    assert heard == ["partial"]


def test_a_stream_without_usage_is_not_an_answer(scripted):
    scripted.reply = (
        "text/event-stream",
        _chunk(choices=[{"index": 0, "delta": {"content": "hi"}}]) + b"data: [DONE]\n\n",
    )
    with pytest.raises(ProviderError, match="carried no usage"):
        _call("openai")


def test_a_line_separator_inside_a_chunk_is_text_not_a_line_end(scripted):
    content = "before\u2028after"
    chunks = _chunk(choices=[{"index": 0, "delta": {"content": content}}], ensure_ascii=False)
    usage = _chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 1})
    scripted.reply = ("text/event-stream", chunks + usage + b"data: [DONE]\n\n")
    assert _call("openai").text == content


@pytest.mark.parametrize("stream", [True, False])
def test_an_answer_no_column_can_store_is_stored_with_replacement_characters(
    acme, key_store, scripted, stream
):
    # given a provider whose answer carries a NUL and an unpaired surrogate (JSON escapes)
    content = "a\x00b\ud800c "
    if stream:
        events = _chunk(choices=[{"index": 0, "delta": {"content": content}}])
        events += _chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 1})
        scripted.reply = ("text/event-stream", events + b"data: [DONE]\n\n")
    else:
        answer = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
        scripted.reply = ("application/json", json.dumps(answer).encode())
    run = _streamed_run(acme, PROMPT, provider="openai", key=OPENAI_KEY, stream=stream)
    # when the worker runs it, then the run succeeds and the text is kept, made storable
    run = run_execute(run_id=str(run.pk))
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert StepRun.objects.get(run=run).output_text == "a\ufffdb\ufffdc "


def test_a_gateway_that_ignores_stream_is_read_as_one_answer(scripted):
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    scripted.reply = ("application/json", json.dumps(answer).encode())
    heard: list[str] = []
    result = _call("openai", on_text=heard.append)
    assert (result.text, result.input_tokens, result.output_tokens) == ("whole", 3, 1)
    assert result.ttft_ms is None
    assert heard == []


def test_lines_end_only_where_the_standard_ends_them():
    # U+2028, U+0085 and form feed end lines for str.splitlines, not for an event stream (JSON
    # may carry them unescaped inside a string); CRLF split across two chunks is one line end.
    chunks = ["\ufeffdata: a\u2028b\u0085c\x0cd\r", "\ndata: two\rdata: th", "ree\n\n"]
    assert list(sse_lines(chunks)) == ["data: a\u2028b\u0085c\x0cd", "data: two", "data: three", ""]
    assert list(sse_lines(["one\r", "\r", "two"])) == ["one", "", "two"]


def test_server_sent_events_are_read_as_the_standard_says():
    lines = [
        ": a comment",
        "event: one",
        "data: first line",
        "data:second line",
        "",
        "event: empty",  # no data: not dispatched
        "",
        "data: three",
        "",
        "data: unfinished",  # no blank line after it: dropped
    ]
    assert list(sse_events(lines)) == [("one", "first line\nsecond line"), ("", "three")]


# --- What may be shown while the answer arrives ---------------------------------------------


def test_the_text_so_far_holds_back_its_unfinished_word_and_redacts_keys():
    secret = ProviderSecret(KEY)  # live: redaction knows it
    try:
        assert shown_so_far("The key is sk-ant-api03-canary-str") == "The key is "
        assert shown_so_far(f"The key is {KEY} and") == "The key is [REDACTED] "
        assert shown_so_far("oneword") == ""
        assert shown_so_far("done.\n") == "done.\n"
        assert shown_so_far("  lead") == ""
        assert shown_so_far("tab\tnext\u2003unfinished") == "tab\tnext\u2003"
        assert shown_so_far("nul\x00 here") == "nul\ufffd "
    finally:
        secret.discard()


def _streamed_run(world, prompt, provider="anthropic", key=KEY, stream=True):
    api = world.api(Role.DEVELOPER)
    steps = [{"name": "s0", "provider": provider, "model": "m", "prompt": prompt, "stream": stream}]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    assert workflow.json()["steps"][0]["stream"] is stream
    created = api.post(
        "/api/v1/runs/",
        {"workflow": workflow.json()["id"], "provider_keys": {provider: key}},
        "application/json",
    )
    assert created.status_code == 202, created.content
    return Run.objects.get(pk=created.json()["id"])


def test_no_partial_write_ever_holds_the_key_the_answer_carries(
    acme, key_store, provider_server, settings
):
    # given a streamed step whose answer ends with the run's own key, and a write per event
    settings.STREAM_PROGRESS_INTERVAL = 0
    run = _streamed_run(acme, f"[sandbox:answer-key=raw] {PROMPT}")
    # when the worker runs it
    with CaptureQueriesContext(connection) as queries:
        run = run_execute(run_id=str(run.pk))
    # then the step succeeded with the key redacted, and its time to first text recorded
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    step = StepRun.objects.get(run=run)
    assert step.output_text.endswith("[REDACTED]")
    assert step.ttft_ms is not None
    # and the partial outputs were written (one per event) without any part of the key
    written = [q["sql"] for q in queries if "output_text" in q["sql"] and "UPDATE" in q["sql"]]
    assert len(written) >= len(answer_text("m", "", PROMPT).split()) - 1
    for sql in written:
        assert KEY[:12] not in sql


def test_a_progress_write_is_two_statements_and_one_when_nothing_new_is_shown(
    acme, key_store, provider_server, settings
):
    settings.STREAM_PROGRESS_INTERVAL = 3600  # only the writes this test makes
    run = _streamed_run(acme, PROMPT)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    progress = _StreamProgress(run, StepRun.objects.get(run=run))
    progress("first second ")
    with CaptureQueriesContext(connection) as queries:
        progress.write()
    assert len(queries) == 2  # the run's heartbeat, then the step's output
    assert StepRun.objects.get(run=run).output_text == "first second "
    with CaptureQueriesContext(connection) as queries:
        progress.write()
    assert len(queries) == 1  # alive, and nothing new to show


def _slow_stream(world, settings, delay: float) -> tuple[Run, str]:
    """A queued run of one streamed step whose answer arrives a word every `delay` seconds,
    written every 0.05 s, and the whole answer it will have."""
    settings.STREAM_PROGRESS_INTERVAL = 0.05
    prompt = f"[sandbox:stream-delay={delay}] {PROMPT}"
    return _streamed_run(world, prompt), answer_text("m", "", prompt)


def _wait_for_output(run, timeout=20.0) -> StepRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = StepRun.objects.get(run=run)
        if step.status == StepStatus.RUNNING and step.output_text:
            return step
        time.sleep(0.02)
    raise AssertionError("no partial output appeared")


def test_the_api_and_the_page_show_the_output_while_it_streams(
    acme, provider_server, celery_worker, settings
):
    run, full = _slow_stream(acme, settings, delay=0.4)
    partial = _wait_for_output(run)
    api_step = acme.api(Role.DEVELOPER).get(f"/api/v1/runs/{run.pk}/").json()["steps"][0]
    page = acme.client(Role.DEVELOPER).get(f"/t/acme/runs/{run.pk}/").content.decode()
    auditor_step = acme.api(Role.AUDITOR).get(f"/api/v1/runs/{run.pk}/").json()["steps"][0]

    assert full.startswith(partial.output_text)
    assert len(partial.output_text) < len(full)
    assert api_step["status"] == "running"
    assert full.startswith(api_step["output_text"])
    assert api_step["output_text"]
    assert "output_text" not in auditor_step
    assert "streaming: what has arrived so far" in page
    done = wait_for_run(run.pk)
    assert done.status == RunStatus.SUCCEEDED, done.error_message
    step = StepRun.objects.get(run=run)
    assert step.output_text == full
    assert step.ttft_ms is not None
    assert step.ttft_ms <= step.latency_ms
    finished_page = acme.client(Role.DEVELOPER).get(f"/t/acme/runs/{run.pk}/").content.decode()
    assert f"first text {step.ttft_ms} ms" in finished_page


def test_cancelling_stops_a_streaming_step_mid_answer(
    acme, provider_server, celery_worker, settings
):
    run, full = _slow_stream(acme, settings, delay=1)
    _wait_for_output(run)

    response = acme.api(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    run = wait_for_run(run.pk)

    assert run.status == RunStatus.CANCELLED
    step = StepRun.objects.get(run=run)
    assert step.status == StepStatus.FAILED
    assert step.error == STREAM_STOPPED
    # what the call had done is recorded: the provider answered, once, and may bill it
    assert step.http_status == 200
    assert step.attempts == 1
    assert step.provider_request_id.startswith("req_sandbox_")
    assert step.ttft_ms is not None
    assert step.latency_ms >= step.ttft_ms
    assert step.output_text  # what had arrived is kept
    assert len(step.output_text) < len(full)  # it stopped before the answer ended
    assert full.startswith(step.output_text)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_calls_give_their_connection_back_to_the_pool(provider, provider_server):
    # given three streamed calls through the process's pooled client
    for _ in range(3):
        _call(provider)
    # then one keep-alive connection carried them all and is idle again (a stream closed
    # before its body ended would have dropped it, and each call paid a new handshake)
    pool = pooled_client(provider)._transport._pool  # httpx's pool of httpcore connections
    origin = httpcore.URL(provider_server.url).origin  # others may hold earlier tests' servers
    to_server = [c for c in pool.connections if c.can_handle_request(origin)]
    assert [connection.is_idle() for connection in to_server] == [True]
