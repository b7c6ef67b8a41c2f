"""The one way a customer's key leaves the process: `send()`, and `call_provider()` on top of it.

`send()` takes the address only from the egress allow-list, never follows a redirect, applies
the connect and read timeouts, and retries only where a retry cannot double-bill: on 429, 5xx
and 529 answers and on connections that never opened. A read timeout is not retried (the
provider may have done the work); 401/403 are not retried (the key will not get better).
Before anything is sent, the exact body and headers are searched for every live key other than
the one for this request's provider, in any encoding: a request carrying one is refused
(`key_leak_blocked`), so a key one provider echoed can never reach another.
Every message that leaves this module is redacted, and the key is read from the
ProviderSecret only while a request is being built. Request headers are never logged.

A streamed call (`ModelCall.stream`) is sent and retried the same way; once a 2xx answer's
headers arrive, its server-sent events are read as they come (`on_text` hears each piece of
text) and nothing is retried: the provider is doing the work.
"""

from __future__ import annotations

import email.utils
import functools
import http.cookiejar
import json
import logging
import math
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from runs.providers.anthropic import ANTHROPIC
from runs.providers.base import (
    EGRESS_REFUSED,
    KEY_LEAK_BLOCKED,
    PROVIDER_AUTH_FAILED,
    PROVIDER_ERROR,
    TIMEOUT,
    CallStopped,
    ModelCall,
    ModelResult,
    ParsedAnswer,
    ProviderError,
    StreamBrokeOff,
    UnexpectedAnswer,
    WireProtocol,
    error_summary,
)
from runs.providers.egress import Destination, EgressRefused, destination_of, provider_base_url
from runs.providers.openai import OPENAI
from swrly import metrics
from swrly.keys.redaction import foreign_key_in, redact
from swrly.keys.secret import ProviderSecret
from swrly.providers import (
    GATEWAY_HEADER_PREFIXES,
    PROVIDERS,
    RETRY_AFTER_HEADERS,
    WireFormat,
    request_id_header_names,
)

logger = logging.getLogger(__name__)
security_log = logging.getLogger("swrly.security")

# The code for each wire format; which format a provider speaks is the registry's to say.
_PROTOCOLS: dict[WireFormat, WireProtocol] = {p.wire: p for p in (ANTHROPIC, OPENAI)}

BACKOFF_BASE = 0.5  # seconds; the ceiling of the first retry's random delay
BACKOFF_CAP = 8.0  # the largest random delay
RETRY_AFTER_CAP = 30.0  # a provider's retry-after is honoured up to this many seconds
USER_AGENT = "swrly"
REQUEST_ID_LIMIT = 200


@dataclass(frozen=True)
class Delivery:
    """A 2xx answer and what it took to get it."""

    response: httpx.Response  # a streamed answer's body is still unread: close it when done
    attempts: int
    latency_ms: int
    destination: Destination
    started: float  # time.monotonic() when the first attempt began
    attempt_started: float  # time.monotonic() when the attempt that answered began


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verified TLS context for every call: building one (loading CA roots) takes ~20 ms."""
    return httpx.create_ssl_context()


class _NoCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that never stores anything.

    The pooled clients serve every tenant's runs: a cookie one provider answer set (a load
    balancer's affinity cookie, a session) must never be sent with another request, so nothing
    a response carries is kept, and a cookie set by hand is dropped too.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Ignore every Set-Cookie."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        """Ignore any cookie set by hand."""


KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default, made explicit)
MAX_CONNECTIONS = 100  # per provider and process; a worker's threads share them


def _new_pooled_client() -> httpx.Client:
    """A client for one provider's calls in this process.

    It ignores proxy settings from the environment (trust_env=False): a key goes only to the
    allow-listed address, never through a proxy an environment variable names. It has no
    default headers, auth or base URL: the address and the key are set on each request by
    send(), so a client shared by every run carries nothing from one to the next but open
    connections (and no cookies: _NoCookieJar). HTTP/2 where the provider offers it (TLS ALPN).
    """
    return httpx.Client(
        follow_redirects=False,
        verify=_tls_context(),
        trust_env=False,
        http2=True,
        cookies=_NoCookieJar(),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
    )


# (process id, provider) -> that provider's client in this process. A forked child (Celery
# prefork) finds only its parent's entries, under another pid: it builds its own and never
# sends on a connection its parent opened. The parent's entries are left untouched (never
# closed from the child, which would tear down connections the parent still uses).
_pooled: dict[tuple[int, str], httpx.Client] = {}
_pooled_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    """A fresh lock after fork: one held by another thread of the parent would never be freed."""
    global _pooled_lock
    _pooled_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def pooled_client(provider: str) -> httpx.Client:
    """This process's pooled client for `provider`, created on first use (thread-safe).

    Keep-alive connections (and HTTP/2 streams) are reused across steps and runs, so a call
    does not pay a new TCP and TLS handshake each time. Never close it: it lives as long as the
    process.
    """
    key = (os.getpid(), provider)
    client = _pooled.get(key)
    if client is None:
        with _pooled_lock:
            client = _pooled.get(key)
            if client is None:
                client = _pooled[key] = _new_pooled_client()
    return client


class ProviderClients:
    """The process's pooled provider clients, lent to one run (`with provider_client() as c`).

    send() takes the client for each call's provider from it; leaving the block closes nothing,
    since the clients outlive the run.
    """

    __slots__ = ()

    def for_provider(self, provider: str) -> httpx.Client:
        """The pooled client for `provider` in this process."""
        return pooled_client(provider)

    def __enter__(self) -> ProviderClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Nothing to close: the pooled clients serve the next run too."""


def provider_client() -> ProviderClients:
    """The pooled provider clients, as a context manager used once per run.

    Kept as a context manager so a run's call shape (`with provider_client() as client:`) does
    not change: the clients it lends are process-wide and stay open when the block ends.
    """
    return ProviderClients()


def is_retryable(status: int) -> bool:
    """Rate limits, server errors and overload (Anthropic's 529): the request was not served."""
    return status == 429 or 500 <= status <= 599


def backoff_delay(retry: int) -> float:
    """Full-jitter exponential back-off before retry number `retry` (1-based)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1))
    return random.uniform(0.0, ceiling)  # noqa: S311  (jitter spreads load; it guards nothing)


def _retry_after_value(name: str, value: str, per_unit: float) -> float | None:
    value = value.strip()
    try:
        return float(value) * per_unit
    except ValueError:
        pass
    if not name.endswith("retry-after"):
        return None  # only retry-after may be an HTTP date
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The delay a provider asked for, capped at RETRY_AFTER_CAP; None when absent or unreadable.

    `retry-after-ms` (OpenAI's finer-grained variant) or `retry-after` (seconds or an HTTP date),
    as sent or under a gateway's prefix (swrly.providers: RETRY_AFTER_HEADERS,
    GATEWAY_HEADER_PREFIXES).
    """
    seconds: float | None = None
    for prefix in GATEWAY_HEADER_PREFIXES:
        for name, per_unit in RETRY_AFTER_HEADERS:
            if prefix + name in headers:
                seconds = _retry_after_value(name, headers[prefix + name], per_unit)
                if seconds is not None:
                    break
        if seconds is not None:
            break
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def response_request_id(headers: httpx.Headers, protocol: WireProtocol) -> str:
    """The provider's request id from its own header or a gateway's renaming ('' if none)."""
    for name in request_id_header_names(protocol.wire):
        value = headers.get(name, "").strip()
        if value:
            return redact(value)[:REQUEST_ID_LIMIT]
    return ""


def _request_id(response: httpx.Response | None, protocol: WireProtocol) -> str:
    if response is None:
        return ""
    return response_request_id(response.headers, protocol)


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


@dataclass(frozen=True)
class _TransportFailure:
    """No answer: `code` ends the call, None means the request never left (retry)."""

    code: str | None
    reason: str


def _post(
    client: httpx.Client,
    provider: str,
    url: str,
    protocol: WireProtocol,
    secret: ProviderSecret,
    content: bytes,
    timeout: httpx.Timeout,
    stream: bool = False,
) -> httpx.Response | _TransportFailure:
    """One POST. Transport errors come back as values, so that the ProviderError raised for
    them does not chain httpx's exception, whose request carries the key in its headers.

    With `stream`, a 2xx answer's body is left unread (the caller reads its events and closes
    it); any other answer is read whole, as without."""
    try:
        request = client.build_request(
            "POST",
            url,
            content=content,
            headers={**_headers(stream), **protocol.wire.auth_headers(secret.reveal())},
            timeout=timeout,
        )
        # auth=None: a caller's client cannot add credentials.
        response = client.send(
            request,
            stream=stream,
            follow_redirects=False,
            auth=None,
        )
        if stream and not 200 <= response.status_code <= 299:
            try:
                response.read()
            finally:
                response.close()
        return response
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # The request never left, so a retry cannot make the provider work twice.
        return _TransportFailure(
            None, f"could not connect to {provider} ({type(exc).__name__}: {exc})"
        )
    except httpx.TimeoutException as exc:
        return _TransportFailure(
            TIMEOUT,
            f"{provider} did not answer in time ({type(exc).__name__}; read timeout "
            f"{timeout.read} s); not retried: the provider may have done and billed the work",
        )
    except httpx.HTTPError as exc:
        return _TransportFailure(
            PROVIDER_ERROR, f"the connection to {provider} failed ({type(exc).__name__}: {exc})"
        )


def _headers(stream: bool = False) -> dict[str, str]:
    """The request's headers but the key's."""
    return {
        "accept": "text/event-stream" if stream else "application/json",
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent: what the leak check searches is what leaves."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@sensitive_variables("key_headers", "headers", "text")
def _carries_foreign_key(
    protocol: WireProtocol, secret: ProviderSecret, content: bytes, stream: bool = False
) -> bool:
    """Whether the body or headers carry a live key other than `secret`'s, in any encoding."""
    key_headers = protocol.wire.auth_headers(secret.reveal())
    headers = [f"{name}: {value}" for name, value in {**_headers(stream), **key_headers}.items()]
    text = "\n".join([content.decode("utf-8", errors="replace"), *headers])
    return foreign_key_in(text, own=secret)


def send(
    provider: str,
    *,
    protocol: WireProtocol,
    secret: ProviderSecret,
    body: dict[str, Any],
    client: httpx.Client | ProviderClients | None = None,
    pause: Callable[[float], None] = time.sleep,
    stream: bool = False,
) -> Delivery:
    """POST `body` to `provider`'s allowed base URL + `protocol.wire.path`, with bounded retries.

    Returns the first 2xx answer; raises ProviderError for everything else. With `stream`, the
    request accepts `text/event-stream` and the answer's body is left unread: the caller closes
    it. Without `client`, or with the ProviderClients that provider_client() lends a run, the
    call goes through this process's pooled client for `provider` (pooled_client). A caller's
    own httpx.Client may be passed instead: redirects, timeouts and auth are still set per
    request, so its defaults cannot change where or how the key travels. `pause(seconds)` is how
    it waits between attempts (the back-off, or the provider's retry-after): time.sleep unless
    the caller passes another (the tests pass a recorder).
    """
    started = time.monotonic()
    try:
        url = provider_base_url(provider) + protocol.wire.path
    except EgressRefused as exc:
        raise ProviderError(
            EGRESS_REFUSED, f"egress refused: {exc}", latency_ms=_elapsed_ms(started)
        ) from None
    timeout = httpx.Timeout(
        connect=settings.PROVIDER_CONNECT_TIMEOUT,
        read=settings.PROVIDER_READ_TIMEOUT,
        write=settings.PROVIDER_READ_TIMEOUT,
        pool=settings.PROVIDER_CONNECT_TIMEOUT,
    )
    destination = destination_of(url)
    max_retries = max(0, int(settings.PROVIDER_MAX_RETRIES))
    content = _encode(body)
    if _carries_foreign_key(protocol, secret, content, stream):
        security_log.warning(
            "a %s request carrying another provider's live key was refused before sending",
            provider,
        )
        raise ProviderError(
            KEY_LEAK_BLOCKED,
            f"the {provider} request was not sent: it carried a key given for another "
            "provider (an earlier step's answer or the input echoed it)",
            latency_ms=_elapsed_ms(started),
        )
    attempts = 0
    last_response: httpx.Response | None = None

    def failed(code: str, message: str) -> ProviderError:
        return ProviderError(
            code,
            message,
            http_status=last_response.status_code if last_response is not None else None,
            request_id=_request_id(last_response, protocol),
            attempts=attempts,
            latency_ms=_elapsed_ms(started),
            destination=destination,
        )

    if client is None or isinstance(client, ProviderClients):
        client = pooled_client(provider)
    while True:
        attempts += 1
        attempt_started = time.monotonic()
        outcome = _post(client, provider, url, protocol, secret, content, timeout, stream)
        if isinstance(outcome, _TransportFailure):
            metrics.provider_request(provider, attempt_started, failure=outcome.code)
            if outcome.code is not None:
                raise failed(outcome.code, outcome.reason)
            reason, delay = outcome.reason, None
        else:
            response = last_response = outcome
            status = response.status_code
            metrics.provider_request(provider, attempt_started, status=status)
            if 200 <= status <= 299:
                return Delivery(
                    response, attempts, _elapsed_ms(started), destination, started, attempt_started
                )
            if status in (401, 403):
                raise failed(
                    PROVIDER_AUTH_FAILED,
                    f"{provider} refused the key (HTTP {status}): {error_summary(response.text)}",
                )
            if 300 <= status <= 399:
                raise failed(
                    PROVIDER_ERROR,
                    f"{provider} answered with a redirect (HTTP {status}), which is not "
                    "followed: a key goes only to the configured base URL",
                )
            reason = f"{provider} answered HTTP {status}: {error_summary(response.text)}"
            if not is_retryable(status):
                raise failed(PROVIDER_ERROR, reason)
            delay = retry_after_seconds(response.headers)
        if attempts > max_retries:
            raise failed(PROVIDER_ERROR, f"{reason} (gave up after {attempts} attempts)")
        if delay is None:
            delay = backoff_delay(attempts)
        logger.warning(
            "%s call attempt %d of %d failed (%s); retrying in %.2f s",
            provider,
            attempts,
            max_retries + 1,
            reason[:200],
            delay,
        )
        pause(delay)


def call_provider(
    provider: str,
    *,
    secret: ProviderSecret,
    call: ModelCall,
    client: httpx.Client | ProviderClients | None = None,
    pause: Callable[[float], None] = time.sleep,
    on_text: Callable[[str], None] | None = None,
) -> ModelResult:
    """Run one model call with the customer's key; ProviderError (redacted) when it fails.

    `client` and `pause` are passed on to send(). A streamed call (`call.stream`) gives each
    piece of the answer's text to `on_text` as it arrives (unredacted: the caller redacts what it
    keeps); an exception `on_text` raises stops the call (the connection is closed) and reaches
    the caller as it is.
    """
    spec = PROVIDERS.get(provider) if isinstance(provider, str) else None
    if spec is None:
        raise ProviderError(EGRESS_REFUSED, f"egress refused: unknown provider {provider!r}")
    protocol = _PROTOCOLS[spec.wire]
    delivery = send(
        provider,
        protocol=protocol,
        secret=secret,
        body=protocol.build_body(call),
        client=client,
        pause=pause,
        stream=call.stream,
    )
    response = delivery.response
    if call.stream and _is_event_stream(response):
        return _read_stream(provider, protocol, delivery, on_text)
    if call.stream:  # a gateway that answered the whole body at once: read it as one answer
        _read_whole(provider, protocol, delivery)
    try:
        answer = protocol.parse_answer(response.json())
    except (ValueError, RecursionError) as exc:  # UnexpectedAnswer and JSON errors
        raise ProviderError(
            PROVIDER_ERROR,
            f"{provider} answered HTTP {response.status_code} with a body that is not a "
            f"{protocol.wire.name} answer ({exc}): {error_summary(response.text)}",
            http_status=response.status_code,
            request_id=_request_id(response, protocol),
            attempts=delivery.attempts,
            latency_ms=delivery.latency_ms,
            destination=delivery.destination,
        ) from None
    return _result(answer, protocol, delivery, delivery.latency_ms)


def _result(
    answer: ParsedAnswer,
    protocol: WireProtocol,
    delivery: Delivery,
    latency_ms: int,
    ttft_ms: int | None = None,
) -> ModelResult:
    return ModelResult(
        text=answer.text,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        request_id=_request_id(delivery.response, protocol),
        http_status=delivery.response.status_code,
        latency_ms=latency_ms,
        attempts=delivery.attempts,
        destination=delivery.destination,
        ttft_ms=ttft_ms,
    )


def _is_event_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "text/event-stream"


_LINE_END = re.compile(r"\r\n|\r|\n")


def sse_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The event stream's lines from its decoded text, split only where the SSE standard ends a
    line (CRLF, CR, LF): not at the other characters `str.splitlines` (and httpx's iter_lines)
    breaks at, such as U+2028, which JSON may carry unescaped inside a string. A leading BOM is
    dropped. A CR at the end of a chunk waits for the next one (it may start with LF)."""
    pending: list[str] = []
    carry, first = False, True
    for chunk in chunks:
        if first and chunk:
            chunk, first = chunk.removeprefix("\ufeff"), False
        if carry:
            chunk, carry = "\r" + chunk, False
        if chunk.endswith("\r"):
            chunk, carry = chunk[:-1], True
        parts = _LINE_END.split(chunk)
        if len(parts) == 1:
            pending.append(chunk)
            continue
        yield "".join([*pending, parts[0]])
        yield from parts[1:-1]
        pending = [parts[-1]]
    if carry:
        yield "".join(pending)
        pending = []
    if "".join(pending):
        yield "".join(pending)


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-sent events as (event name, data) pairs, from the body's lines.

    As the HTML standard's event-stream interpretation says: `data:` lines join with newlines,
    one leading space after the colon is dropped, `:` lines are comments, a blank line ends an
    event, an event without data is not dispatched, and an unfinished last event is dropped.
    """
    name = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def _read_whole(provider: str, protocol: WireProtocol, delivery: Delivery) -> None:
    try:
        delivery.response.read()
    except httpx.HTTPError as exc:
        raise _stream_failure(provider, protocol, delivery, None, exc) from None
    finally:
        delivery.response.close()


# Events read (and ignored) after the answer's last one, so that the body ends and its
# connection goes back to the pool; a server that keeps sending past them is cut off.
EVENTS_AFTER_THE_END = 16


def _read_stream(
    provider: str,
    protocol: WireProtocol,
    delivery: Delivery,
    on_text: Callable[[str], None] | None,
) -> ModelResult:
    """The streamed answer, read to its last event; on_text hears each piece of text.

    An exception from on_text stops the call: CallStopped, with the caller's exception as its
    cause and what the call had done."""
    response = delivery.response
    reader = protocol.stream_reader()
    ttft_ms: int | None = None
    after_the_end = 0
    try:
        for event, data in sse_events(sse_lines(response.iter_text())):
            if reader.finished:
                after_the_end += 1
                if after_the_end > EVENTS_AFTER_THE_END:
                    break
                continue
            try:
                text = reader.read(event, data)
            except StreamBrokeOff as broke_off:
                raise _stream_failure(
                    provider,
                    protocol,
                    delivery,
                    ttft_ms,
                    message=f"{provider} broke off its answer with an error event: "
                    f"{error_summary(str(broke_off))}",
                ) from None
            except (ValueError, RecursionError) as exc:  # UnexpectedAnswer
                raise _not_an_answer(provider, protocol, delivery, ttft_ms, exc) from None
            if not text:
                continue
            if ttft_ms is None:
                ttft_ms = _elapsed_ms(delivery.attempt_started)
            if on_text is not None:
                try:
                    on_text(text)
                except Exception as stop:
                    raise CallStopped(**_call_facts(protocol, delivery, ttft_ms)) from stop
        try:
            if not reader.finished:
                raise UnexpectedAnswer("the stream ended before the answer's last event")
            answer = reader.answer()
        except ValueError as exc:
            raise _not_an_answer(provider, protocol, delivery, ttft_ms, exc) from None
    except httpx.HTTPError as exc:
        raise _stream_failure(provider, protocol, delivery, ttft_ms, exc) from None
    finally:
        response.close()
    return _result(answer, protocol, delivery, _elapsed_ms(delivery.started), ttft_ms)


def _call_facts(protocol: WireProtocol, delivery: Delivery, ttft_ms: int | None) -> dict[str, Any]:
    """What a call that got a 2xx answer had done, for a ProviderError or CallStopped."""
    return {
        "http_status": delivery.response.status_code,
        "request_id": _request_id(delivery.response, protocol),
        "attempts": delivery.attempts,
        "latency_ms": _elapsed_ms(delivery.started),
        "destination": delivery.destination,
        "ttft_ms": ttft_ms,
    }


def _not_an_answer(
    provider: str,
    protocol: WireProtocol,
    delivery: Delivery,
    ttft_ms: int | None,
    exc: Exception,
) -> ProviderError:
    return _stream_failure(
        provider,
        protocol,
        delivery,
        ttft_ms,
        message=f"{provider} answered HTTP {delivery.response.status_code} with an event stream "
        f"that is not a {protocol.wire.name} answer ({exc})",
    )


def _stream_failure(
    provider: str,
    protocol: WireProtocol,
    delivery: Delivery,
    ttft_ms: int | None,
    exc: httpx.HTTPError | None = None,
    *,
    message: str = "",
) -> ProviderError:
    """The ProviderError for an answer that failed after its 2xx headers: never retried."""
    code = PROVIDER_ERROR
    if isinstance(exc, httpx.TimeoutException):
        code = TIMEOUT
        message = (
            f"{provider} stopped sending its answer ({type(exc).__name__}; read timeout "
            f"{settings.PROVIDER_READ_TIMEOUT} s between events); not retried: the provider "
            "may have done and billed the work"
        )
    elif exc is not None:
        message = f"the answer from {provider} broke off ({type(exc).__name__}: {exc})"
    return ProviderError(code, message, **_call_facts(protocol, delivery, ttft_ms))
