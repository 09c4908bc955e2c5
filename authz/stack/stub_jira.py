"""A stand-in for Jira that echoes what reached it: the proof of what Envoy let through.

Every request, whatever the method or path, gets 200 and a JSON body
``{"method", "path", "query", "headers", "body"}`` where ``path`` is the raw request path as
received (not decoded, not normalised: exactly what Tomcat would parse) and ``headers`` maps
lower-cased names to a value, or a list of values when a header was repeated. The response
carries ``X-Stub-Jira: 1`` so tests can tell a Jira answer from an Envoy or jira-authz one.

Run: ``python -m authz.stack.stub_jira --port 8080``
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz.stack import stub_jira_auth

MAX_BODY = 16 * 1024 * 1024


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
        payload = json.dumps(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Stub-Jira", "1")
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
