"""Per-token API rate limit (the per-address one runs earlier, in swrly.middleware)."""

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from swrly.ratelimit import over_limit


class TokenRateThrottle(BaseThrottle):
    """API_RATE_PER_TOKEN requests per token, counted across every web instance; 429 with
    Retry-After beyond it."""

    def allow_request(self, request: Request, view: object) -> bool:
        token = getattr(request, "auth", None)
        if token is None or not hasattr(token, "pk"):
            return True
        self._wait = over_limit(
            scope="token", ident=str(token.pk), rate=settings.API_RATE_PER_TOKEN
        )
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
