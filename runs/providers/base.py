"""What a model call asks for, what it returns, how it fails, and how a provider's wire looks.

`ModelCall`, `ModelResult` and `ProviderError` are the whole interface the executor sees; a
`WireProtocol` pairs one API's wire facts (`swrly.providers.WireFormat`: path, auth and
request-id headers) with the code that builds its body and parses its answer (whole, or as a
server-sent event stream), for the single sending wrapper in `runs.providers.client`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runs.providers.egress import Destination
from swrly.keys.redaction import redact
from swrly.providers import WireFormat

# Codes a failed step carries; the executor stores them as the run's error code.
PROVIDER_AUTH_FAILED = "provider_auth_failed"
PROVIDER_ERROR = "provider_error"
TIMEOUT = "timeout"
EGRESS_REFUSED = "egress_refused"
KEY_LEAK_BLOCKED = "key_leak_blocked"  # the request carried a live key of another provider
ERROR_CODES = (PROVIDER_AUTH_FAILED, PROVIDER_ERROR, TIMEOUT, EGRESS_REFUSED, KEY_LEAK_BLOCKED)

# How much of a provider's error body survives into a message (after redaction).
MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class ModelCall:
    """One step's request to a model."""

    model: str
    prompt: str
    system: str = ""
    max_tokens: int = 1024
    temperature: float | None = None  # sent to OpenAI only: Anthropic 2026-10-21 refuses it
    stream: bool = False  # ask for the answer as server-sent events


@dataclass(frozen=True)
class ModelResult:
    """One step's answer, with what the run records about the call."""

    text: str
    input_tokens: int
    output_tokens: int
    request_id: str  # the provider's request id ('' if it sent none)
    http_status: int
    latency_ms: int  # total wall time, retries and back-off included
    attempts: int
    destination: Destination | None = None  # where the requests went (the allow-listed URL)
    ttft_ms: int | None = None  # a streamed call: from sending to the first text of the answer


class ProviderError(Exception):
    """A step's model call failed; `code` is machine-readable, `message` is redacted text.

    The message is passed through redact() here as well, so no caller can put a live key in it.
    Arguments are (code, message) positionally so the exception pickles (Celery may).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str = "",
        attempts: int = 0,
        latency_ms: int = 0,
        destination: Destination | None = None,
        ttft_ms: int | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown provider error code {code!r}")
        message = redact(message)
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.attempts = attempts
        self.latency_ms = latency_ms
        self.destination = destination  # None when no request left (refused before sending)
        self.ttft_ms = ttft_ms  # a stream that broke off after its first text

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProviderError(code={self.code!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r}, attempts={self.attempts}, "
            f"message={self.message!r})"
        )


class CallStopped(Exception):
    """A streamed call that the caller's `on_text` stopped (its exception is `__cause__`), with
    what the call had done by then, for the record: the provider answered and may bill it."""

    def __init__(
        self,
        *,
        http_status: int,
        request_id: str,
        attempts: int,
        latency_ms: int,
        destination: Destination | None,
        ttft_ms: int | None,
    ) -> None:
        super().__init__("the caller stopped the streamed call")
        self.http_status = http_status
        self.request_id = request_id
        self.attempts = attempts
        self.latency_ms = latency_ms
        self.destination = destination
        self.ttft_ms = ttft_ms


class UnexpectedAnswer(ValueError):
    """A 2xx body that is not the provider's documented answer shape."""


@dataclass(frozen=True)
class ParsedAnswer:
    """The parts of a successful answer the run keeps."""

    text: str
    input_tokens: int
    output_tokens: int


class StreamBrokeOff(Exception):
    """The provider ended its event stream with an error event; the argument is its body."""


class StreamReader:
    """What one provider's event stream says, read event by event.

    `read(event, data)` takes one server-sent event (its `event:` name, '' when it has none, and
    its `data:`), returns the text it adds to the answer ('' for most events), and raises
    StreamBrokeOff for the API's in-stream error or UnexpectedAnswer for an event of the wrong
    shape. `finished` says whether the API's last event arrived; `answer()` is the whole answer
    with its usage (UnexpectedAnswer if the stream carried none).
    """

    finished: bool = False

    def read(self, event: str, data: str) -> str:
        raise NotImplementedError

    def answer(self) -> ParsedAnswer:
        raise NotImplementedError


def json_event(data: str) -> dict[str, Any]:
    """One event's data as the JSON object the APIs send; UnexpectedAnswer otherwise."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise UnexpectedAnswer("an event's data is not JSON") from None
    if not isinstance(payload, dict):
        raise UnexpectedAnswer("an event's data is not a JSON object")
    return payload


@dataclass(frozen=True)
class WireProtocol:
    """One provider API: its wire facts (from the registry), the body, and the answer."""

    wire: WireFormat
    build_body: Callable[[ModelCall], dict[str, Any]]
    parse_answer: Callable[[Any], ParsedAnswer]  # raises UnexpectedAnswer
    stream_reader: Callable[[], StreamReader]  # a new reader for each streamed answer


def require_int(value: Any, what: str) -> int:
    """`value` as a non-negative int; UnexpectedAnswer otherwise (bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnexpectedAnswer(f"{what} is not a non-negative integer")
    return value


def error_summary(body: str) -> str:
    """A short, redacted description of an error body, in either provider's error shape.

    Both APIs answer `{"error": {"type": ..., "message": ...}}` (Anthropic adds a top-level
    "type": "error"); anything else is shown as raw text. Redaction runs on the raw body and
    again on what was decoded from it (a JSON escape can hide a key from the first pass), and
    always before the cut, so truncation never leaves part of a key that redaction would miss.
    """
    text = redact(body)
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        parts = [str(error[name]) for name in ("type", "code", "message") if error.get(name)]
        if parts:
            text = redact(": ".join(dict.fromkeys(parts)))
    text = text.strip()
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + "…"
    return text or "(empty body)"
