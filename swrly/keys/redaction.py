"""Redaction by value: a provider key held in memory never reaches a log or an error report.

Two mechanisms share one `redact()`:
- every log record is redacted as it is created (a record factory installed at start-up), so
  the rule holds for every logger and every handler, including third-party ones;
- the exception reporter filter (DEFAULT_EXCEPTION_REPORTER_FILTER) redacts traceback local
  variables and request parameters, and the exception reporter (DEFAULT_EXCEPTION_REPORTER)
  redacts the finished error page and e-mail as a whole: exception messages, request bodies
  shown in locals, everything.
`redact()` replaces the exact value of every live `ProviderSecret`, and also masks anything
shaped like a provider key, held or not. Field names alone are not trusted: a provider's error
message or a field called `anthropic_api_key` is caught by its value.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from swrly.keys.secret import live_secrets

REDACTED = "[REDACTED]"
# sk-ant-…, sk-proj-…, sk-… (Anthropic and OpenAI key shapes).
PROVIDER_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9][A-Za-z0-9_\-]{15,}")


def redact(text: str, *, html_escaped: bool = False) -> str:
    """`text` with every live secret and every provider-key-shaped string replaced.

    With `html_escaped`, the HTML-escaped form of each secret is replaced too.
    """
    for value in sorted(live_secrets(), key=len, reverse=True):
        forms = {value, html.escape(value)} if html_escaped else {value}
        for form in forms:
            if form in text:
                text = text.replace(form, REDACTED)
    return PROVIDER_KEY_PATTERN.sub(REDACTED, text)


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


class RedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, plus redaction by value of frame variables and request parameters."""

    def get_post_parameters(self, request: Any) -> Any:
        params = super().get_post_parameters(request)
        if not params:
            return params
        cleansed = params.copy()
        for name in cleansed:
            value = cleansed[name]
            if isinstance(value, str) and redact(value) != value:
                cleansed[name] = REDACTED
        return cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        cleansed = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            try:
                shown = value if isinstance(value, str) else repr(value)
            except Exception:
                shown = ""
            redacted = redact(shown)
            cleansed.append((name, redacted if redacted != shown else value))
        return cleansed


class RedactingExceptionReporter(ExceptionReporter):
    """Django's error page and e-mail, redacted as a whole after rendering."""

    def get_traceback_text(self) -> str:
        return redact(super().get_traceback_text())

    def get_traceback_html(self) -> str:
        return redact(super().get_traceback_html(), html_escaped=True)
