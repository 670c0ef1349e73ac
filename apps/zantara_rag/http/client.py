"""Who the client is: its address, from the TCP peer or, behind Fly's proxy, `Fly-Client-IP`; and, with
authentication on, the subject of its token.

Fly's proxy overwrites `Fly-Client-IP`; `X-Forwarded-For` is never read, because a client writes its leftmost
entries. A header that is missing, repeated or not an IP address is ignored, and the TCP peer is used.

Limits are kept per `ClientKey`. With a verified token it is the token's subject, whatever the address
(one user behind many addresses is one client; many users behind one NAT are many). Without, it is the
address: an IPv6 client's per-minute window and open streams count per /64 (one subscriber's network),
its daily token budget per /48 (what one customer of a provider usually holds: rotating /64s inside it
must not buy a fresh budget each time).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.types import Scope

RATE_PREFIX_V6 = 64
BUDGET_PREFIX_V6 = 48


@dataclass(frozen=True, slots=True)
class ClientKey:
    """Whom a request counts against: `rate` for questions per minute and open streams, `budget` for the
    daily tokens. With authentication, the token's subject as the caller's keyed hash of it (`subject_key`:
    the keys may live in Redis, and an e-mail address must not)."""

    rate: str
    budget: str

    @classmethod
    def of(cls, scope: Scope, trust_proxy_headers: bool, subject_key: str | None = None) -> ClientKey:
        if subject_key is not None:
            key = "sub:" + subject_key
            return cls(key, key)
        return cls(
            client_key(scope, trust_proxy_headers), client_key(scope, trust_proxy_headers, BUDGET_PREFIX_V6)
        )


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


def client_key(scope: Scope, trust_proxy_headers: bool, prefix_v6: int = RATE_PREFIX_V6) -> str:
    """The address a client's limits are kept for; an IPv6 client's network of `prefix_v6` bits."""
    ip = client_ip(scope, trust_proxy_headers)
    if ip is None:
        return "unknown"
    address = _address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/{prefix_v6}", strict=False))
    return ip


def _address(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
