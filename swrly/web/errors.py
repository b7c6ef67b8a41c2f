"""One JSON error shape for every API error: {"error": {"code", "message", "fields"}}."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError, connection
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def _fields(detail: Any) -> dict:
    if isinstance(detail, dict):
        return {
            str(key): [str(item) for item in value] if isinstance(value, list) else [str(value)]
            for key, value in detail.items()
        }
    return {}


class DatabaseUnavailable(exceptions.APIException):
    status_code = 503
    default_code = "database_unavailable"
    default_detail = "The database did not answer. Try again."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        # A lost connection (failover, a proxy restart, pg_terminate_backend), a deadlock or a
        # statement timeout: transient, so a clean 503 rather than a 500. The transaction the
        # error ended was rolled back; the broken connection is dropped so the next request
        # opens a fresh one.
        log.warning("database error, answered 503: %s", type(exc).__name__, exc_info=exc)
        connection.close_if_unusable_or_obsolete()
        exc = DatabaseUnavailable()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):  # e.g. a service found the authority lost meanwhile
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if isinstance(exc, DatabaseUnavailable) and response is not None:
        response["Retry-After"] = "1"
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    detail = exc.detail
    if isinstance(detail, dict | list):
        code = "invalid"
        message = "The request is not valid."
        fields = _fields(detail if isinstance(detail, dict) else {"non_field_errors": detail})
    else:
        code = getattr(detail, "code", None) or exc.default_code
        message = str(detail)
        fields = {}
    response.data = {"error": {"code": str(code), "message": message, "fields": fields}}
    return response
