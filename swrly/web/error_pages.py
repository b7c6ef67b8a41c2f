"""Error pages: JSON in the API's one error shape under /api/, the HTML layout elsewhere."""

from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404
from django.views import defaults


def _api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _api(request):
        return _json(404, "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _api(request):
        return _json(500, "server_error", "Server error.")
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _api(request):
        return _json(400, "bad_request", "Bad request.")
    return defaults.bad_request(request, exception)


class NotFoundPageMiddleware:
    """Swrly's own 404 page (templates/404.html) whatever DEBUG says.

    With DEBUG on, Django answers an Http404 with its technical "yellow" page instead of
    handler404. This middleware (the innermost, so the response still passes the CSP and other
    middleware) renders `not_found` instead: for an Http404 a view raises, and for a path no
    URL pattern matches. Under /api/ nothing changes: the API keeps its JSON 404s.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and getattr(request, "resolver_match", None) is None
            and not _api(request)
        ):
            # No URL pattern matched: Django rendered its technical 404 page.
            return not_found(request, Resolver404({"path": request.path_info}))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG and isinstance(exception, Http404) and not _api(request):
            return not_found(request, exception)
        return None
