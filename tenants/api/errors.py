"""One JSON error shape for every API error: {"error": {"code", "message", "fields"}}."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _fields(detail: Any) -> dict:
    if isinstance(detail, dict):
        return {
            str(key): [str(item) for item in value] if isinstance(value, list) else [str(value)]
            for key, value in detail.items()
        }
    return {}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):  # e.g. a service found the authority lost meanwhile
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
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
