"""Client address: which address a token's IP allow-list is checked against, and the check."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(source_ip: str, forwarded_for: str | None, trusted_hops: int) -> str:
    """The address to judge: Envoy's downstream socket address, or, behind ``trusted_hops``
    proxies, the X-Forwarded-For entry that many places from the right.

    Entries further left were written by the client and are never trusted; a header shorter than
    the trusted depth falls back to the socket address (fail closed: that is the proxy).
    """
    if trusted_hops <= 0 or not forwarded_for:
        return source_ip
    entries = [e.strip() for e in forwarded_for.split(",")]
    if len(entries) < trusted_hops:
        return source_ip
    return entries[-trusted_hops]


def parse_ip(text: str) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 folded to IPv4; None when unparsable."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def cidr_error(text: str) -> str | None:
    """Why an allow-list entry is refused at creation, or None."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        return f"{text!r} is not an IP address or CIDR ({e})"
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        # Client addresses are compared in IPv4 form, so a mapped range could never match.
        return f"{text!r} is an IPv4-mapped IPv6 range: write it in IPv4 form"
    return None


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            continue  # refused at creation; a corrupt entry can only narrow the list
    return tuple(nets)


def ip_allowed(ip: str, cidrs: tuple[str, ...]) -> bool:
    """An empty list allows every address; an unparsable address is never allowed."""
    if not cidrs:
        return True
    addr = parse_ip(ip)
    if addr is None:
        return False
    return any(addr.version == n.version and addr in n for n in _networks(cidrs))
