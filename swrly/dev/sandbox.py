"""The sandbox provider: a deterministic model on loopback speaking the OpenAI and Anthropic APIs.

For tests, benchmarks and `make run` (`python -m swrly.dev.sandbox`, see main()). It serves, as the
providers do today:

- OpenAI (`Authorization: Bearer <key>`): `POST /v1/chat/completions` (`system`, `developer`,
  `user` and `assistant` messages; `stream: true` answers server-sent `chat.completion.chunk`
  events ending in `data: [DONE]`, with a usage chunk when `stream_options.include_usage`) and
  `GET /v1/models`; errors as `{"error": {...}}` with an `x-request-id` header.
- Anthropic (`x-api-key: <key>` or `Authorization: Bearer <key>`, as the 2.x SDKs send it, the
  first winning when both are sent; `anthropic-version` 2023-06-01 or 2026-10-21, the latter
  refusing `temperature`, `top_p` and `top_k` as the API does): `POST /v1/messages` (with
  `stream: true`, the Messages event stream from `message_start` to `message_stop`),
  `POST /v1/messages/count_tokens` and `GET /v1/models` (when `anthropic-version` is sent);
  errors as `{"type": "error", "error": {...}}` with a `request-id` header.

It checks the key it receives and answers `sandbox:<12 hex of sha256(model, system, prompt)>
<first prompt words>` with whitespace word counts as usage and a request id on every answer.
With `gateway="litellm"` it renames its response headers the way LiteLLM's proxy was seen to
(see _litellm_headers), to rehearse a gateway in front of a provider.

Directives anywhere in the request body make it misbehave on purpose:
  [sandbox:status=S]            answer HTTP S (200-599; 3xx redirects to /v1/redirected)
  [sandbox:sleep=SECONDS]       wait before answering (at most 30 s)
  [sandbox:stream-delay=SECONDS] with `stream: true`, wait this long after each text delta
                                (at most 30 s in all), so partial output can be watched
  [sandbox:fail=N status=S]     the first N identical requests answer S, later ones succeed
  [sandbox:retry-after=VALUE]   add `retry-after: VALUE` to error answers
  [sandbox:echo-key]            error answers quote the key presented (to prove redaction)
  [sandbox:echo-key=ENCODING]   the same, with the key encoded (see ECHO_ENCODINGS)
  [sandbox:answer-key=ENCODING] successful answers end with the key presented, encoded
  [sandbox:malformed]           answer 200 with a body that is not the API's answer
  [sandbox:stream-error]        a streamed answer breaks off after its first text delta with
                                the API's in-stream error (Anthropic `event: error`, overloaded;
                                OpenAI a `data:` chunk carrying `error`)

Only the standard library (and swrly.http's loopback test) is used, and only loopback addresses
are accepted: the sandbox is
never reachable from another machine. `requests` keeps what it received, keys included, for
test assertions; it lives in memory only and is never logged.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from swrly.http import is_loopback

logger = logging.getLogger(__name__)

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"
ANTHROPIC_VERSIONS = ("2023-06-01", "2026-10-21")
# Sampling parameters Anthropic's API version 2026-10-21 refuses (400), even at their defaults.
REMOVED_IN_2026_10_21 = ("temperature", "top_p", "top_k")
MODELS = ("sandbox-1", "sandbox-2")  # what GET /v1/models lists; any model name is served
GATEWAYS = ("litellm",)
REDIRECT_TARGET = "/v1/redirected"
MAX_SLEEP = 30.0
MAX_BODY = 1024 * 1024
ECHO_WORDS = 6
REQUEST_LOG_LIMIT = 10_000  # a long-running sandbox keeps only the latest requests

DIRECTIVE = re.compile(r"\[sandbox:([^\]]*)\]")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]{1,100}")

# https://platform.claude.com/docs/en/api/errors
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
_REASONS = {529: "Overloaded"}


def _every_char(template: str) -> Any:
    return lambda key: "".join(template.format(ord(char)) for char in key)


# How `echo-key` / `answer-key` may write the key back: each form a careless or hostile provider
# could use (every character escaped, since escaping changes nothing in a key's own alphabet).
ECHO_ENCODINGS: dict[str, Any] = {
    "raw": lambda key: key,
    "json": _every_char("\\u{:04x}"),
    "html": _every_char("&#{};"),
    "html-hex": _every_char("&#x{:x};"),
    "url": lambda key: "".join(f"%{byte:02X}" for byte in key.encode()),
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "base64url": lambda key: base64.urlsafe_b64encode(key.encode()).decode(),
    # inside a larger blob, at the two other byte alignments
    "base64-shift1": lambda key: base64.b64encode(b"k=" + key.encode() + b";").decode(),
    "base64-shift2": lambda key: base64.b64encode(b"key=" + key.encode() + b";").decode(),
    "hex": lambda key: key.encode().hex(),
}


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the sandbox saw it: header names lower-cased, body as parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # None when the body was absent or not JSON
    # When it arrived (time.time(), the clock the platform's timestamps use on this machine).
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Directives:
    """What a request's `[sandbox:...]` directives ask for."""

    status: int | None = None
    sleep: float = 0.0
    stream_delay: float = 0.0
    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    echo_key: bool = False
    echo_encoding: str = "raw"
    answer_key: str | None = None  # the encoding successful answers echo the key in
    malformed: bool = False
    stream_error: bool = False


class DirectiveError(ValueError):
    """A `[sandbox:...]` directive the sandbox does not understand."""


class _BadRequest(ValueError):
    """The request body is not what the API expects."""


def _status(value: str) -> int:
    try:
        status = int(value)
    except ValueError:
        raise DirectiveError(f"status {value!r} is not a number") from None
    if not 200 <= status <= 599:
        raise DirectiveError(f"status {status} is outside 200-599")
    return status


def parse_directives(text: str) -> Directives:
    """The directives in `text`; DirectiveError for one the sandbox does not know."""
    found: dict[str, Any] = {}
    for match in DIRECTIVE.finditer(text):
        inner = match.group(1).strip()
        if inner in ("echo-key", "malformed", "stream-error"):
            found[inner.replace("-", "_")] = True
            continue
        if inner == "answer-key":
            found["answer_key"] = "raw"
            continue
        name, has_value, value = inner.partition("=")
        value = value.strip()
        if not has_value:
            raise DirectiveError(f"unknown sandbox directive [sandbox:{inner}]")
        if name in ("echo-key", "answer-key"):
            if value not in ECHO_ENCODINGS:
                raise DirectiveError(
                    f"{name}: unknown encoding {value!r} (known: {', '.join(ECHO_ENCODINGS)})"
                )
            if name == "echo-key":
                found.update(echo_key=True, echo_encoding=value)
            else:
                found["answer_key"] = value
        elif name == "status":
            found["status"] = _status(value)
        elif name in ("sleep", "stream-delay"):
            try:
                seconds = float(value)
            except ValueError:
                raise DirectiveError(f"{name} {value!r} is not a number") from None
            if not 0 <= seconds < float("inf"):
                raise DirectiveError(f"{name} {value!r} is not a duration")
            found[name.replace("-", "_")] = min(seconds, MAX_SLEEP)
        elif name == "fail":
            count, _, rest = value.partition(" ")
            status_name, _, status_value = rest.strip().partition("=")
            if not count.isdigit() or (rest.strip() and status_name != "status"):
                raise DirectiveError("expected [sandbox:fail=N status=S]")
            found["fail_first"] = int(count)
            if status_value:
                found["fail_status"] = _status(status_value)
        elif name == "retry-after":
            if not _HEADER_SAFE.fullmatch(value):
                raise DirectiveError("retry-after must be printable ASCII, at most 100 chars")
            found["retry_after"] = value
        else:
            raise DirectiveError(f"unknown sandbox directive [sandbox:{name}]")
    return Directives(**found)


def answer_text(model: str, system: str, prompt: str) -> str:
    """The sandbox's deterministic answer: a digest of the whole input, then its first words."""
    digest = hashlib.sha256(f"{model}\n{system}\n{prompt}".encode()).hexdigest()[:12]
    echo = DIRECTIVE.sub(" ", prompt).split()[:ECHO_WORDS]
    return " ".join([f"sandbox:{digest}", *echo])


def word_count(*texts: str) -> int:
    """The sandbox's token count: whitespace-separated words."""
    return sum(len(text.split()) for text in texts)


def _text_of(content: Any, where: str) -> str:
    """Text from a string or a list of text blocks (both APIs accept either)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for block in content:
            if not (
                isinstance(block, dict)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ):
                raise _BadRequest(f"{where}: only text content is supported")
            texts.append(block["text"])
        return "\n".join(texts)
    raise _BadRequest(f"{where}: content must be a string or a list of text blocks")


def _max_tokens(value: Any, *, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadRequest("max_tokens: must be a positive integer")
    return value


def _read_request(
    api: str, payload: Any, *, max_tokens_required: bool = True
) -> tuple[str, str, str, int | None]:
    """(model, system, prompt, max_tokens) from a request body; _BadRequest when malformed.

    OpenAI's `system` and `developer` messages (its newer name for the same instructions) both
    count as the system prompt."""
    if not isinstance(payload, dict):
        raise _BadRequest("the body must be a JSON object")
    model, messages = payload.get("model"), payload.get("messages")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: field required")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: must be a non-empty list")
    system_parts: list[str] = []
    prompt_parts: list[str] = []
    if api == "anthropic":
        if "system" in payload:
            system_parts.append(_text_of(payload["system"], "system"))
        max_tokens = _max_tokens(payload.get("max_tokens"), required=max_tokens_required)
    else:
        max_tokens = _max_tokens(
            payload.get("max_completion_tokens", payload.get("max_tokens")), required=False
        )
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise _BadRequest("stream: must be a boolean")
    roles = (
        {"user", "assistant"}
        if api == "anthropic"
        else {"user", "assistant", "system", "developer"}
    )
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise _BadRequest(f"{where}: role must be one of {', '.join(sorted(roles))}")
        text = _text_of(message.get("content"), where)
        is_system = message["role"] in ("system", "developer")
        (system_parts if is_system else prompt_parts).append(text)
    return model, "\n".join(system_parts), "\n".join(prompt_parts), max_tokens


def _error_payload(api: str, status: int, message: str, request_id: str = "") -> dict[str, Any]:
    """An error body in the API's own shape (Anthropic's repeats the request id in it)."""
    if api == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        if request_id:
            payload["request_id"] = request_id
        return payload
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = _OPENAI_ERROR_CODES.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@dataclass(frozen=True)
class _Answer:
    """The sandbox's answer to one request, before it is put in an API's shape."""

    number: int
    model: str
    text: str
    truncated: bool
    input_tokens: int
    output_tokens: int

    @classmethod
    def build(
        cls,
        number: int,
        model: str,
        system: str,
        prompt: str,
        max_tokens: int | None,
        echoed: str = "",
    ) -> _Answer:
        """The answer cut to `max_tokens` words; `echoed` (the `answer-key` directive's text) is
        appended after the cut."""
        words = answer_text(model, system, prompt).split()
        truncated = max_tokens is not None and len(words) > max_tokens
        text = " ".join(words[:max_tokens] if truncated else words)
        if echoed:
            text = f"{text} {echoed}"
        return cls(number, model, text, truncated, word_count(system, prompt), word_count(text))

    def pieces(self) -> list[str]:
        """The text as streamed: one piece a word, joined back without loss."""
        words = self.text.split(" ")
        return [words[0], *(" " + word for word in words[1:])]

    def anthropic(self) -> dict[str, Any]:
        return {
            "id": f"msg_sandbox_{self.number}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "max_tokens" if self.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def openai(self) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sandbox-{self.number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None},
                    "finish_reason": "length" if self.truncated else "stop",
                }
            ],
            "usage": self._openai_usage(),
        }

    def _openai_usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def anthropic_events(self, break_off: bool = False) -> Iterator[tuple[bytes, bool]]:
        """The Messages event stream (`event:` and `data:` lines, as the API sends them), each
        event with whether it carries text; `break_off` ends it with an error event after the
        first text delta."""
        message = {**self.anthropic(), "content": [], "stop_reason": None}
        message["usage"] = {"input_tokens": self.input_tokens, "output_tokens": 0}
        yield _sse({"type": "message_start", "message": message}, "message_start"), False
        block = {"type": "text", "text": ""}
        start = {"type": "content_block_start", "index": 0, "content_block": block}
        yield _sse(start, "content_block_start"), False
        yield _sse({"type": "ping"}, "ping"), False
        for piece in self.pieces():
            delta = {"type": "text_delta", "text": piece}
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            yield _sse(event, "content_block_delta"), True
            if break_off:
                broke_off = "sandbox: the stream broke off as the request asked"
                yield _sse(_error_payload("anthropic", 529, broke_off), "error"), False
                return
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False
        stop = {
            "stop_reason": "max_tokens" if self.truncated else "end_turn",
            "stop_sequence": None,
        }
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        yield (
            _sse({"type": "message_delta", "delta": stop, "usage": usage}, "message_delta"),
            False,
        )
        yield _sse({"type": "message_stop"}, "message_stop"), False

    def openai_events(
        self, include_usage: bool, break_off: bool = False
    ) -> Iterator[tuple[bytes, bool]]:
        """Chat Completions chunks (`data:` lines only, ending in `data: [DONE]`), each with
        whether it carries text; `break_off` ends them with an error chunk after the first
        text delta."""
        base = {
            "id": f"chatcmpl-sandbox-{self.number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return _sse({**base, "choices": [choice], **extra})

        yield chunk({"role": "assistant", "content": ""}), False
        for piece in self.pieces():
            yield chunk({"content": piece}), True
            if break_off:
                message = "sandbox: the stream broke off as the request asked"
                yield _sse(_error_payload("openai", 500, message)), False
                return
        yield chunk({}, "length" if self.truncated else "stop"), False
        if include_usage:
            yield _sse({**base, "choices": [], "usage": self._openai_usage()}), False
        yield b"data: [DONE]\n\n", False


class _DeltaPacer:
    """Waits after each text-delta event, at most MAX_SLEEP seconds over the whole stream."""

    def __init__(self, stopping: threading.Event, delay: float) -> None:
        self.stopping, self.delay, self.budget = stopping, delay, MAX_SLEEP

    def after(self, carries_text: bool) -> None:
        if self.delay <= 0 or not carries_text:
            return
        wait = min(self.delay, self.budget)
        self.budget -= wait
        if wait > 0:
            self.stopping.wait(wait)


def _sse(payload: Any, event: str | None = None) -> bytes:
    lines = [f"event: {event}"] if event else []
    lines.append(f"data: {json.dumps(payload)}")
    return ("\n".join(lines) + "\n\n").encode()


def _models_payload(api: str) -> dict[str, Any]:
    """GET /v1/models in the API's own shape."""
    if api == "anthropic":
        data = [_model_payload(api, name) for name in MODELS]
        return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    return {"object": "list", "data": [_model_payload(api, name) for name in MODELS]}


def _model_payload(api: str, name: str) -> dict[str, Any]:
    if api == "anthropic":
        return {
            "type": "model",
            "id": name,
            "display_name": f"Sandbox {name}",
            "created_at": "2026-01-01T00:00:00Z",
        }
    return {"id": name, "object": "model", "created": 1767225600, "owned_by": "swrly-sandbox"}


def _litellm_headers(status: int, headers: dict[str, str]) -> dict[str, str]:
    """An answer's headers as LiteLLM's proxy (1.108.7, OpenAI-compatible route) re-sends them:
    each upstream header as `llm_provider-<name>` (OpenAI's `x-ratelimit-*` also unchanged), the
    upstream request id copied to `request-id` (and to `llm_provider-request-id` on success),
    and the gateway's own `x-litellm-call-id`. The upstream names themselves are not sent."""
    renamed = {"x-litellm-call-id": str(uuid.uuid4())}
    for name, value in headers.items():
        if name.lower().startswith("x-ratelimit-"):
            renamed[name] = value
        renamed[f"llm_provider-{name}"] = value
    request_id = headers.get("x-request-id") or headers.get("request-id")
    if request_id:
        renamed["request-id"] = request_id
        if status < 400:
            renamed["llm_provider-request-id"] = request_id
    return renamed


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers allow
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "SwrlySandbox/1"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is closed after this many seconds
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only; headers (and keys) never reach a log.
        logger.debug("%s - " + format, self.address_string(), *args)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _start(self, status: int, content_type: str, headers: dict[str, str] | None) -> None:
        self.send_response(status, _REASONS.get(status))
        self.send_header("content-type", content_type)
        for name, value in self.server.sandbox._response_headers(status, headers or {}).items():
            self.send_header(name, value)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None
    ) -> None:
        try:
            self._start(status, content_type, headers)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a read timeout, say)

    def _send_events(
        self, events: Iterable[tuple[bytes, bool]], headers: dict[str, str], delay: float = 0.0
    ) -> None:
        """A server-sent event stream, each event flushed as one chunk as soon as it is made;
        `delay` seconds after each text delta (stop() cuts the waits short)."""
        waits = _DeltaPacer(self.server.sandbox._stopping, delay)
        # Each event leaves at once (no Nagle wait for the previous segment's ACK), as a
        # streaming server sends them: otherwise loopback adds a delayed-ACK wait to each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._start(200, "text/event-stream; charset=utf-8", headers)
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event, carries_text in events:
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                waits.after(carries_text)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api_of(self, path: str) -> str:
        if path == OPENAI_PATH:
            return "openai"
        if path in (ANTHROPIC_PATH, COUNT_TOKENS_PATH):
            return "anthropic"
        return "anthropic" if self.headers.get("anthropic-version") else "openai"

    def _presented_key(self, api: str) -> str:
        """The key as the request carries it: Bearer for both APIs, `x-api-key` for Anthropic
        (winning when both are sent, as the Anthropic API does)."""
        if api == "anthropic" and self.headers.get("x-api-key"):
            return self.headers["x-api-key"].strip()
        scheme, _, key = self.headers.get("authorization", "").partition(" ")
        return key.strip() if scheme.lower() == "bearer" else ""

    def _auth_problem(self, api: str, key: str) -> tuple[int, str] | None:
        """Why the request's credentials or version are refused, or None."""
        if not key:
            name = (
                "x-api-key or Authorization: Bearer"
                if api == "anthropic"
                else "Authorization: Bearer"
            )
            return 401, f"no API key: send it in the {name} header"
        if not self.server.sandbox._key_allowed(key):
            return 401, "invalid API key"
        if api == "anthropic":
            version = self.headers.get("anthropic-version", "")
            if not version:
                return 400, "anthropic-version: header is required"
            if version not in ANTHROPIC_VERSIONS:
                known = ", ".join(ANTHROPIC_VERSIONS)
                return 400, f"anthropic-version: {version!r} is not a known version ({known})"
        return None

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        sandbox._record(self, None)
        path = urlsplit(self.path).path
        if path == "/":
            endpoints = [
                f"POST {OPENAI_PATH}",
                f"POST {ANTHROPIC_PATH}",
                f"POST {COUNT_TOKENS_PATH}",
                f"GET {MODELS_PATH}",
            ]
            self._send_json(200, {"sandbox": True, "endpoints": endpoints})
            return
        api = self._api_of(path)
        id_header = "request-id" if api == "anthropic" else "x-request-id"
        request_id = f"req_sandbox_{sandbox._next_number()}"
        headers = {id_header: request_id}
        problem = self._auth_problem(api, self._presented_key(api))
        if problem is not None:
            self._send_json(problem[0], _error_payload(api, *problem, request_id), headers)
        elif path == MODELS_PATH:
            self._send_json(200, _models_payload(api), headers)
        elif path.startswith(MODELS_PATH + "/") and path[len(MODELS_PATH) + 1 :] in MODELS:
            self._send_json(200, _model_payload(api, path[len(MODELS_PATH) + 1 :]), headers)
        else:
            message = f"no endpoint GET {path}"
            self._send_json(404, _error_payload(api, 404, message, request_id), headers)

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        request_number = sandbox._next_number()
        request_id = f"req_sandbox_{request_number}"
        path = urlsplit(self.path).path
        api = self._api_of(path)
        id_header = "request-id" if api == "anthropic" else "x-request-id"

        def error(status: int, message: str, extra: dict[str, str] | None = None) -> None:
            payload = _error_payload(api, status, message, request_id)
            self._send_json(status, payload, {id_header: request_id, **(extra or {})})

        try:
            length = int(self.headers.get("content-length", ""))
        except ValueError:
            self.close_connection = True
            error(411, "a content-length header is required")
            return
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is left unread
            error(413, f"the body is larger than {MAX_BODY} bytes")
            return
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            payload = None
        sandbox._record(self, payload)

        if path not in (OPENAI_PATH, ANTHROPIC_PATH, COUNT_TOKENS_PATH):
            error(404, f"no endpoint {path}")
            return
        try:
            directives: Directives | None = parse_directives(raw)
            directive_problem = ""
        except DirectiveError as exc:
            directives, directive_problem = None, str(exc)
        echo_key = directives is not None and directives.echo_key
        encoding = directives.echo_encoding if directives is not None else "raw"

        key = self._presented_key(api)
        problem = self._auth_problem(api, key)
        if problem is not None:
            status, message = problem
            if status == 401 and key and echo_key:
                message = f"Incorrect API key provided: {ECHO_ENCODINGS[encoding](key)}"
            error(status, message)
            return
        counting = path == COUNT_TOKENS_PATH
        try:
            model, system, prompt, max_tokens = _read_request(
                api, payload, max_tokens_required=not counting
            )
        except _BadRequest as exc:
            error(400, str(exc))
            return
        if api == "anthropic" and self.headers["anthropic-version"] == "2026-10-21":
            for name in REMOVED_IN_2026_10_21:
                if name in payload:
                    error(400, f"{name}: Extra inputs are not permitted")
                    return
        if directives is None:
            error(400, directive_problem)
            return

        if directives.sleep:
            sandbox._stopping.wait(directives.sleep)  # stop() wakes sleepers at once
        asked_status = directives.status
        if directives.fail_first and sandbox._count(path, raw) <= directives.fail_first:
            asked_status = directives.fail_status
        if asked_status is not None and asked_status != 200:
            message = f"sandbox: HTTP {asked_status} as the request asked"
            if echo_key:
                message += f" (key presented: {ECHO_ENCODINGS[encoding](key)})"
            extra = {}
            if directives.retry_after is not None:
                extra["retry-after"] = directives.retry_after
            if 300 <= asked_status <= 399:
                extra["location"] = sandbox.url + REDIRECT_TARGET
            error(asked_status, message, extra)
            return

        if directives.malformed:
            body = b"<html>not a model answer</html>"
            self._send(200, body, "text/html", {id_header: request_id})
            return
        if counting:
            input_tokens = word_count(system, prompt)
            self._send_json(200, {"input_tokens": input_tokens}, {id_header: request_id})
            return
        echoed = ""
        if directives.answer_key is not None:
            echoed = f"key presented: {ECHO_ENCODINGS[directives.answer_key](key)}"
        answer = _Answer.build(request_number, model, system, prompt, max_tokens, echoed)
        if payload.get("stream") is True:
            if api == "anthropic":
                events = answer.anthropic_events(break_off=directives.stream_error)
            else:
                options = payload.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                events = answer.openai_events(include_usage, break_off=directives.stream_error)
            self._send_events(events, {id_header: request_id}, directives.stream_delay)
            return
        reply = answer.anthropic() if api == "anthropic" else answer.openai()
        self._send_json(200, reply, {id_header: request_id})


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a client's idle keep-alive connection
    # The listen backlog: socketserver's default of 5 overflows when many clients connect at
    # once (a benchmark's workers, a test's 20 threads) on a busy machine, and the kernel then
    # resets the connections it cannot queue.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer, family: int) -> None:
        self.address_family = family
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = cast(str, host)  # bound to a (host name, port) address

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("a sandbox client at %s went away", client_address)
        else:
            logger.exception("the sandbox failed to answer %s", client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """The sandbox provider on a loopback address, served from a daemon thread.

    `expected_keys`: when given, only these keys are accepted (401 otherwise); when None, any
    non-empty key is. `port=0` picks a free port; `url` says which. `gateway` ("litellm") renames
    the response headers the way that gateway does (see GATEWAYS).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        expected_keys: Iterable[str] | None = None,
        gateway: str | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the sandbox binds only to a loopback address, not {host!r}")
        if gateway is not None and gateway not in GATEWAYS:
            raise ValueError(f"unknown gateway {gateway!r} (known: {', '.join(GATEWAYS)})")
        self.gateway = gateway
        self.host = host
        self._port = port
        self.expected_keys = None if expected_keys is None else frozenset(expected_keys)
        if self.expected_keys is not None and not all(
            isinstance(key, str) and key for key in self.expected_keys
        ):
            raise ValueError("expected_keys must be non-empty strings")
        self._lock = threading.Lock()
        self._requests: collections.deque[ReceivedRequest] = collections.deque(
            maxlen=REQUEST_LOG_LIMIT
        )
        self._number = 0
        self._failures: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        if self._httpd is None:
            return self._port
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to put in PROVIDER_BASE_URLS."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """What the sandbox received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._requests.clear()

    def start(self) -> SandboxServer:
        """Bind and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the sandbox is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._port), self, family)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-provider:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping answers and close open connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._port = httpd.server_address[1]
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next_number(self) -> int:
        with self._lock:
            self._number += 1
            return self._number

    def _record(self, handler: _Handler, body: Any) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        request = ReceivedRequest(handler.command, handler.path, headers, body)
        with self._lock:
            self._requests.append(request)

    def _count(self, path: str, raw: str) -> int:
        """How many times this exact request has been seen, this one included."""
        with self._lock:
            self._failures[(path, raw)] += 1
            return self._failures[(path, raw)]

    def _response_headers(self, status: int, headers: dict[str, str]) -> dict[str, str]:
        """An answer's own headers (request id, retry-after, ...), renamed in gateway mode."""
        if self.gateway == "litellm":
            return _litellm_headers(status, headers)
        return headers

    def _key_allowed(self, key: str) -> bool:
        if self.expected_keys is None:
            return True
        presented = key.encode()
        allowed = False
        for expected in self.expected_keys:  # every comparison runs: no early exit
            allowed |= hmac.compare_digest(presented, expected.encode())
        return allowed


DEFAULT_PORT = 8765


def main(argv: list[str] | None = None) -> int:
    """`python -m swrly.dev.sandbox [--port P] [--host 127.0.0.1] [--gateway litellm] [--quiet]`.

    Serves until Ctrl-C, SIGTERM or SIGHUP, and then stops quietly: the signals are only noted,
    and the main thread checks for them (no KeyboardInterrupt, wherever it lands: during the
    start, or a second signal while stopping). It only serves: a
    run reaches it only where PROVIDER_BASE_URLS names it (`sandbox=<url>`), and plain http://
    is allowed there only with DEBUG (see runs.providers.egress). It touches neither the
    database nor the key store, so it starts in a bare checkout.
    """
    stopping: list[int] = []  # the signals received; a plain list: a handler takes no lock

    def request_stop(signum: int, frame: Any) -> None:
        stopping.append(signum)

    # First: Ctrl-C works even when started in the background with SIGINT ignored. The handler
    # stays installed (swapping in SIG_IGN while a signal is pending makes Python raise).
    for name in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(name, request_stop)
    parser = argparse.ArgumentParser(
        prog="python -m swrly.dev.sandbox",
        description="Serve the sandbox model provider (OpenAI- and Anthropic-compatible, "
        "deterministic) on loopback until Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed)."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="A loopback address; anything else is refused."
    )
    parser.add_argument(
        "--gateway",
        choices=GATEWAYS,
        default=None,
        help="Rename response headers the way this gateway does (to rehearse one).",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="Print one line when listening, and nothing when stopping (make run).",
    )
    options = parser.parse_args(argv)
    host, port = options.host, options.port
    try:
        server = SandboxServer(host=host, port=port, gateway=options.gateway).start()
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except OSError as exc:
        print(f"Error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    try:
        if options.quiet:
            print(f"Sandbox provider listening on {server.url}", flush=True)  # noqa: T201
        else:
            print(_banner(server), flush=True)  # noqa: T201
        while not stopping:
            time.sleep(0.2)
    finally:
        server.stop()
    if not options.quiet:
        print("Sandbox provider stopped.", flush=True)  # noqa: T201
    return 0


def _banner(server: SandboxServer) -> str:
    """Where the sandbox listens, and whether the current settings point runs at it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    from django.conf import settings

    configured = settings.PROVIDER_BASE_URLS.get("sandbox")
    lines = [
        f"Sandbox provider listening on {server.url} (loopback only; Ctrl-C stops it)",
        f"  POST {server.url}{OPENAI_PATH}  (Authorization: Bearer <any key>)",
        f"  POST {server.url}{ANTHROPIC_PATH}  (x-api-key or Bearer, anthropic-version)",
        f"  POST {server.url}{COUNT_TOKENS_PATH}, GET {server.url}{MODELS_PATH}",
        "Point Swrly at it (plain http:// needs DEBUG=True):",
        f"  PROVIDER_BASE_URLS=sandbox={server.url}",
    ]
    if configured and configured.rstrip("/") == server.url:
        lines.append("These settings already name it.")
    elif configured:
        lines.append(f"These settings name the sandbox at {configured}, not here.")
    else:
        lines.append("These settings do not name the sandbox: runs cannot reach it yet.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
