"""Applied around every view: the redaction scope, request size, the API rate limits (per
address and per token, in one Redis round trip) and storable input."""

import hashlib
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict

from swrly.http import client_ip
from swrly.input_limits import UNSTORABLE_MESSAGE, is_unstorable, unstorable_parameters
from swrly.keys.secret import redaction_scope
from swrly.ratelimit import Limit, over_limits


def _api_error(
    status: int,
    code: str,
    message: str,
    fields: dict[str, list[str]] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": code, "message": message, "fields": fields or {}}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class RedactionScopeMiddleware:
    """Keep every key a request carried known to redaction until its response is finished.

    The outermost middleware: a view releases its keys in a `finally` block, but the DEBUG
    technical 500 page and the error e-mail are rendered afterwards, by Django's exception
    handling inside this call. Until it returns they still redact the request's keys.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with redaction_scope():
            return self.get_response(request)


class RequestLimitsMiddleware:
    """413 for a body above DATA_UPLOAD_MAX_MEMORY_SIZE; 429 on /api/ when the address exceeds
    API_RATE_PER_IP or the bearer token API_RATE_PER_TOKEN.

    Both are counted here, before authentication, in one Redis round trip: guessing tokens is
    throttled by address, and a throttled request costs no database work. The token is counted
    by a digest of the credential presented, not by its database row: the same count for a
    valid token, and a wrong secret for someone else's token prefix counts on its own.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        is_api = request.path.startswith("/api/")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            message = f"The request body is larger than {limit} bytes."
            if is_api:
                return _api_error(413, "request_too_large", message)
            return HttpResponse(message, status=413, content_type="text/plain")
        if is_api:
            exceeded = over_limits(_api_limits(request))
            if exceeded is not None:
                limit, wait = exceeded
                return _api_error(
                    429,
                    "throttled",
                    _THROTTLED[limit.scope],
                    headers={"Retry-After": str(max(1, int(wait + 0.999)))},
                )
        return self.get_response(request)


_THROTTLED = {
    "ip": "Too many requests from this address.",
    "token": "Too many requests with this token.",
}


def _api_limits(request: HttpRequest) -> list[Limit]:
    """The counters an API request counts against: its client address and its bearer token."""
    limits = []
    address = client_ip(request)
    if address is not None:
        limits.append(Limit("ip", address, settings.API_RATE_PER_IP))
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() == "bearer" and presented:
        # A digest, so no credential is ever part of a Redis key name.
        digest = hashlib.blake2b(
            presented.encode("utf-8", "surrogatepass"), digest_size=16, person=b"swrly-ratelimit"
        ).hexdigest()
        limits.append(Limit("token", digest, settings.API_RATE_PER_TOKEN))
    return limits


class StorableInputMiddleware:
    """No request parameter may hold a character no database column accepts (NUL, an unpaired
    surrogate): a query-string or form parameter that does answers 400 naming it, before any
    view, form, sign-in backend or audit write sees it; a path that does names nothing (404).

    PostgreSQL refuses such text with an error deep inside the view (a 500). JSON bodies of the
    API get the same check from its parser (swrly/web/parsers.py).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        is_api = request.path.startswith("/api/")
        if is_unstorable(request.path_info):
            if is_api:
                return _api_error(404, "not_found", "Not found.")
            return HttpResponse("Not found.", status=404, content_type="text/plain")
        names = list(unstorable_parameters(_pairs(request.GET)))
        if not is_api and request.method == "POST" and _is_form(request):
            names += unstorable_parameters(_pairs(request.POST))
        if not names:
            return self.get_response(request)
        if is_api:
            return _api_error(
                400,
                "invalid",
                "The request is not valid.",
                {name: [UNSTORABLE_MESSAGE] for name in names},
            )
        message = "; ".join(f"{name}: {UNSTORABLE_MESSAGE}" for name in names)
        return HttpResponse(f"Bad request. {message}", status=400, content_type="text/plain")


def _pairs(params: QueryDict) -> Iterator[tuple[str, str]]:
    return ((name, value) for name, values in params.lists() for value in values)


def _is_form(request: HttpRequest) -> bool:
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
