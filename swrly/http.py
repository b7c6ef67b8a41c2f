"""Facts about the HTTP request that several parts need in the same form."""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _parse(value: str) -> _Address | None:
    """One address as a peer or an X-Forwarded-For hop writes it; None when it is not one.

    Besides a bare address, proxies write a hop with its port (`203.0.113.7:41234`, Azure's
    gateways and IIS do) or an IPv6 address in brackets, with or without a port
    (`[2001:db8::5]:443`); those are the same client. Anything else (`unknown`, a name, an
    obfuscated identifier, an empty entry) is not an address.
    """
    text = value.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and _is_port(port[1:]))):
            return None
    elif text.count(":") == 1:  # a.b.c.d:port (a bare IPv6 address has at least two colons)
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is the IPv4 client.
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        # A zone (fe80::1%eth0) names an interface of the machine that wrote it, not part of
        # the client: with or without it, the same client and the same rate-limit bucket.
        if address.scope_id is not None:
            return ipaddress.IPv6Address(text.partition("%")[0])
    return address


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine: `localhost` or a loopback IP."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _trusted(address: _Address, networks: tuple[_Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the peer, or behind trusted proxies the address they were given.

    `X-Forwarded-For` is read only when the peer (REMOTE_ADDR) is in TRUSTED_PROXIES, and then
    from the right: each hop a trusted proxy appended is skipped, and the first address that is
    not a trusted proxy is the client. Anything a client wrote further left is ignored, so a
    forged header changes nothing; a malformed entry stops the walk at the last good hop (the
    proxy that passed it on, never an address further left). Hops may carry a port or IPv6
    brackets (see `_parse`). None only when REMOTE_ADDR itself is no address.
    Throttles, sign-in lockouts (AXES_CLIENT_IP_CALLABLE) and the audit log all use this one
    answer.
    """
    cache = vars(request)  # the answer is worked out once per request
    if "_swrly_client_ip" in cache:
        return cache["_swrly_client_ip"]
    peer = _parse(request.META.get("REMOTE_ADDR") or "")
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    address = peer
    if peer is not None and networks and _trusted(peer, networks):
        for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
            parsed = _parse(hop)
            if parsed is None:
                break
            address = parsed
            if not _trusted(parsed, networks):
                break
    result = str(address) if address is not None else None
    cache["_swrly_client_ip"] = result
    return result


def user_agent(request: HttpRequest) -> str:
    # NUL cannot be stored (PostgreSQL text); a client may still send it in a header.
    return request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")[:512]
