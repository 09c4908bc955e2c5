"""Jira's own sign-in, as far as the web console needs it, for the stub Jira of ``jira-authz up``.

Local users ``alice``, ``bob`` and ``admin`` (password = name; ``admin`` is in the
``jira-administrators`` group) can sign in on ``/login.jsp``, which sets a ``JSESSIONID``
cookie as Jira does, and ``/rest/api/2/myself[?expand=groups]`` answers who a request's session
cookie or Basic login belongs to. Everything else (``myself`` without ``expand=groups``, or
without credentials of a local user) is left to the echo, so calls through Envoy still show
what reached Jira.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import secrets
import threading
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

ADMIN_GROUP = "jira-administrators"
USERS: dict[str, dict[str, Any]] = {
    "alice": {"displayName": "Alice Example", "groups": ["jira-software-users"]},
    "bob": {"displayName": "Bob Example", "groups": ["jira-software-users"]},
    "admin": {"displayName": "Admin Example", "groups": [ADMIN_GROUP, "jira-software-users"]},
}
"""Each user's password is its own name (local use only)."""
SESSION_COOKIE = "JSESSIONID"
MAX_FORM = 16 * 1024

_sessions: dict[str, str] = {}
_lock = threading.Lock()

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in - Stub Jira</title></head>
<body><main><h1>Stub Jira</h1>{error}
<form method="post" action="/login.jsp">
<input type="hidden" name="os_destination" value="{dest}">
<p><label for="u">Username</label> <input id="u" name="os_username" autocomplete="username"></p>
<p><label for="p">Password</label>
<input id="p" name="os_password" type="password" autocomplete="current-password"></p>
<p><button type="submit">Log in</button></p>
</form><p>Local users: alice, bob, admin (password = name).</p></main></body></html>
"""


def _user_json(name: str, groups: bool, base: str) -> dict[str, Any]:
    info = USERS[name]
    out: dict[str, Any] = {
        "self": f"{base}/rest/api/2/user?username={name}",
        "key": name, "name": name, "emailAddress": f"{name}@example.com",
        "displayName": info["displayName"], "active": True, "timeZone": "UTC",
    }
    if groups:
        items = [{"name": g, "self": f"{base}/rest/api/2/group?groupname={g}"}
                 for g in info["groups"]]
        out["groups"] = {"size": len(items), "items": items}
    return out


def _basic(handler: Any) -> tuple[str, str] | None:
    value = handler.headers.get("Authorization", "")
    scheme, _, data = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(data.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


def _session_user(handler: Any) -> tuple[bool, str | None]:
    """(a JSESSIONID was sent, the user it belongs to)."""
    jar = SimpleCookie()
    try:
        jar.load(handler.headers.get("Cookie", ""))
    except CookieError:
        return False, None
    morsel = jar.get(SESSION_COOKIE)
    if morsel is None:
        return False, None
    with _lock:
        return True, _sessions.get(morsel.value)


def _send(handler: Any, status: int, body: bytes, ctype: str,
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("X-Stub-Jira", "1")
    handler.send_header("Cache-Control", "no-store")
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _unauthorized(handler: Any) -> None:
    body = json.dumps({"errorMessages": ["You are not authenticated."], "errors": {}}).encode()
    _send(handler, 401, body, "application/json;charset=UTF-8")


def _login_page(handler: Any, status: int, dest: str, error: str = "") -> None:
    err = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    body = _LOGIN_PAGE.format(error=err, dest=html.escape(dest, quote=True)).encode()
    _send(handler, status, body, "text/html; charset=utf-8")


def _safe_destination(dest: str) -> str:
    """Only a local path: the login form must not become an open redirect."""
    parts = urlsplit(dest)
    if parts.scheme or parts.netloc or not dest.startswith("/") or dest.startswith("//") \
            or "\\" in dest or any(ord(c) < 0x21 for c in dest):
        return "/"
    return dest


def _login(handler: Any, query: str) -> None:
    if handler.command in ("GET", "HEAD"):
        dest = parse_qs(query).get("os_destination", ["/"])[0]
        _login_page(handler, 200, _safe_destination(dest))
        return
    length = int(handler.headers.get("Content-Length") or 0)
    if length > MAX_FORM:
        _send(handler, 413, b"form too large", "text/plain")
        return
    form = parse_qs(handler.rfile.read(length).decode("utf-8", "replace"))
    user = form.get("os_username", [""])[0]
    password = form.get("os_password", [""])[0]
    dest = _safe_destination(form.get("os_destination", ["/"])[0])
    if user not in USERS or not secrets.compare_digest(password, user):
        _login_page(handler, 401, dest, "Sorry, your username and password are incorrect.")
        return
    sid = secrets.token_hex(16)
    with _lock:
        _sessions[sid] = user
    _send(handler, 303, b"", "text/plain", {
        "Location": dest,
        "Set-Cookie": f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax",
    })


def _logout(handler: Any) -> None:
    sent, _ = _session_user(handler)
    if sent:
        jar = SimpleCookie()
        jar.load(handler.headers.get("Cookie", ""))
        with _lock:
            _sessions.pop(jar[SESSION_COOKIE].value, None)
    _send(handler, 303, b"", "text/plain", {
        "Location": "/login.jsp",
        "Set-Cookie": f"{SESSION_COOKIE}=; Path=/; HttpOnly; Max-Age=0",
    })


def _myself(handler: Any, query: str) -> bool:
    base = f"http://{handler.headers.get('Host', 'jira')}"
    groups = True
    basic = _basic(handler)
    if basic is not None and basic[0] in USERS:
        login, password = basic
        if not secrets.compare_digest(password, login):
            _unauthorized(handler)
            return True
        user: str | None = login
    else:
        sent, user = _session_user(handler)
        if user is None:
            if sent:
                _unauthorized(handler)
                return True
            return False  # not a local user's credentials: the echo answers
    assert user is not None
    body = json.dumps(_user_json(user, groups, base)).encode()
    _send(handler, 200, body, "application/json;charset=UTF-8")
    return True


def handle(handler: Any) -> bool:
    """Answer the request if it is Jira sign-in business; False leaves it to the echo."""
    words = handler.requestline.split()
    target = words[1] if len(words) >= 2 else handler.path
    path, _, query = target.partition("?")
    if path == "/login.jsp" and handler.command in ("GET", "HEAD", "POST"):
        _login(handler, query)
        return True
    if path == "/logout" and handler.command in ("GET", "POST"):
        _logout(handler)
        return True
    if path in ("/rest/api/2/myself", "/rest/api/latest/myself") and handler.command == "GET" \
            and "groups" in ",".join(parse_qs(query).get("expand", [])):
        # Only the console's question (it always asks for the groups): every other call of
        # myself (scripts, the curl snippets, the pass-through tests) still gets the echo.
        return _myself(handler, query)
    return False
