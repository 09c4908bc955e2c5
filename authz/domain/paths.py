"""Request paths: split off the query, refuse anything not in normal form, match prefixes.

Envoy normalises paths before the Check, but the server refuses independently whatever is not
in normal form so that a URL limit cannot be bypassed by a path Jira's Tomcat resolves
differently (dot segments, ``..;``, encoded slashes, double slashes, overlong UTF-8 …), whether
or not the Envoy in front was configured right.
"""

from __future__ import annotations

import re
from functools import lru_cache

_HEX = frozenset("0123456789abcdefABCDEF")
# Bytes that must never arrive percent-encoded: they change how the path is split or resolved.
_FORBIDDEN_DECODED = frozenset(b"/\\.;") | frozenset(range(0x20)) | {0x7F}
_FORBIDDEN_RAW = frozenset("\\;#") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
# RFC 3986 unreserved characters are never percent-encoded in normal form (Envoy's
# normalize_path decodes them): an encoded one means the path did not pass a normalising proxy,
# and a limit such as [^S] could be dodged with %53.
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


# Segments of unreserved characters and sub-delims only (no '%', ';', '\\', '#', controls,
# non-ASCII), none empty and none a dot segment: normal form at a glance, the common case.
_PLAINLY_NORMAL = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~!$&'()*+,=:@-]+)*/?")


def split_path(raw: str) -> tuple[str, str]:
    """``/a/b?x=1`` → (``/a/b``, ``x=1``): Envoy sends the query inside ``path``."""
    path, _, query = raw.partition("?")
    return path, query


def _decode_escapes(path: str) -> bytes | str:
    """Percent-decoded bytes, or the reason the escapes are malformed or dangerous."""
    if "%" not in path:
        return path.encode("utf-8")  # nothing to decode (the common case)
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == "%":
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                return "malformed percent-escape"
            b = int(pair, 16)
            if b in _UNRESERVED:
                return f"needlessly encoded {chr(b)!r} in path"
            if b in _FORBIDDEN_DECODED:
                return f"encoded {chr(b)!r} in path" if b >= 0x20 else "encoded control byte"
            out.append(b)
            i += 3
        else:
            out.extend(c.encode("utf-8"))
            i += 1
    return bytes(out)


def _has_escape(decoded: bytes) -> bool:
    """Once-decoded bytes still hold a %XX escape: a second decoder would change the path."""
    i = decoded.find(b"%")
    while i >= 0:
        pair = decoded[i + 1 : i + 3]
        if len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair):
            return True
        i = decoded.find(b"%", i + 1)
    return False


def non_normal_reason(path: str) -> str | None:
    """Why ``path`` (no query) is not in normal form, or None when it is."""
    if path and _PLAINLY_NORMAL.fullmatch(path) is not None:
        return None
    return _checked_reason(path)


def _checked_reason(path: str) -> str | None:
    """``non_normal_reason`` rule by rule (every path the quick pattern does not vouch for)."""
    if not path.startswith("/"):
        return "path does not start with '/'"
    if not path.isascii():
        return "path contains raw non-ASCII characters"
    bad = _FORBIDDEN_RAW.intersection(path)
    if bad:
        ch = sorted(bad)[0]
        return f"path contains {ch!r}" if ch >= " " else "path contains a control character"
    if "//" in path:
        return "path contains '//'"
    for seg in path.split("/"):
        if seg in (".", ".."):
            return "path contains a dot segment"
    decoded = _decode_escapes(path)
    if isinstance(decoded, str):
        return decoded
    if _has_escape(decoded):
        return "double percent-encoding in path"
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "path escapes are not valid UTF-8"
    return None


def is_under_prefix(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a (normal-form) path is under one of the token-authenticated prefixes."""
    return path.startswith(prefixes)


# RFC 3986 §3.2.2 host, with an optional port: a reg-name (unreserved, sub-delims and
# percent-escapes), an IPv4 address (a reg-name too) or an IP-literal in brackets. Anything
# else — '/', '?', '#', '@', '\\', spaces, controls — is path, userinfo or smuggling text.
_REG_NAME = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_IP_LITERAL = re.compile(r"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]")
_PORT = re.compile(r"[0-9]{0,5}")
HOST_MAX = 255
SCHEMES = frozenset({"http", "https"})


@lru_cache(maxsize=1024)
def host_error(host: str) -> str | None:
    """Why ``host`` (``:authority``) is not an RFC 3986 host[:port], or None when it is.

    The URL limits match ``scheme://host/path``: path text inside the host (or a second
    authority after '@') would let a request satisfy a line for another endpoint, whatever
    proxy passed it through.
    """
    if not host:
        return "request has no host"
    if len(host) > HOST_MAX:
        return "host is too long"
    if host.startswith("["):
        end = host.find("]")
        literal, rest = host[: end + 1], host[end + 1 :]
        if end < 0 or _IP_LITERAL.fullmatch(literal) is None:
            return "host is not a valid IP literal"
    else:
        literal, sep, port = host.rpartition(":")
        if not sep:
            literal, rest = host, ""
        else:
            rest = ":" + port
        if not literal or _REG_NAME.fullmatch(literal) is None:
            return "host contains characters that are not allowed in a host name"
    if rest and (not rest.startswith(":") or _PORT.fullmatch(rest[1:]) is None):
        return "host has an invalid port"
    return None


def scheme_error(scheme: str) -> str | None:
    """Only http and https reach a URL limit; anything else is refused."""
    return None if scheme in SCHEMES else "request scheme is not http or https"
