"""Who the client is: its address, from the TCP peer or, behind Fly's proxy, `Fly-Client-IP`.

Fly's proxy overwrites `Fly-Client-IP`; `X-Forwarded-For` is never read, because a client writes its leftmost
entries. A header that is missing, repeated or not an IP address is ignored, and the TCP peer is used.
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope


def client_ip(scope: Scope, trust_proxy_headers: bool) -> str | None:
    """The client's IP address as text (IPv4-mapped IPv6 as IPv4), or None when the server has no peer."""
    if trust_proxy_headers:
        values = [v for k, v in scope["headers"] if k == b"fly-client-ip"]
        if len(values) == 1:
            address = _address(values[0].decode("latin-1").strip())
            if address is not None:
                return str(address)
    peer = scope.get("client")
    if not peer:
        return None
    address = _address(str(peer[0]))
    return str(address) if address is not None else str(peer[0])[:64]


def client_key(scope: Scope, trust_proxy_headers: bool) -> str:
    """The key limits are kept for: the address; an IPv6 client's /64, which one subscriber holds whole."""
    ip = client_ip(scope, trust_proxy_headers)
    if ip is None:
        return "unknown"
    address = _address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ip


def _address(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
