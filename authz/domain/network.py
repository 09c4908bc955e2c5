"""Client address: which address a token's IP allow-list is checked against, and the check."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(
    source_ip: str, forwarded_for: str | None, trusted_hops: int, envoy_appends: bool = True
) -> str:
    """The address to judge, the same one Envoy's own access log calls the client.

    ``trusted_hops`` is the number of proxies in front of Envoy that append the address they
    received from (Envoy's ``xff_num_trusted_hops``, the same number). With
    ``use_remote_address: true`` Envoy appends its own peer to X-Forwarded-For before the
    Check (``envoy_appends``), so the client is the entry ``trusted_hops + 1`` places from the
    right; the right-most entries are written by Envoy and the trusted proxies, everything
    further left by the client and never trusted. Without trusted hops the client is Envoy's
    downstream socket peer. A header shorter than the trusted depth means the request did not
    pass every trusted proxy: the socket peer is judged, as Envoy does (fail closed: that is
    the nearest proxy, not a client-chosen address).
    """
    depth = trusted_hops + (1 if envoy_appends and trusted_hops > 0 else 0)
    if depth <= 0 or not forwarded_for:
        return source_ip
    entries = forwarded_for.split(",")
    if len(entries) < depth:
        return source_ip
    return entries[-depth].strip()


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


def parse_hostport(value: str) -> tuple[str, int] | None:
    """``host:port`` -> (host, port), the one reading of every listen address, Sentinel and
    admin URL; None when malformed. The last ':' splits (an IPv6 host keeps its colons); the
    port is ASCII digits up to 65535 (``str.isdigit`` alone also takes other scripts' digits)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    return host, int(port)


def split_hostport(value: str) -> tuple[str, int]:
    """``parse_hostport`` of a value configuration validation already accepted."""
    got = parse_hostport(value)
    if got is None:
        raise ValueError(f"expected host:port, got {value!r}")
    return got
