"""The `helm test` script (helm/jira-authz/files/helm-test-check.py) against stub Check servers:
it passes a server that decides correctly and fails one that does not. (test_k8s_wheel.py runs it
against the real `jira-authz serve`.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from conftest import HELM_TEST_SCRIPT
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc

from authz.domain.model import Decision, Outcome, Reason
from authz.envoyauth.response import ResponseBuilder


class StubAuthz(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers like jira-authz with an empty token store — responses built by the service's own
    ResponseBuilder — or, with `broken`, gets one thing wrong."""

    def __init__(self, broken: str = "") -> None:
        self.broken = broken
        self.requests: list[external_auth_pb2.CheckRequest] = []
        self.responses = ResponseBuilder("contextUser", "Jira")

    def Check(self, request, context):  # gRPC servicer signature
        self.requests.append(request)
        if "authorization" in request.attributes.request.http.headers:
            if self.broken == "allows-unknown-token":
                return self.responses.build(Decision(Outcome.ALLOW, Reason.OK))
            return self.responses.build(
                Decision(Outcome.DENY, Reason.UNKNOWN_TOKEN, status=401, message="unknown token"))
        if self.broken == "keeps-identity-header":
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse())
        return self.responses.build(Decision(Outcome.PASS, Reason.NO_CREDENTIALS))


@pytest.fixture
def stub_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, StubAuthz]]:
    servicer = StubAuthz(getattr(request, "param", ""))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def _run(target: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HELM_TEST_SCRIPT), "--target", target, "--timeout", "5", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_passes_a_correct_server(stub_server: tuple[str, StubAuthz]) -> None:
    target, servicer = stub_server
    proc = _run(target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("helm test passed")
    token_check, no_cred = servicer.requests
    auth = token_check.attributes.request.http.headers["authorization"]
    assert auth.startswith("Basic ")
    assert no_cred.attributes.request.http.headers["contextuser"] == "helm-test-forged-identity"
    assert token_check.attributes.request.http.path == "/rest/api/2/myself"


def test_uses_bearer_when_basic_is_off(stub_server: tuple[str, StubAuthz]) -> None:
    target, servicer = stub_server
    assert _run(target, "--schemes", "bearer").returncode == 0
    assert servicer.requests[0].attributes.request.http.headers["authorization"].startswith(
        "Bearer jat_")


@pytest.mark.parametrize(
    "stub_server", ["allows-unknown-token", "keeps-identity-header"], indirect=True)
def test_fails_a_wrong_server(stub_server: tuple[str, StubAuthz]) -> None:
    target, _ = stub_server
    proc = _run(target)
    assert proc.returncode == 1, proc.stdout
    assert "FAIL" in proc.stdout


def test_fails_when_nothing_listens() -> None:
    from authz.stack.processes import free_port

    proc = _run(f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert proc.returncode == 1 and "FAIL connect" in proc.stdout


# --- the HTTP/1.1 Check port (listen.check_http1, Envoy's grpc_http1_reverse_bridge) -----------


@pytest.fixture
def http1_stub(request: pytest.FixtureRequest) -> Iterator[str]:
    """The HTTP/1.1 Check port as the server speaks it (authz.check_http1), answered by
    StubAuthz; `wrong-content-type` answers grpc instead of the bridge's protobuf."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from authz import check_http1

    broken = getattr(request, "param", "")
    servicer = StubAuthz("allows-unknown-token" if broken == "allows-unknown-token" else "")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, ctype: bytes, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype.decode())
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            ok = self.path == check_http1.HEALTH_PATH.decode()
            self._send(200 if ok else 404, b"text/plain", b"SERVING" if ok else b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if (self.path != check_http1.CHECK_PATH.decode()
                    or self.headers["content-type"] != check_http1.CONTENT_TYPE.decode()):
                return self._send(415, b"text/plain", b"")
            answer = servicer.Check(external_auth_pb2.CheckRequest.FromString(body), None)
            ctype = b"application/grpc" if broken == "wrong-content-type" else (
                check_http1.CONTENT_TYPE)
            self._send(200, ctype, answer.SerializeToString())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_checks_the_http1_port_too(stub_server: tuple[str, StubAuthz], http1_stub: str) -> None:
    target, _ = stub_server
    proc = _run(target, "--http1-target", http1_stub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   http1 health" in proc.stdout and "ok   http1 unknown token" in proc.stdout


@pytest.mark.parametrize(
    "http1_stub", ["allows-unknown-token", "wrong-content-type"], indirect=True)
def test_fails_a_wrong_http1_port(stub_server: tuple[str, StubAuthz], http1_stub: str) -> None:
    target, _ = stub_server
    proc = _run(target, "--http1-target", http1_stub)
    assert proc.returncode == 1, proc.stdout
    assert "FAIL http1 unknown token" in proc.stdout


def test_fails_when_nothing_listens_on_the_http1_port(
        stub_server: tuple[str, StubAuthz]) -> None:
    from authz.stack.processes import free_port

    target, _ = stub_server
    proc = _run(target, "--http1-target", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1 and "FAIL http1 connect" in proc.stdout
