"""``token test`` tells the truth (issue 16 item 2): for random tokens, requests and client
addresses, the admin API's TestLimits and a Check through the real server (a separate
``jira-authz serve`` process on a real Redis) agree on allow/deny, status, reason and user."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authz._proto.jira_authz.admin.v1 import admin_pb2 as pb
from authz._proto.jira_authz.admin.v1 import admin_pb2_grpc

pytestmark = pytest.mark.integration

ADMIN_SECRET = "admin-secret-for-dry-run-tests-0123456789"
MD = [("authorization", f"Bearer {ADMIN_SECRET}")]
HOST = "jira.example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, check: grpc.Channel, admin: grpc.Channel) -> None:
        self.check = external_auth_pb2_grpc.AuthorizationStub(check)
        self.admin = admin_pb2_grpc.TokenAdminStub(admin)
        self.tokens: list[tuple[str, str, dict[str, Any]]] = []


TOKENS: list[dict[str, Any]] = [
    {"label": "plain", "user": "alice"},
    {"label": "issues", "user": "alice", "limits": ["[get].*/rest/api/2/issue/.*"]},
    {"label": "path-only line", "user": "alice", "limits": ["[get]/rest/api/2/issue/.*"]},
    {"label": "comments", "user": "alice", "limits": [
        "[post].*/rest/api/2/issue/KANBAN-100/comment.*", ".*/rest/api/2/myself"]},
    {"label": "jql", "user": "alice",
     "limits": [".*/rest/api/2/search[QueryParam::jql==project = A.*]"]},
    {"label": "ip", "user": "alice", "ips": ["10.9.9.0/24"]},
    {"label": "obo", "user": "alice", "on_behalf_of": ["bob"]},
    {"label": "anyone", "limits": [".*/rest/api/2/(myself|issue/.*)"]},
    {"label": "email", "user": "alice", "logins": ["alice@example.com"]},
    {"label": "revoked", "user": "alice", "revoke": True},
]


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dry-run")
    token_file = tmp / "admin-token"
    token_file.write_text(ADMIN_SECRET + "\n")
    check, admin = free_port(), free_port()
    prefix = f"dry{os.getpid()}{int(time.time() * 1000) % 100000}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
    env.update({
        "JIRA_AUTHZ_REDIS_URL": redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{check}",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_ADMIN": f"127.0.0.1:{admin}", "JIRA_AUTHZ_LISTEN_METRICS": "",
        "JIRA_AUTHZ_ADMIN_TOKEN_FILE": str(token_file),
        "JIRA_AUTHZ_JIRA_BASE_URL": f"https://{HOST}",
        "JIRA_AUTHZ_POLICY_ALLOW_UNBOUND": "true",  # the "anyone" token below
        "JIRA_AUTHZ_LOG_LEVEL": "error",
    })
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "--workers", "1"], env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        check_ch = grpc.insecure_channel(f"127.0.0.1:{check}")
        admin_ch = grpc.insecure_channel(f"127.0.0.1:{admin}")
        health = health_pb2_grpc.HealthStub(check_ch)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)
        s = Served(check_ch, admin_ch)
        for spec in TOKENS:
            made = s.admin.CreateToken(pb.CreateTokenRequest(
                label=spec["label"], user=spec.get("user", ""), logins=spec.get("logins", []),
                limits=spec.get("limits", []), ips=spec.get("ips", []),
                on_behalf_of=spec.get("on_behalf_of", []), any_user="user" not in spec),
                metadata=MD)
            if spec.get("revoke"):
                s.admin.RevokeToken(pb.RevokeTokenRequest(id=made.token.id), metadata=MD)
            s.tokens.append((made.token.id, made.secret, spec))
        # An expired token can only be imported (Extender's export keeps expired ones).
        export = {"tokens": [{"label": "expired", "user": "alice", "token": "exp1red-dry-run-t0ken",
                              "limitTo": "", "ip": "", "validUntil": 1630476718964,
                              "dateCreated": 1622700718964, "counter": 3}]}
        rep = s.admin.ImportTokens(pb.ImportTokensRequest(
            extender_json=json.dumps(export).encode(), apply=True), metadata=MD)
        s.tokens.append((rep.tokens[0].id, "exp1red-dry-run-t0ken", {"label": "expired"}))
        yield s
        check_ch.close()
        admin_ch.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def check_request(method: str, path: str, query: str, headers: dict[str, str],
                  source: str) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.host, http.scheme = method, HOST, "https"
    http.path = path + (f"?{query}" if query else "")
    http.headers.update({":method": method, ":path": http.path, ":authority": HOST,
                         ":scheme": "https", **headers})
    req.attributes.source.address.socket_address.address = source
    return req


PATHS = ["/rest/api/2/issue/A-1", "/rest/api/2/issue/KANBAN-100/comment", "/rest/api/2/myself",
         "/rest/api/2/search", "/secure/Dashboard.jspa", "/rest/api/2/./issue/A-1",
         "/rest/api/2//myself", "/jira/rest/api/2/myself"]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0, max_value=len(TOKENS)),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.sampled_from(PATHS),
    query=st.sampled_from(["", "jql=project%20%3D%20A", "jql=other"]),
    login=st.sampled_from(["alice", "Alice", "alice@example.com", "bob", "carol"]),
    source=st.sampled_from(["127.0.0.1", "10.9.9.7", "10.9.8.1", "203.0.113.5"]),
    ctx=st.sampled_from([None, "bob", "alice", "carol", "bob,carol"]),
)
def test_token_test_and_check_agree(served: Served, which: int, method: str, path: str,
                                    query: str, login: str, source: str,
                                    ctx: str | None) -> None:
    token_id, secret, _ = served.tokens[which]
    auth = "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()
    headers = {"authorization": auth}
    if ctx is not None:
        headers["contextuser"] = ctx
    resp = served.check.Check(check_request(method, path, query, headers, source), timeout=10)
    tested = served.admin.TestLimits(pb.TestLimitsRequest(
        id=token_id, method=method, url=path + (f"?{query}" if query else ""), login=login,
        client_ip=source, headers={"contextuser": ctx} if ctx is not None else {}),
        metadata=MD, timeout=10)
    allowed = resp.status.code == 0
    event(f"{'allow' if allowed else 'deny'} {tested.code}")
    assert tested.allowed == allowed, (tested, resp)
    if allowed:
        sent = {h.header.key: h.header.value for h in resp.ok_response.headers}
        assert tested.status == 200 and tested.code == "ok"
        assert sent["contextuser"] == tested.effective_user
    else:
        body = json.loads(resp.denied_response.body)
        assert tested.status == resp.denied_response.status.code
        assert tested.reason == body["reason"] == body["errorMessages"][0]


def test_path_only_url_resolves_against_the_servers_base_url(served: Served) -> None:
    token_id = next(t for t, _, spec in served.tokens if spec["label"] == "path-only line")
    r = served.admin.TestLimits(pb.TestLimitsRequest(
        id=token_id, method="GET", url="/rest/api/2/issue/A-1"), metadata=MD)
    assert not r.allowed and r.code == "no_limit_matched"
    assert r.url == f"https://{HOST}/rest/api/2/issue/A-1"


def test_bad_test_request_is_invalid_argument(served: Served) -> None:
    token_id = served.tokens[0][0]
    with pytest.raises(grpc.RpcError) as e:
        served.admin.TestLimits(pb.TestLimitsRequest(id=token_id, method="GET",
                                                     url="ftp://x/rest"), metadata=MD)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_lint_warnings_come_back_from_the_api(served: Served) -> None:
    made = served.admin.CreateToken(pb.CreateTokenRequest(
        label="lint", user="alice", limits=["[get]/rest/api/2/issue/.*",
                                            ".*/rest/api/2/issue/ALLOWED-1.*"]), metadata=MD)
    assert len(made.warnings) == 2 and list(made.token.limit_warnings) == list(made.warnings)
    assert "can never match" in made.warnings[0] and "ALLOWED-10" in made.warnings[1]
    with pytest.raises(grpc.RpcError) as e:
        served.admin.CreateToken(pb.CreateTokenRequest(label="x", user="a",
                                                       limits=[".*[Foo::a==b]"]), metadata=MD)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown clause" in \
        e.value.details()


def test_wrong_and_missing_admin_credentials_are_told_apart(served: Served) -> None:
    for md, says in (([], "required"), ([("authorization", "Bearer wrong-secret-xxxxxxxx")],
                                        "rejected")):
        with pytest.raises(grpc.RpcError) as e:
            served.admin.GetToken(pb.GetTokenRequest(id="x"), metadata=md)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and says in e.value.details()

