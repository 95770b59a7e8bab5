"""Who is the client: the TCP peer, or what a trusted reverse proxy says it forwarded.

Forwarded headers are believed only when the peer is one of IOT_TRUSTED_PROXIES. Then
X-Forwarded-For is read from the right: each trusted proxy appends the address it received
the request from, so the first address from the right that is not a trusted proxy is the
client. Whatever a client writes into the header itself stays to the left of that and is
never used, so rotating a forged X-Forwarded-For gives a client no new identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

Network = IPv4Network | IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.5``, ``172.30.0.0/24``); ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The client's address, given the TCP peer and the X-Forwarded-For header values."""
    if peer is None:
        return "unknown"
    if not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ip_address(hop)
        except ValueError:
            # Not written by a proxy we trust (they write addresses): stop believing the
            # header here rather than key on text a client chose.
            return peer
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
