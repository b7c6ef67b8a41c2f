"""Logs a machine can read: a request id that follows a run, and JSON lines (LOG_FORMAT=json).

The request id comes from the client's `X-Request-Id` (when it is a plain token of up to 64
characters) or is made here; it is answered in the response's `X-Request-Id`, rides along with
every Celery task published while the request is handled (a message header, never a key), and
is restored in the worker while the task runs, so one id ties the API call, the broker message
and the worker's provider calls together. Log records are redacted when they are created
(swrly.keys.redaction), before any formatter sees them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-Id"
TASK_HEADER = "swrly_request_id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Probes are answered often and say nothing worth a line each (swrly/health.py).
_NOT_LOGGED = frozenset({"/healthz", "/readyz"})

access_log = logging.getLogger("swrly.access")
# A django.security reason for a 4xx (a CSRF failure, a disallowed host), for the access line.
REASON_ATTRIBUTE = "swrly_log_reason"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def accept_request_id(value: str | None) -> str:
    """The client's id when it is safe to log and echo; otherwise a new one."""
    if value and _VALID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request id for everything this request logs or queues, and logs one access line.

    The access line (`swrly.access`, INFO: method, path, status, milliseconds) is written under
    the request id, so a run's POST has a line of its own that the worker's lines for the run
    share an id with. The path only: a query string may hold what should not be logged.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = accept_request_id(request.headers.get(HEADER))
        token = request_id.set(rid)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            if request.path not in _NOT_LOGGED:
                reason = getattr(request, REASON_ATTRIBUTE, "")
                access_log.info(
                    "%s %s %s %.0fms%s",
                    request.method,
                    _loggable_path(request.path),
                    response.status_code,
                    (time.monotonic() - started) * 1000,
                    f"; {_loggable_path(reason)}" if reason else "",
                )
        finally:
            request_id.reset(token)
        response[HEADER] = rid
        return response


def _loggable_path(path: str) -> str:
    """The path with control characters escaped (no forged lines in plain logs), cut at 200."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", path[:200])


class OneLinePerClientError(logging.Filter):
    """Leaves a 4xx response to its access line: Django's own lines for it are dropped.

    Django logs every 4xx again (`django.request` "Not Found: /x", with the traceback of a
    PermissionDenied; `django.security.*` for a CSRF failure or a disallowed host; runserver's
    `django.server` line), so each client error was logged two to four times. A
    `django.security` line's reason is kept: it is added to the access line of its request.
    5xx lines are untouched.
    """

    _FOLDED = ("django.request", "django.security", "django.server")

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not (isinstance(status, int) and 400 <= status < 500):
            return True
        if not record.name.startswith(self._FOLDED):
            return True
        request = getattr(record, "request", None)
        path = getattr(request, "path", None)
        if record.name.startswith("django.security") and isinstance(path, str):
            reason = (record.getMessage().splitlines() or [""])[0]
            setattr(request, REASON_ATTRIBUTE, reason.removesuffix(f": {path}"))
        return False


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or None,
            "process": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(*, log_format: str, level: str, levels: Mapping[str, str] | None = None) -> dict:
    """The LOGGING setting: console output, plain or JSON, with request ids, one line per 4xx.

    `levels` sets single loggers' levels (LOG_LEVELS: `celery.beat=WARNING`). The `django`
    logger keeps Django's error e-mails (mail_admins, DEBUG off) but not Django's own console
    handler, which printed its records a second time with DEBUG on.
    """
    formatters = {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "swrly.logs.JsonFormatter"},
    }
    log_format = {"text": "plain"}.get(log_format, log_format)
    if log_format not in formatters:
        raise ValueError(f"LOG_FORMAT must be plain (or text) or json, not {log_format!r}")
    loggers: dict[str, dict[str, Any]] = {
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        # runserver's own request lines repeat the access lines: only its errors are kept.
        "django.server": {"level": "WARNING", "propagate": True},
    }
    for name, logger_level in (levels or {}).items():
        loggers.setdefault(name, {})["level"] = logger_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "swrly.logs.RequestIdFilter"},
            "one_line_per_client_error": {"()": "swrly.logs.OneLinePerClientError"},
            "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        },
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id", "one_line_per_client_error"],
            },
            "mail_admins": {
                "level": "ERROR",
                "filters": ["require_debug_false"],
                "class": "django.utils.log.AdminEmailHandler",
            },
        },
        "loggers": loggers,
        "root": {"handlers": ["console"], "level": level},
    }


@contextlib.contextmanager
def request_id_scope(value: str | None) -> Iterator[None]:
    """Log with `value` (or a new id, when it is not a safe one) as the request id."""
    token = request_id.set(accept_request_id(value))
    try:
        yield
    finally:
        request_id.reset(token)


def keep_logging_setting(**_: Any) -> None:
    """Celery's setup_logging signal: a worker keeps the LOGGING setting as Django applied it.

    Without a receiver, a worker replaces the root logger's handlers with its own format, which
    has neither JSON (LOG_FORMAT=json is lost) nor the request id. Connecting this tells Celery
    that logging is configured: its --loglevel is then ignored for LOG_LEVEL, and its start-up
    banner (plain text on stdout) is left out with `celery --quiet`.
    """


def stamp_task_headers(headers: dict | None = None, **_: Any) -> None:
    """before_task_publish: carry the current request id in the task's message headers."""
    rid = request_id.get()
    if headers is not None and rid:
        headers[TASK_HEADER] = rid
