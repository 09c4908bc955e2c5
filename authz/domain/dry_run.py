""""Would token X allow this request?" answered by the Check's own decision code.

The limit tester must never say ALLOW for a request the server refuses, so it does not match
limit lines on its own: it builds the ``HttpRequest`` the server would build for the same
URL, login, client address, headers and body, and runs ``decide.screen`` (path normal form and
everything else decidable before a lookup) and ``decide.judge`` (state, expiry, binding, IP,
supported path, limits, on-behalf-of) on it with the token in hand.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from authz.domain.credentials import Credentials
from authz.domain.decide import Policy, judge, screen
from authz.domain.logins import same_user
from authz.domain.model import Decision, HttpRequest, Outcome, Token
from authz.domain.paths import split_path

DEFAULT_CLIENT_IP = "127.0.0.1"
# Headers the tester makes itself (credentials from the token, the request line from the URL).
_RESERVED = frozenset({"authorization", "host", ":authority", ":path", ":method", ":scheme"})


class DryRunError(ValueError):
    """The request to test is itself malformed (one line for the user)."""


@dataclass(frozen=True)
class DryRunRequest:
    method: str
    url: str
    """Absolute ``scheme://host/path?query``, or a path resolved against ``base_url``."""
    login: str = ""
    """Basic login; '' means the token's own user (required for an unbound token)."""
    client_ip: str = ""
    """Envoy's downstream address ('' → 127.0.0.1); X-Forwarded-For goes in ``headers``."""
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | None = None


@dataclass(frozen=True)
class DryRunResult:
    allowed: bool
    status: int
    """The HTTP status the client would get (200 on allow)."""
    code: str
    """The decision's reason code, as in the audit and the metrics (``ok`` on allow)."""
    message: str
    matched_line: str
    effective_user: str
    client_ip: str
    url: str
    """The URL the limit lines were matched against (query excluded)."""
    login: str


def resolve_url(url: str, base_url: str) -> tuple[str, str, str, str]:
    """(scheme, host, path, query) as the server sees them: a path-only URL is resolved
    against ``base_url``, since limit lines match the whole ``scheme://host/path``."""
    text = url.strip()
    if not text:
        raise DryRunError("--url is empty")
    if text.startswith("/"):
        if not base_url:
            raise DryRunError(f"{text!r} has no scheme://host and no base URL is configured")
        text = base_url.rstrip("/") + text
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise DryRunError(f"{url!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DryRunError(f"{url!r} is not an http(s)://host/path URL or a path starting with /")
    if parts.fragment:
        raise DryRunError(f"{url!r} has a #fragment, which Envoy refuses before any Check")
    # The raw text after the authority, not urlsplit's path: the server sees :path as sent.
    rest = text.split("://", 1)[1][len(parts.netloc):]
    path, query = split_path(rest or "/")
    return parts.scheme, parts.netloc, path, query


def _headers(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.strip().lower()
        if not key or any(c.isspace() for c in key):
            raise DryRunError(f"header name {name!r} is not valid")
        if key in _RESERVED:
            raise DryRunError(
                f"header {name!r} is set by the tester (from the token and --url), not by hand")
        # Envoy joins a repeated header with commas: so does the tester.
        out[key] = f"{out[key]},{value.strip()}" if key in out else value.strip()
    return out


def dry_run(
    token: Token, req: DryRunRequest, policy: Policy, *, base_url: str, now: float
) -> DryRunResult:
    """The server's decision for ``req`` made with ``token``'s secret."""
    scheme, host, path, query = resolve_url(req.url, base_url)
    method = req.method.strip().upper()
    if not method.isalpha():
        raise DryRunError(f"method {req.method!r} is not an HTTP method")
    headers = _headers(req.headers)
    source_ip = req.client_ip or DEFAULT_CLIENT_IP
    if policy.envoy_appends_peer:
        # Envoy (use_remote_address) appends its downstream peer before the Check: so does the
        # tester, so --client-ip and a client-sent X-Forwarded-For mean what they mean there.
        xff = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{xff},{source_ip}" if xff else source_ip
    headers.update({":method": method, ":scheme": scheme, ":authority": host,
                    ":path": path + (f"?{query}" if query else "")})
    login = req.login or token.user or ""
    if not login and "basic" in policy.schemes:
        raise DryRunError("an unbound token runs as the login the client sends: give --login")
    http = HttpRequest(
        method=method, scheme=scheme, host=host, path=path, query=query, headers=headers,
        source_ip=source_ip, body=req.body,
    )
    # Everything decidable before the lookup (path normal form first), judged without
    # credentials: a deny here is what the server answers whatever the token.
    first = screen(http, replace(policy, deny_unauthenticated=False))
    if isinstance(first, Decision) and first.outcome is Outcome.DENY:
        return _result(first, http, login)
    scheme_used: Literal["basic", "bearer"] = "basic" if "basic" in policy.schemes else "bearer"
    # A secret nobody can send: the identity-header check looks for the real one.
    creds = Credentials(scheme_used, login if scheme_used == "basic" else "",
                        "dry-run-" + secrets.token_hex(16))
    return _result(judge(http, creds, token, policy, now), http, login)


def _result(d: Decision, http: HttpRequest, login: str) -> DryRunResult:
    allowed = d.outcome is not Outcome.DENY
    if allowed:
        line = d.matched_limit
        message = f"allowed by {line!r}" if line else "allowed: the token has no limit lines"
        if d.effective_user and not same_user(d.effective_user, login):
            message += f"; runs as {d.effective_user}"
    else:
        message = d.message or d.reason.value
    return DryRunResult(allowed, d.status if not allowed else 200, d.reason.value, message,
                      d.matched_limit, d.effective_user, d.client_ip, http.url, login)


def header_pairs(texts: Sequence[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    """``'Name: value'`` strings (CLI) or a mapping (API) as pairs."""
    if isinstance(texts, Mapping):
        return list(texts.items())
    out: list[tuple[str, str]] = []
    for t in texts:
        name, sep, value = t.partition(":")
        if not sep or not name.strip():
            raise DryRunError(f"--header {t!r} is not 'Name: value'")
        out.append((name, value))
    return out
