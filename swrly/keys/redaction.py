"""Redaction by value: a provider key held in memory never reaches a log, a page or a report.

Every mechanism shares one `redact()`:
- every log record is redacted as it is created (a record factory installed at start-up), so
  the rule holds for every logger and every handler, including third-party ones;
- the exception reporter filter (DEFAULT_EXCEPTION_REPORTER_FILTER) works whatever DEBUG says:
  it honours `sensitive_variables` / `sensitive_post_parameters` on the technical 500 page too,
  hides every POST parameter and the body of API writes, and redacts every frame variable; the
  exception reporter (DEFAULT_EXCEPTION_REPORTER) redacts the finished error page and e-mail as
  a whole: exception messages, request bodies shown in locals, everything;
- provider answers (successful outputs and error bodies) are redacted before they are stored or
  passed to a later step.
`redact()` replaces every live key (see `swrly.keys.secret`: held by a ProviderSecret, or made
during the request or task still running) in every form it can be echoed in (raw, JSON-, HTML-
or URL-escaped, base64 or hex: `swrly.keys.encodings`), and also masks anything shaped like a
provider key, held or not. Field names alone are not trusted: a provider's error message or a
field called `anthropic_api_key` is caught by its value.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.utils.datastructures import MultiValueDict
from django.utils.safestring import SafeString
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from swrly.keys.secret import ProviderSecret, live_matchers

REDACTED = "[REDACTED]"
# sk-ant-…, sk-proj-…, sk-… (Anthropic and OpenAI key shapes).
PROVIDER_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9][A-Za-z0-9_\-]{15,}")


def redact(text: str) -> str:
    """`text` with every live key, in any encoding, and every provider-key-shaped string
    replaced by REDACTED."""
    for matcher in live_matchers():
        text = matcher.sub(REDACTED, text)
    return PROVIDER_KEY_PATTERN.sub(REDACTED, text)


def secret_in(text: str, *, secret: ProviderSecret) -> bool:
    """Whether `secret`'s key appears in `text`, in any encoding."""
    return any(matcher.found_in(text) for matcher in live_matchers(only=secret)[:1])


def foreign_key_in(text: str, *, own: ProviderSecret) -> bool:
    """Whether a live key other than `own`'s appears in `text`, in any encoding."""
    return any(matcher.found_in(text) for matcher in live_matchers(excluding=own))


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string: keep what can be shown, redacted
        message = f"{record.msg!r} {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


_installed_factory: Any = None


def install_log_redaction() -> None:
    """Redact every log record when it is created. Idempotent."""
    global _installed_factory
    current = logging.getLogRecordFactory()
    if current is _installed_factory:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(current(*args, **kwargs))

    _installed_factory = factory
    logging.setLogRecordFactory(factory)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def is_api_write(request: Any) -> bool:
    """Whether `request` writes through the API: its body and parameters never reach a report."""
    return (
        request is not None
        and getattr(request, "method", "GET") not in SAFE_METHODS
        and getattr(request, "path", "").startswith("/api/")
    )


def _read_body(request: Any) -> bytes | None:
    """The body of an API write, when it was read (never reads the stream itself)."""
    if not is_api_write(request):
        return None
    body = getattr(request, "__dict__", {}).get("_body")
    return body if isinstance(body, bytes) and body else None


class RedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, active whatever DEBUG says, plus redaction by value everywhere.

    - `sensitive_variables` and `sensitive_post_parameters` are honoured on the DEBUG technical
      500 page too (Django's own filter turns itself off with DEBUG);
    - every POST parameter of an API write is hidden, and so is its raw body wherever it shows
      up as a frame variable;
    - every other POST parameter and frame variable whose text contains a live key (in any
      encoding) or a provider-key shape is replaced by its redacted text.
    """

    def is_active(self, request: Any) -> bool:
        return True

    def get_post_parameters(self, request: Any) -> Any:
        params = super().get_post_parameters(request)
        if not params or not isinstance(params, MultiValueDict):  # request.POST, a QueryDict
            return params
        cleansed = params.copy()
        hide_all = is_api_write(request)
        for name, values in list(cleansed.lists()):
            if hide_all or any(isinstance(v, str) and redact(v) != v for v in values):
                cleansed.setlist(name, [self.cleansed_substitute])
        return cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        body = _read_body(request)
        body_text = body.decode("utf-8", errors="replace") if body is not None else None
        cleansed = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if body is not None and isinstance(value, bytes | str) and value in (body, body_text):
                cleansed.append((name, f"{REDACTED} (the request body)"))
                continue
            try:
                shown = value if isinstance(value, str) else repr(value)
            except Exception:
                shown = ""
            redacted = redact(shown)
            cleansed.append((name, redacted if redacted != shown else value))
        return cleansed


class RedactingExceptionReporter(ExceptionReporter):
    """Django's error page and e-mail, redacted as a whole after rendering."""

    # Still safe strings: REDACTED is plain text that needs no escaping.
    def get_traceback_text(self) -> SafeString:
        return SafeString(redact(super().get_traceback_text()))

    def get_traceback_html(self) -> SafeString:
        return SafeString(redact(super().get_traceback_html()))
