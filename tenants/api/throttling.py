"""Per-token API rate limit (the per-address one runs earlier, in swrly.middleware)."""

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class TokenRateThrottle(SimpleRateThrottle):
    """API_RATE_PER_TOKEN requests per token; 429 with Retry-After beyond it."""

    scope = "token"

    def get_rate(self) -> str | None:
        return settings.API_RATE_PER_TOKEN or None

    def get_cache_key(self, request: Request, view: object) -> str | None:
        token = getattr(request, "auth", None)
        if token is None or not hasattr(token, "pk"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": token.pk}
