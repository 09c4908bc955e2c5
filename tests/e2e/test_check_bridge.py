"""The Check's HTTP/1.1 bridge in every shipped Envoy config, through a real Envoy: the bridge
sends exactly the CheckRequest, and only a well-formed 200 answer of the right type can let a
request through — an error, a wrong content type, an unparsable body, a dropped connection or a
slow answer all fail closed (503). The authz side here is a stand-in that answers as told."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy_http import envoy_or_skip, stub_and_envoy
from google.rpc import status_pb2

from authz.check_http1 import CHECK_PATH, CONTENT_TYPE
from authz.stack import envoy_config
from authz.stack.processes import free_port
from authz.stack.stub_jira import echo_of

pytestmark = pytest.mark.e2e


def _allow(user: str) -> bytes:
    header = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="contextuser", value=user),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(headers=[header],
                                                     headers_to_remove=["authorization"]),
    ).SerializeToString()


class FakeAuthz(http.server.BaseHTTPRequestHandler):
    """Answers each bridged Check as the Jira request's last path segment says."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers["content-length"]))
        out = b""  # Envoy's HTTP/1.1 codec streams the bridged body chunked
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self._body()
        check = external_auth_pb2.CheckRequest.FromString(body)
        http_req = check.attributes.request.http
        FakeAuthz.seen.append({"path": self.path, "ctype": self.headers["content-type"],
                               "jira_path": http_req.path, "method": http_req.method,
                               "authorization": http_req.headers.get("authorization", "")})
        mode = http_req.path.rsplit("/", 1)[-1]
        ok = CONTENT_TYPE.decode()
        if mode == "allow":
            self._send(200, ok, _allow("alice"))
        elif mode == "error":
            self._send(500, ok, _allow("mallory"))  # an allow body under an error status
        elif mode == "ctype":
            self._send(200, "text/plain", _allow("mallory"))
        elif mode == "garbage":
            self._send(200, ok, b"\xff\xff\xff\xff")
        elif mode == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif mode == "slow":
            time.sleep(2.0)  # beyond ext_authz's 0.5 s deadline
            self._send(200, ok, _allow("mallory"))
        else:
            self._send(404, "text/plain", b"unknown mode")


@pytest.fixture(scope="module", params=[envoy_config.SIDECAR, envoy_config.GATEWAY])
def envoy_port(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    envoy_bin = envoy_or_skip()
    if not envoy_config.has_cluster(request.param, envoy_config.CHECK_CLUSTER):
        pytest.fail(f"{request.param} has no {envoy_config.CHECK_CLUSTER} cluster")
    work: Path = tmp_path_factory.mktemp("bridge")
    authz = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAuthz)
    threading.Thread(target=authz.serve_forever, daemon=True).start()
    stub, port, admin = free_port(), free_port(), free_port()
    clusters: dict[str, tuple[str, int | list[int]]] = {
        "jira": ("127.0.0.1", stub),
        envoy_config.CHECK_CLUSTER: ("127.0.0.1", authz.server_address[1])}
    if envoy_config.has_cluster(request.param, envoy_config.CONSOLE_CLUSTER):
        clusters[envoy_config.CONSOLE_CLUSTER] = ("127.0.0.1", free_port())
    path = envoy_config.local_config(name=request.param, listener_port=port,
                                     admin_port=admin, path=work / "envoy.yaml",
                                     clusters=clusters)
    try:
        with stub_and_envoy(envoy_bin, path, work, stub_port=stub, admin_port=admin,
                            listener_port=port):
            yield port
    finally:
        authz.shutdown()
        authz.server_close()


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": "Basic YWxpY2U6dG9rZW4=",
                                           "contextUser": "mallory"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_bridge_sends_the_check_request_and_applies_a_well_formed_allow(
        envoy_port: int) -> None:
    FakeAuthz.seen.clear()
    status, headers, body = _get(envoy_port, "/rest/api/2/issue/allow")
    assert status == 200, body
    echo = echo_of(headers, body)
    got = {k.lower(): v for k, v in echo["headers"].items()}
    assert got.get("contextuser") == "alice"  # the answer's header, not the client's
    assert "authorization" not in got
    (seen,) = FakeAuthz.seen
    assert seen == {"path": CHECK_PATH.decode(), "ctype": CONTENT_TYPE.decode(),
                    "jira_path": "/rest/api/2/issue/allow", "method": "GET",
                    "authorization": "Basic YWxpY2U6dG9rZW4="}


@pytest.mark.parametrize("mode", ["error", "ctype", "garbage", "drop", "slow"])
def test_anything_but_a_well_formed_answer_fails_closed(envoy_port: int, mode: str) -> None:
    status, _, body = _get(envoy_port, f"/rest/api/2/issue/{mode}")
    assert status == 503, (mode, body)
    assert b"mallory" not in body
