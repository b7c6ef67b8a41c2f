"""The egress allow-list: where a provider call may go, from PROVIDER_BASE_URLS only.

A customer key can only travel to a base URL the operator configured for that provider. A
workflow or a request names a provider, never an address.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from swrly.http import is_loopback
from swrly.providers import BASE_URL_SETTING, PROVIDER_NAMES


class EgressRefused(Exception):
    """The provider has no allowed base URL (or its URL breaks the rules)."""


def base_url_problem(provider: str, url: str, *, debug: bool) -> str | None:
    """Why `url` may not be `provider`'s base URL, or None when it may."""
    if provider not in PROVIDER_NAMES:
        return f"unknown provider {provider!r} (known: {', '.join(PROVIDER_NAMES)})"
    parts = urlsplit(url)
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    if not parts.hostname:
        return "has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if not is_loopback(parts.hostname):
            return "plain http:// is allowed only for a loopback address"
        if not debug:
            return "plain http:// (even on loopback) is allowed only with DEBUG"
        return None
    return f"scheme {parts.scheme!r} is not https"


def provider_base_url(provider: str) -> str:
    """The allowed base URL for `provider` (no trailing slash); EgressRefused otherwise."""
    url = getattr(settings, BASE_URL_SETTING).get(provider)
    if not url:
        raise EgressRefused(f"no base URL is configured for provider {provider!r}")
    problem = base_url_problem(provider, url, debug=settings.DEBUG)
    if problem:
        raise EgressRefused(f"{BASE_URL_SETTING}[{provider}] {problem}")
    return url.rstrip("/")


DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Destination:
    """Where a provider call goes: the scheme, host and port of an allowed base URL."""

    scheme: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """`host:port` (an IPv6 host in brackets), as the run page and the audit log show it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """`scheme://host:port`."""
        return f"{self.scheme}://{self.address}"


def destination_of(url: str) -> Destination:
    """The destination of an allowed URL (the port made explicit: 443 for https, 80 for http)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return Destination(
        scheme=scheme,
        host=(parts.hostname or "").lower(),
        port=parts.port or DEFAULT_PORTS[scheme],
    )


def provider_destination(provider: str) -> Destination:
    """Where `provider`'s calls go, from the allow-list; EgressRefused as provider_base_url."""
    return destination_of(provider_base_url(provider))
