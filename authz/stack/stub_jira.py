"""A stand-in for Jira that echoes what reached it: the proof of what Envoy let through.

Every request, whatever the method or path, gets 200 and a JSON body
holding ``{"method", "path", "query", "headers", "body"}`` where ``path`` is the raw request
path as received (not decoded, not normalised: exactly what Tomcat would parse) and ``headers``
maps lower-cased names to a value, or a list of values when a header was repeated. The
response carries ``X-Stub-Jira: 1`` so tests can tell a Jira answer from an Envoy or jira-authz
one.

The endpoints that Jira client libraries call on their own (``jira``'s constructor reads
``serverInfo``; ``search_issues`` reads ``field``) answer in Jira's shape, with the echo keys
beside Jira's: ``serverInfo``, ``myself``, ``issue/KEY``, ``search``, ``issue/KEY/comment``.
Where a Jira key has an echo key's name (a comment's ``body``) Jira's wins; the complete echo
of every Jira-shaped answer is also in the ``X-Stub-Echo`` header (``field`` is a JSON array in
Jira, so that header is its only echo), or under the body's ``stubEcho`` key when it is too
large for a header; ``echo_of`` reads it back.

Run: ``python -m authz.stack.stub_jira --port 8080``
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz.stack import stub_jira_auth

MAX_BODY = 16 * 1024 * 1024
ECHO_HEADER = "X-Stub-Echo"
ECHO_KEY = "stubEcho"
MAX_ECHO_HEADER = 8 * 1024
"""Clients refuse header lines over 64 KiB (http.client, h2): a larger echo goes in the body."""


def echo_of(headers: dict[str, str], body: bytes) -> Any:
    """What the stub saw, from one of its answers (``headers`` with lower-case names): the
    echo header, else the body's ``stubEcho``, else the body itself (a plain echo)."""
    if ECHO_HEADER.lower() in headers:
        return json.loads(headers[ECHO_HEADER.lower()])
    data = json.loads(body)
    return data[ECHO_KEY] if isinstance(data, dict) and ECHO_KEY in data else data


_API = re.compile(r"/(?:[^/]+/)*rest/api/(?:2|latest|3)/(?P<rest>.*)")
_ISSUE = re.compile(r"issue/(?P<key>[A-Za-z][A-Za-z0-9_]*-[0-9]+|[0-9]+)(?P<sub>/comment)?/?")
SERVER_INFO = {
    "baseUrl": "http://127.0.0.1", "version": "9.12.0", "versionNumbers": [9, 12, 0],
    "deploymentType": "Server", "buildNumber": 912000, "serverTitle": "stub Jira",
}
FIELDS = [
    {"id": "summary", "key": "summary", "name": "Summary", "custom": False, "navigable": True,
     "searchable": True, "clauseNames": ["summary"], "schema": {"type": "string",
                                                                "system": "summary"}},
    {"id": "status", "key": "status", "name": "Status", "custom": False, "navigable": True,
     "searchable": True, "clauseNames": ["status"], "schema": {"type": "status",
                                                               "system": "status"}},
]


def _user(name: str) -> dict[str, Any]:
    return {"name": name, "key": name, "displayName": name.capitalize(),
            "emailAddress": f"{name}@example.com", "active": True}


def myself(context_user: str) -> tuple[int, dict[str, Any]] | None:
    """``/rest/api/2/myself`` for the user Envoy's identity header names (jira-authz's
    allow). Without one it stays a plain echo (None): kept apart so that a session-cookie or
    Basic sign-in can answer beside it."""
    if not context_user:
        return None
    return 200, _user(context_user)


def _issue(key: str, user: str) -> dict[str, Any]:
    return {"id": "10001", "key": key, "self": f"http://127.0.0.1/rest/api/2/issue/{key}",
            "fields": {"summary": f"Issue {key}", "status": {"name": "Open"},
                       "reporter": _user(user or "admin")}}


def jira_answer(
    method: str, path: str, headers: Mapping[str, Any], body: bytes
) -> tuple[int, Any] | None:
    """Jira-shaped (status, JSON) for the endpoints clients call by themselves, else None."""
    m = _API.fullmatch(path)
    if m is None:
        return None
    rest = m["rest"].rstrip("/")
    who = headers.get("contextuser", "")
    user = who if isinstance(who, str) else ""
    if rest == "serverInfo":
        return 200, dict(SERVER_INFO)
    if rest == "field":
        return 200, list(FIELDS)
    if rest == "myself":
        return myself(user)
    if rest == "search":
        return 200, {"startAt": 0, "maxResults": 50, "total": 1, "issues": [_issue("AAA-1", user)]}
    im = _ISSUE.fullmatch(rest)
    if im is None:
        return None
    if im["sub"]:
        comment = {"id": "10100", "body": "", "author": _user(user or "admin")}
        if method == "POST":
            try:
                sent = json.loads(body or b"{}")
            except ValueError:
                return 200, {"errorMessages": ["body is not JSON"], "errors": {}}
            comment["body"] = sent.get("body", "") if isinstance(sent, dict) else ""
            return 200, comment  # Jira says 201; the echo contract is 200 for everything
        return 200, {"startAt": 0, "maxResults": 50, "total": 1, "comments": [comment]}
    return 200, _issue(im["key"], user)


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy pools upstream connections
    server_version = "stub-jira/1"

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; answer every method the same way.
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _echo(self) -> None:
        if stub_jira_auth.handle(self):  # login page, session cookies, /myself
            return
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            return
        headers: dict[str, str | list[str]] = {}
        for name, value in self.headers.items():
            key = name.lower()
            prev = headers.get(key)
            if prev is None:
                headers[key] = value
            elif isinstance(prev, list):
                prev.append(value)
            else:
                headers[key] = [prev, value]
        # The request line, not self.path: http.server collapses a leading "//" (gh-87389),
        # and the echo must show exactly what arrived.
        words = self.requestline.split()
        target = words[1] if len(words) >= 2 else self.path
        path, _, query = target.partition("?")
        echo = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
        }
        status, answer = 200, None
        shaped = jira_answer(self.command, path, headers, body)
        if shaped is not None:
            status, answer = shaped
        extra: list[tuple[str, str]] = []
        content: Any = echo
        if answer is not None:
            # Jira's keys win (a comment's "body"); the whole echo also travels apart: in a
            # header while small, else (large bodies: uploads, updates) under ECHO_KEY.
            content = {**echo, **answer} if isinstance(answer, dict) else answer
            packed = json.dumps(echo, ensure_ascii=True)
            if len(packed) <= MAX_ECHO_HEADER or not isinstance(content, dict):
                extra.append((ECHO_HEADER, packed))
            else:
                content[ECHO_KEY] = echo
        payload = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Stub-Jira", "1")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"stub-jira {self.address_string()} {format % args}\n")


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), EchoHandler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Echo server standing in for Jira")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"stub-jira listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
