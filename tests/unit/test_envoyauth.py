"""Envoy translation (ENVOY-NOTES, product.md §5-§6): CheckRequest → HttpRequest, Decision →
response."""

from __future__ import annotations

import base64
import json

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.rpc import code_pb2

from authz.domain import token_format
from authz.domain.decide import Policy, judge, screen
from authz.domain.model import Decision, HttpRequest, Outcome, Reason, Token
from authz.envoyauth.request import to_http_request, trace_id_from_metadata
from authz.envoyauth.response import ResponseBuilder

SECRET = token_format.generate_secret()
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
Ctx = attribute_context_pb2.AttributeContext


def check_request(
    *,
    path: str = "/rest/api/2/issue/ABC-1",
    method: str = "GET",
    host: str = "jira.example.com",
    scheme: str = "https",
    headers: dict[str, str] | None = None,
    raw_headers: list[tuple[str, bytes | str]] | None = None,
    source: str = "10.0.0.7",
    body: str = "",
    raw_body: bytes = b"",
    query: str = "",
    context: dict[str, str] | None = None,
) -> external_auth_pb2.CheckRequest:
    http = Ctx.HttpRequest(path=path, method=method, host=host, scheme=scheme,
                           headers=headers or {}, body=body, raw_body=raw_body, query=query)
    if raw_headers is not None:
        for k, v in raw_headers:
            hv = (base_pb2.HeaderValue(key=k, raw_value=v) if isinstance(v, bytes)
                  else base_pb2.HeaderValue(key=k, value=v))
            http.header_map.headers.append(hv)
    attrs = Ctx(
        source=Ctx.Peer(address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=source, port_value=54321))),
        request=Ctx.Request(http=http),
        context_extensions=context or {},
    )
    return external_auth_pb2.CheckRequest(attributes=attrs)


# --- CheckRequest → HttpRequest ----------------------------------------------------------------


def test_basic_translation() -> None:
    r = to_http_request(check_request(
        path="/rest/api/2/search?jql=project%20%3D%20X&maxResults=5",
        method="GET",
        headers={"authorization": "Basic abc", "x-request-id": "rid-1", "user-agent": "curl"},
        context={"route": "jira"},
    ))
    assert isinstance(r, HttpRequest)
    assert r.method == "GET"
    assert r.scheme == "https"
    assert r.host == "jira.example.com"
    assert r.path == "/rest/api/2/search"
    assert r.query == "jql=project%20%3D%20X&maxResults=5"
    assert r.url == "https://jira.example.com/rest/api/2/search"
    assert r.source_ip == "10.0.0.7"
    assert r.headers["authorization"] == "Basic abc"
    assert r.request_id == "rid-1"
    assert dict(r.context) == {"route": "jira"}
    assert r.body is None
    assert r.body_truncated is False
    assert r.trace_id == ""


def test_path_split_at_first_question_mark() -> None:
    r = to_http_request(check_request(path="/rest/a?x=1?y=/rest/api/2/issue"))
    assert r.path == "/rest/a"
    assert r.query == "x=1?y=/rest/api/2/issue"


def test_query_field_used_when_path_has_none() -> None:
    r = to_http_request(check_request(path="/rest/a", query="q=1"))
    assert (r.path, r.query) == ("/rest/a", "q=1")


def test_header_names_lower_cased() -> None:
    r = to_http_request(check_request(headers={"Authorization": "Bearer x", "ContextUser": "b"}))
    assert r.headers["authorization"] == "Bearer x"
    assert r.headers["contextuser"] == "b"
    assert "Authorization" not in r.headers


def test_pseudo_headers_as_fallback() -> None:
    req = check_request(path="", method="", host="", scheme="", headers={
        ":path": "/rest/x?a=1", ":method": "POST", ":authority": "h.example", ":scheme": "http"})
    r = to_http_request(req)
    assert (r.method, r.scheme, r.host, r.path, r.query) == (
        "POST", "http", "h.example", "/rest/x", "a=1")


def test_method_kept_as_sent() -> None:
    # HTTP/2 lets a client send `post`; Jira gets it as sent, so it is judged (refused) as sent.
    assert to_http_request(check_request(method="post")).method == "post"


def test_scheme_is_the_connection_scheme_envoy_set() -> None:
    # Envoy overwrites x-forwarded-proto with its connection's scheme (or a trusted proxy's):
    # an HTTP/2 client's `:scheme https` on cleartext is not what is judged.
    r = to_http_request(check_request(scheme="https", headers={"x-forwarded-proto": "http"}))
    assert r.scheme == "http"
    r = to_http_request(check_request(scheme="http", headers={"x-forwarded-proto": "https"}))
    assert r.scheme == "https"
    # A direct Check without the header: the request's scheme, validated by the decision.
    assert to_http_request(check_request(scheme="https")).scheme == "https"


def test_raw_header_map_joined_like_envoy() -> None:
    r = to_http_request(check_request(raw_headers=[
        ("Authorization", b"Basic one"),
        ("authorization", b"Basic two"),
        ("x-request-id", b"rid-raw"),
        ("user-agent", "plain-value"),
        ("x-bin", b"\xff\xfe"),
    ]))
    assert r.headers["authorization"] == "Basic one,Basic two"
    assert r.request_id == "rid-raw"
    assert r.headers["user-agent"] == "plain-value"
    assert r.headers["x-bin"] == "\ufffd\ufffd"


def test_duplicate_raw_authorization_refused_by_decision() -> None:
    value = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    r = to_http_request(check_request(raw_headers=[("authorization", value.encode())] * 2))
    d = screen(r, Policy())
    assert isinstance(d, Decision)
    assert d.reason is Reason.MALFORMED_CREDENTIALS


def test_body_and_partial_flag() -> None:
    r = to_http_request(check_request(raw_body=b'{"a": 1}',
                                      headers={"x-envoy-auth-partial-body": "true"}))
    assert r.body == b'{"a": 1}'
    assert r.body_truncated is True
    # The UTF-8 `body` field has invalid bytes replaced by Envoy: never judged as the body.
    r = to_http_request(check_request(body='{"a": "ä"}',
                                      headers={"x-envoy-auth-partial-body": "false"}))
    assert r.body is None
    r = to_http_request(check_request(raw_body=b"raw", body="text"))
    assert r.body == b"raw"
    # Fewer bytes than announced is partial, whatever the flag says.
    r = to_http_request(check_request(raw_body=b'{"a": 1}', headers={
        "x-envoy-auth-partial-body": "false", "content-length": "70000"}))
    assert r.body_truncated is True
    r = to_http_request(check_request(raw_body=b'{"a": 1}', headers={
        "x-envoy-auth-partial-body": "false", "content-length": "8"}))
    assert r.body_truncated is False
    r = to_http_request(check_request(raw_body=b"\xff\xfe{}"))
    assert r.body == b"\xff\xfe{}"


@pytest.mark.parametrize(
    ("metadata", "want"),
    [
        (None, ""),
        ([], ""),
        ([("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")], TRACE),
        ([("user-agent", "grpc"), ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")], TRACE),
        ([("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")],
         "80f198ee56343ba864fe8b2a57d3eff7"),
        ([("traceparent", "garbage")], ""),
        ([("traceparent", "00-short-00f067aa0ba902b7-01")], ""),
        ([("traceparent-bin", b"\x00\x01")], ""),
        ([("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())], ""),
    ],
)
def test_trace_id_from_metadata(metadata: list[tuple[str, str | bytes]] | None,
                                want: str) -> None:
    assert trace_id_from_metadata(metadata) == want


def test_trace_id_reaches_request() -> None:
    r = to_http_request(check_request(headers={"traceparent": "ignored-in-headers"}),
                        [("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")])
    assert r.trace_id == TRACE


def test_ipv6_source() -> None:
    r = to_http_request(check_request(source="2001:db8::7"))
    assert r.source_ip == "2001:db8::7"


# --- Decision → CheckResponse -----------------------------------------------------------------

TOKEN = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), user="alice")
ALLOW = Decision(Outcome.ALLOW, Reason.OK, 200, "", TOKEN, "alice", "bob", "", True)
PASS = Decision(Outcome.PASS, Reason.NO_CREDENTIALS, 200, "no token credentials")


def headers_of(opts: object) -> dict[str, tuple[str, int]]:
    return {h.header.key: (h.header.value, h.append_action) for h in opts}  # type: ignore[attr-defined]


def test_allow_sets_identity_and_strips_authorization() -> None:
    resp = ResponseBuilder("contextUser", "Jira").build(ALLOW)
    assert resp.status.code == code_pb2.OK
    assert resp.HasField("ok_response")
    assert not resp.HasField("denied_response")
    ok = resp.ok_response
    hdrs = headers_of(ok.headers)
    assert hdrs == {"contextuser": ("bob", OVERWRITE)}
    assert list(ok.headers_to_remove) == ["authorization"]
    assert "contextuser" not in [h.lower() for h in ok.headers_to_remove]


def test_allow_with_upstream_credential_overwrites_authorization() -> None:
    resp = ResponseBuilder("X-Forwarded-User", "Jira", "Basic c3ZjOnB3").build(ALLOW)
    ok = resp.ok_response
    hdrs = headers_of(ok.headers)
    assert hdrs == {
        "x-forwarded-user": ("bob", OVERWRITE),
        "authorization": ("Basic c3ZjOnB3", OVERWRITE),
    }
    assert "authorization" not in ok.headers_to_remove
    assert "x-forwarded-user" not in ok.headers_to_remove


def test_every_header_option_sets_append_action_explicitly() -> None:
    b = ResponseBuilder("contextUser", "Jira", "Basic x")
    for d in (ALLOW, Decision(Outcome.DENY, Reason.REVOKED, 401, "revoked")):
        resp = b.build(d)
        opts = list(resp.ok_response.headers) + list(resp.denied_response.headers)
        assert opts
        assert all(o.append_action == OVERWRITE for o in opts)


def test_pass_removes_identity_header_only() -> None:
    resp = ResponseBuilder("contextUser", "Jira").build(PASS)
    assert resp.status.code == code_pb2.OK
    ok = resp.ok_response
    assert list(ok.headers_to_remove) == ["contextuser"]
    assert list(ok.headers) == []
    assert "authorization" not in ok.headers_to_remove  # Jira's own auth keeps working


def _deny(status: int, reason: Reason = Reason.REVOKED, message: str = "API token revoked",
          realm: str = "Jira") -> external_auth_pb2.CheckResponse:
    return ResponseBuilder("contextUser", realm).build(
        Decision(Outcome.DENY, reason, status, message, TOKEN, "alice", "", "", True))


@pytest.mark.parametrize(
    ("status", "grpc", "error"),
    [
        (400, code_pb2.INVALID_ARGUMENT, "bad_request"),
        (401, code_pb2.UNAUTHENTICATED, "unauthorized"),
        (403, code_pb2.PERMISSION_DENIED, "forbidden"),
        (503, code_pb2.UNAVAILABLE, "unavailable"),
    ],
)
def test_deny_status_and_body(status: int, grpc: int, error: str) -> None:
    resp = _deny(status, message="why it was refused")
    assert resp.status.code == grpc
    assert not resp.HasField("ok_response")
    denied = resp.denied_response
    assert denied.status.code == status
    assert json.loads(denied.body) == {"errorMessages": ["why it was refused"], "errors": {},
                                       "error": error, "reason": "why it was refused"}
    hdrs = headers_of(denied.headers)
    assert hdrs["content-type"][0] == "application/json;charset=UTF-8"
    assert hdrs["cache-control"][0] == "no-store"
    assert ("www-authenticate" in hdrs) is (status == 401)


def test_www_authenticate_realm() -> None:
    hdrs = headers_of(_deny(401, realm="Acme Jira").denied_response.headers)
    assert hdrs["www-authenticate"][0] == 'Basic realm="Acme Jira"'


def test_deny_body_falls_back_to_reason_code() -> None:
    body = json.loads(_deny(403, Reason.NO_LIMIT_MATCHED, message="").denied_response.body)
    assert body == {"errorMessages": ["no_limit_matched"], "errors": {}, "error": "forbidden",
                    "reason": "no_limit_matched"}


def test_store_unavailable_is_503() -> None:
    d = Decision(Outcome.DENY, Reason.STORE_UNAVAILABLE, 503, "token store unavailable")
    resp = ResponseBuilder("contextUser", "Jira").build(d)
    assert resp.denied_response.status.code == 503
    assert resp.status.code == code_pb2.UNAVAILABLE
    assert "www-authenticate" not in headers_of(resp.denied_response.headers)


def test_deny_body_is_small_json_in_jiras_error_shape_plus_ours() -> None:
    body = _deny(401).denied_response.body
    assert len(body) < 300
    parsed = json.loads(body)
    assert set(parsed) == {"errorMessages", "errors", "error", "reason"}
    # Jira clients read errorMessages: the reason must be there, and errors must be an object.
    assert parsed["errorMessages"] == [parsed["reason"]] and parsed["errors"] == {}


def test_message_with_quotes_stays_valid_json() -> None:
    body = _deny(403, message='line \'[get]"x"\\\' did not match').denied_response.body
    assert json.loads(body)["reason"] == 'line \'[get]"x"\\\' did not match'


# --- end to end (pure) -------------------------------------------------------------------------


def _run(req: external_auth_pb2.CheckRequest, token: Token | None) -> (
    external_auth_pb2.CheckResponse
):
    r = to_http_request(req)
    first = screen(r, Policy())
    d = first if isinstance(first, Decision) else judge(r, first, token, Policy(), 0.0)
    return ResponseBuilder("contextUser", "Jira").build(d)


@pytest.mark.parametrize(
    "auth",
    [f"Basic {base64.b64encode(f'alice:{SECRET}'.encode()).decode()}", f"Bearer {SECRET}"],
)
def test_no_response_ever_contains_the_secret(auth: str) -> None:
    for token in (TOKEN, None, Token(id="t", secret_hash="x", revoked_at=0.0, user="alice")):
        for path in ("/rest/api/2/issue/A-1", "/secure/x", "/rest/../x"):
            resp = _run(check_request(path=path, headers={"authorization": auth,
                                                          "contextuser": "mallory"}), token)
            blob = resp.SerializeToString()
            assert SECRET.encode() not in blob
            assert auth.split(" ", 1)[1].encode() not in blob


def test_client_identity_header_never_survives_pass() -> None:
    resp = _run(check_request(headers={"contextuser": "admin"}), None)
    assert resp.HasField("ok_response")
    assert "contextuser" in resp.ok_response.headers_to_remove


def test_built_responses_are_reused_per_user_and_message_never_across() -> None:
    b = ResponseBuilder("contextUser", "Jira")
    alice = Decision(Outcome.ALLOW, Reason.OK, effective_user="alice", token_like=True)
    bob = Decision(Outcome.ALLOW, Reason.OK, effective_user="bob", token_like=True)
    assert b.build(alice) is b.build(alice)
    assert headers_of(b.build(bob).ok_response.headers)["contextuser"][0] == "bob"
    assert headers_of(b.build(alice).ok_response.headers)["contextuser"][0] == "alice"
    d401 = Decision(Outcome.DENY, Reason.UNKNOWN_TOKEN, 401, "unknown API token")
    d403 = Decision(Outcome.DENY, Reason.NO_LIMIT_MATCHED, 403, "no line matches")
    assert b.build(d401).denied_response.status.code == 401
    assert b.build(d403).denied_response.status.code == 403
    assert json.loads(b.build(d403).denied_response.body)["reason"] == "no line matches"


def test_response_cache_is_bounded() -> None:
    from authz.envoyauth import response as mod

    b = ResponseBuilder("contextUser", "Jira")
    for i in range(mod.CACHED_RESPONSES + 10):
        d = Decision(Outcome.ALLOW, Reason.OK, effective_user=f"u{i}", token_like=True)
        assert headers_of(b.build(d).ok_response.headers)["contextuser"][0] == f"u{i}"
    assert len(b._built) <= mod.CACHED_RESPONSES
