"""Client address (product.md §2): socket address, trusted X-Forwarded-For hops, IP allow-lists."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.domain.network import cidr_error, client_ip, ip_allowed, parse_ip

SOCKET = "10.1.2.3"


# What reaches the Check: Envoy (use_remote_address: true) has appended its own peer as the
# right-most entry, so with N trusted proxies in front of Envoy the client is entry N + 1.
@pytest.mark.parametrize(
    ("xff", "hops", "want"),
    [
        (None, 0, SOCKET),
        ("", 0, SOCKET),
        ("203.0.113.7", 0, SOCKET),  # not trusted by default
        ("203.0.113.7, 198.51.100.1", 0, SOCKET),
        (None, 1, SOCKET),
        ("", 1, SOCKET),
        ("203.0.113.7", 1, SOCKET),  # only Envoy's entry: no balancer in between
        ("203.0.113.7,198.51.100.1", 1, "203.0.113.7"),  # client, balancer (Envoy's peer)
        ("6.6.6.6, 203.0.113.7,198.51.100.1", 1, "203.0.113.7"),  # spoofed left entry
        ("203.0.113.7, 198.51.100.1", 2, SOCKET),  # too short for 2 balancers
        ("1.1.1.1, 203.0.113.7, 198.51.100.1", 2, "1.1.1.1"),
        ("6.6.6.6, 1.1.1.1, 203.0.113.7, 198.51.100.1", 2, "1.1.1.1"),
        ("  203.0.113.7  ,\t198.51.100.1 ", 1, "203.0.113.7"),
        ("2001:db8::1, 198.51.100.1", 1, "2001:db8::1"),
        ("203.0.113.7", -1, SOCKET),
    ],
)
def test_client_ip(xff: str | None, hops: int, want: str) -> None:
    assert client_ip(SOCKET, xff, hops) == want


@pytest.mark.parametrize(
    ("xff", "hops", "want"),
    [
        ("203.0.113.7", 1, "203.0.113.7"),  # an Envoy that does not append its peer
        ("6.6.6.6, 203.0.113.7, 198.51.100.1", 2, "203.0.113.7"),
        ("203.0.113.7", 2, SOCKET),
        ("203.0.113.7", 0, SOCKET),
    ],
)
def test_client_ip_without_envoy_entry(xff: str, hops: int, want: str) -> None:
    assert client_ip(SOCKET, xff, hops, envoy_appends=False) == want


def test_spoofed_leftmost_entries_ignored() -> None:
    # The client writes whatever it likes on the left; the trusted proxies append on the right.
    spoofed = "10.0.0.1, 127.0.0.1, 192.168.0.1, 203.0.113.7, 192.0.2.2"
    assert client_ip(SOCKET, spoofed, 1) == "203.0.113.7"
    for hops in (1, 2):
        got = client_ip(SOCKET, "10.0.0.1, 1.1.1.1, 203.0.113.7, 198.51.100.1", hops)
        assert got != "10.0.0.1"


@given(st.lists(st.ip_addresses(v=4).map(str), min_size=0, max_size=6),
       st.integers(min_value=0, max_value=8), st.booleans())
def test_client_ip_picks_trusted_hop_or_socket(entries: list[str], hops: int,
                                               appends: bool) -> None:
    xff = ", ".join(entries)
    got = client_ip(SOCKET, xff, hops, envoy_appends=appends)
    depth = hops + (1 if appends and hops else 0)
    if hops == 0 or len(entries) < depth:
        assert got == SOCKET
    else:
        assert got == entries[-depth]


# --- parse_ip ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1", "10.0.0.1"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped folded to IPv4
        ("::ffff:a00:1", "10.0.0.1"),
    ],
)
def test_parse_ip(text: str, want: str) -> None:
    got = parse_ip(text)
    assert got is not None
    assert got == ipaddress.ip_address(want)


@pytest.mark.parametrize(
    "text", ["", "unknown", "10.0.0", "10.0.0.256", "10.0.0.1:8080", "[::1]:80", "10.0.0.0/8",
             "1.2.3.4, 5.6.7.8", "::g", "010.0.0.1"]
)
def test_parse_ip_unparsable(text: str) -> None:
    assert parse_ip(text) is None


# --- ip_allowed --------------------------------------------------------------------------------


def test_empty_list_allows_everything() -> None:
    assert ip_allowed("203.0.113.7", ())
    assert ip_allowed("::1", ())
    assert ip_allowed("garbage", ())


@pytest.mark.parametrize(
    ("ip", "cidrs", "want"),
    [
        ("10.0.0.1", ("10.0.0.0/8",), True),
        ("10.255.255.255", ("10.0.0.0/8",), True),
        ("11.0.0.1", ("10.0.0.0/8",), False),
        ("192.168.1.10", ("192.168.1.10",), True),  # bare address = /32
        ("192.168.1.11", ("192.168.1.10",), False),
        ("192.168.1.11", ("192.168.1.10/24",), True),  # host bits tolerated
        ("192.168.1.11", ("10.0.0.0/8", "192.168.1.0/24"), True),
        ("::ffff:10.0.0.1", ("10.0.0.0/8",), True),  # IPv4-mapped IPv6 client
        ("::ffff:11.0.0.1", ("10.0.0.0/8",), False),
        ("2001:db8::5", ("2001:db8::/32",), True),
        ("2001:db9::5", ("2001:db8::/32",), False),
        ("2001:db8::5", ("2001:db8::5",), True),
        ("2001:db8::5", ("10.0.0.0/8",), False),
        ("10.0.0.1", ("::/0",), False),  # families never mix
        ("10.0.0.1", ("0.0.0.0/0",), True),
        ("::1", ("0.0.0.0/0",), False),
        ("::1", ("::1/128",), True),
        (" 10.0.0.1 ", ("10.0.0.0/8",), True),
        ("10.0.0.1", (" 10.0.0.0/8 ",), True),
    ],
)
def test_ip_allowed(ip: str, cidrs: tuple[str, ...], want: bool) -> None:
    assert ip_allowed(ip, cidrs) is want


@pytest.mark.parametrize("ip", ["", "unknown", "10.0.0.1:1234", "10.0.0", "1.2.3.4,5.6.7.8"])
def test_unparsable_ip_refused(ip: str) -> None:
    assert not ip_allowed(ip, ("0.0.0.0/0", "::/0"))


def test_corrupt_stored_entry_only_narrows() -> None:
    assert not ip_allowed("10.0.0.1", ("not-a-cidr",))
    assert ip_allowed("10.0.0.1", ("not-a-cidr", "10.0.0.0/8"))


def test_ipv4_mapped_cidr_matches_mapped_client() -> None:
    assert cidr_error("::ffff:10.0.0.0/104") is not None or ip_allowed(
        "::ffff:10.0.0.1", ("::ffff:10.0.0.0/104",)
    )


# --- cidr_error --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["10.0.0.0/8", "10.0.0.1", "10.0.0.1/24", "2001:db8::/32", "::1", " 10.0.0.0/8 "]
)
def test_cidr_ok(text: str) -> None:
    assert cidr_error(text) is None


@pytest.mark.parametrize(
    "text", ["", "10.0.0.0/33", "10.0.0.0/-1", "2001:db8::/129", "10.0.0.0/8/8", "host.example",
             "10.0.0.*", "10.0.0.0-10.0.0.255"]
)
def test_cidr_refused(text: str) -> None:
    err = cidr_error(text)
    assert err is not None
    assert repr(text) in err


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_address_inside_its_own_network_is_allowed(addr: object, prefix: int) -> None:
    a = ipaddress.ip_address(addr)  # type: ignore[arg-type]
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return  # folded to IPv4: covered above
    prefix = min(prefix, a.max_prefixlen)
    net = ipaddress.ip_network(f"{a}/{prefix}", strict=False)
    assert ip_allowed(str(a), (str(net),))


@pytest.mark.parametrize(("text", "want"), [
    ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("::1:80", ("::1", 80)), ("[::1]:80", ("[::1]", 80)),
    ("h:0", ("h", 0)), ("h:65535", ("h", 65535)),
    ("h", None), (":80", None), ("h:", None), ("h:65536", None), ("h:8o", None),
    ("h:\u0661\u0662", None),  # Arabic-Indic digits: isdigit() says yes, a port they are not
])
def test_one_host_port_reading(text: str, want: tuple[str, int] | None) -> None:
    """Every host:port (listen addresses, Sentinels, --admin-url) is read by this one rule."""
    from authz.domain.network import parse_hostport

    assert parse_hostport(text) == want
