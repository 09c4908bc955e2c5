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
