"""Where an audit webhook may send: the operator's policy for webhook URLs and addresses.

A URL is checked when the webhook is created and again before every delivery (settings may
have changed since): `https` only (plain `http` only to a loopback host, and only with DEBUG or
AUDIT_WEBHOOK_ALLOW_PRIVATE), no credentials, no fragment, a host allowed by
AUDIT_WEBHOOK_ALLOWED_HOSTS (when set) and not denied by AUDIT_WEBHOOK_DENIED_HOSTS.

Before every delivery the host is resolved and *every* address it resolves to must be public:
private, loopback, link-local, shared, reserved, multicast and unspecified addresses are refused
unless the operator sets AUDIT_WEBHOOK_ALLOW_PRIVATE (loopback is also allowed with DEBUG). The
connection then goes to the address that was checked (the delivery names it in the URL and sends
the host name as Host and TLS SNI), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot steer a delivery elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(ValueError):
    """A webhook URL or address the policy does not allow (the message says why)."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # as written in the URL, lower-case, without brackets
    port: int
    path: str  # path and query, as sent
    netloc: str  # host[:port], for the Host header


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().rstrip(".")
    if not pattern:
        return False
    if pattern.startswith("*."):
        pattern = pattern[1:]
    if pattern.startswith("."):
        return host.endswith(pattern)
    return host == pattern


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_destination(url: str) -> Destination:
    """The URL's parts once the static policy allows it; WebhookRefused otherwise."""
    if not isinstance(url, str) or not url:
        raise WebhookRefused("Enter a URL.")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise WebhookRefused("The URL contains spaces or control characters.")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused("The URL is not valid.") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("https", "http"):
        raise WebhookRefused("The URL must start with https://.")
    if not host:
        raise WebhookRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("The URL must not contain credentials.")
    if parts.fragment or url.endswith("#"):
        raise WebhookRefused("The URL must not contain a fragment.")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        raise WebhookRefused("Write the host in ASCII (punycode).") from None
    literal = _ip_literal(host)
    if scheme == "http":
        allowed = settings.DEBUG or settings.AUDIT_WEBHOOK_ALLOW_PRIVATE
        loopback = host == "localhost" or (literal is not None and literal.is_loopback)
        if not (allowed and loopback):
            raise WebhookRefused("The URL must start with https://.")
    denied = [p for p in settings.AUDIT_WEBHOOK_DENIED_HOSTS if _host_matches(host, p)]
    if denied:
        raise WebhookRefused(f"The host {host} is not allowed by the operator's policy.")
    allowed_hosts = [p for p in settings.AUDIT_WEBHOOK_ALLOWED_HOSTS if p.strip()]
    if allowed_hosts and not any(_host_matches(host, p) for p in allowed_hosts):
        raise WebhookRefused(f"The host {host} is not allowed by the operator's policy.")
    if literal is not None:
        address_problem = refusal_for_address(literal)
        if address_problem:
            raise WebhookRefused(address_problem)
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    shown_host = f"[{host}]" if literal is not None and literal.version == 6 else host
    netloc = shown_host if port == default_port else f"{shown_host}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Destination(scheme=scheme, host=host, port=port, path=path, netloc=netloc)


def refusal_for_address(address: IPAddress) -> str:
    """Why the policy refuses to connect to `address`, or "" when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast or address.is_unspecified:
        return f"The address {address} cannot receive webhooks."
    if address.is_global:
        return ""
    if settings.AUDIT_WEBHOOK_ALLOW_PRIVATE:
        return ""
    if settings.DEBUG and address.is_loopback:
        return ""
    return (
        f"The address {address} is private, loopback, link-local or reserved; "
        "the operator does not allow webhooks to such addresses."
    )


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    return addresses


def checked_address(destination: Destination) -> IPAddress:
    """The address to connect to: the host resolved now, and every address it has allowed.

    WebhookRefused when the host does not resolve or any of its addresses is refused (one bad
    address is enough: which one a client would pick is not ours to guess).
    """
    literal = _ip_literal(destination.host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            addresses = [
                ipaddress.ip_address(a) for a in resolve(destination.host, destination.port)
            ]
        except (OSError, UnicodeError, ValueError):
            raise WebhookRefused(f"The host {destination.host} did not resolve.") from None
    if not addresses:
        raise WebhookRefused(f"The host {destination.host} did not resolve.")
    for address in addresses:
        problem = refusal_for_address(address)
        if problem:
            raise WebhookRefused(problem)
    return addresses[0]
