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
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is the IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


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
    forged header changes nothing; a malformed entry stops the walk at the last good hop.
    Throttles, sign-in lockouts and the audit log all use this one answer.
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
