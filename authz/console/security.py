"""Browser-facing rules of the console: response headers, and the CSRF + Origin check that
every state-changing request must pass before any handler runs."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from aiohttp import web

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send Origin: null
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SAFE_METHODS = frozenset({"GET", "HEAD"})


def same_origin(request: web.Request) -> bool:
    """The request comes from a page of this very host: ``Origin`` (or, when a browser leaves
    it out, ``Referer``) names the host the browser sent the request to. Absent both: refused."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if not source or source == "null":
        return False
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    host = request.headers.get("Host", "")
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def csrf_ok(expected: str, presented: str | None) -> bool:
    return bool(presented) and secrets.compare_digest(expected.encode(), presented.encode())


def add_headers(response: web.StreamResponse, *, static: bool = False) -> None:
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)
    if not static:
        # Pages may show a secret or a user's tokens: never kept by a browser or proxy cache.
        response.headers["Cache-Control"] = "no-store"
