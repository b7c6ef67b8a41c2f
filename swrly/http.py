"""Facts about the HTTP request that several parts need in the same form."""

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The peer address. Behind a proxy, the proxy must set REMOTE_ADDR (docs/operations.md)."""
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request: HttpRequest) -> str:
    # NUL cannot be stored (PostgreSQL text); a client may still send it in a header.
    return request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")[:512]
