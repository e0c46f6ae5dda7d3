"""Who is asking, by address: the client's IP, believing ``X-Forwarded-For`` only from trusted proxies.

``TRUSTED_PROXIES`` lists the addresses or networks of the balancers in front of Warren. The client address is
found by walking ``X-Forwarded-For`` from the right (the entry the nearest proxy appended) past every trusted
address; the first untrusted one is the client. A client can put anything in the header it sends, but it can only
prepend: the entries our own proxies append are on the right, so a forged entry is never reached while a trusted
proxy stands in between. Without ``TRUSTED_PROXIES`` the header is ignored and the peer address is the client.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: At most this many ``X-Forwarded-For`` entries are looked at (a chain of proxies is short).
_MAX_HOPS = 16


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` → networks; raises ``ValueError`` naming the entry it cannot read."""
    networks = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network like 10.0.0.0/8") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(request: web.Request, proxies: tuple[IPNetwork, ...]) -> str:
    """The client's address as a string (the peer address when it is not a trusted proxy)."""
    peer = _address(request.remote or "")
    if peer is None:
        return request.remote or "unknown"
    if not proxies or not _trusted(peer, proxies):
        return str(peer)
    hops = [hop for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    client = peer
    for hop in reversed(hops[-_MAX_HOPS:]):
        address = _address(hop)
        if address is None:
            break  # garbage from before our proxies: the last trusted hop's view is the best we have
        client = address
        if not _trusted(address, proxies):
            break
    return str(client)
