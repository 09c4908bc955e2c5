"""Through the real Envoy (shipped sidecar.yaml), jira-authz, Redis and a stub Jira.

The stub echoes what reached it, so every assertion is about what Jira would actually see:
who it believes the caller is, whether the password/token was still attached, and which path
it would serve. Unit tests prove the decision logic; these prove the deployed chain keeps it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import pytest
from oracles import tomcat_view

from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e

ALLOWED = "/rest/api/2/issue/ALLOWED-1"
LIMIT = ".*/rest/api/2/issue/ALLOWED-1.*"
MYSELF = "/rest/api/2/myself"


def identity(reply: Any) -> Any:
    """The identity header Jira received (None when absent; a list if it arrived twice)."""
    return reply.echo["headers"].get("contextuser")


def assert_denied(reply: Any, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert not reply.from_jira
    body = reply.json()
    assert set(body) >= {"error", "reason"}, body
    if status == 401:
        assert reply.headers.get("www-authenticate", "").startswith("Basic realm="), reply.headers


def poll(fn: Any, *, timeout: float, interval: float = 0.01) -> Any:
    """Call ``fn`` until it returns a truthy value or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- allowed ----------------------------------------------------------------------------------


def test_token_reaches_jira_as_its_user_without_authorization(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--label", "e2e allowed")
    r = api.send(stack, MYSELF, [("Authorization", api.basic("alice", tok["secret"]))])
    assert r.status == 200 and r.from_jira, r.body
    headers = r.echo["headers"]
    assert headers["contextuser"] == "alice"
    assert "authorization" not in headers
    assert headers.get("x-request-id")
    assert r.echo["path"] == MYSELF


def test_bearer_with_bound_token(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    r = api.send(stack, MYSELF, [("Authorization", f"Bearer {tok['secret']}")])
    assert r.status == 200 and r.from_jira, r.body
    assert identity(r) == "alice"
    assert "authorization" not in r.echo["headers"]


def test_unbound_token_runs_as_the_login(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--any-user")
    r = api.send(stack, MYSELF, [("Authorization", api.basic("carol", tok["secret"]))])
    assert r.status == 200 and r.from_jira, r.body
    assert identity(r) == "carol"


def test_bound_token_accepts_case_and_extra_login(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--login", "alice@example.com")
    for login in ("ALICE", "alice@example.com"):
        r = api.send(stack, MYSELF, [("Authorization", api.basic(login, tok["secret"]))])
        assert r.status == 200 and r.from_jira, (login, r.body)
        assert identity(r).lower() == "alice"


def test_query_and_body_reach_jira(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    auth = ("Authorization", api.basic("alice", tok["secret"]))
    r = api.send(stack, "/rest/api/2/search?jql=project%3DA%3Border%20by%20key", [auth])
    assert r.status == 200 and r.from_jira, r.body
    assert r.echo["query"] == "jql=project%3DA%3Border%20by%20key"
    body = b'{"fields": {"summary": "x"}}'
    r = api.send(
        stack, "/rest/api/2/issue", [auth, ("Content-Type", "application/json")],
        method="POST", body=body,
    )  # fmt: skip
    assert r.status == 200 and r.from_jira, r.body
    assert r.echo["method"] == "POST" and r.echo["body"] == body.decode()


# --- the identity header ----------------------------------------------------------------------

SPOOFS = [
    [("contextUser", "admin")],
    [("CONTEXTUSER", "admin")],
    [("contextuser", "admin"), ("contextUser", "admin")],
    [("contextUser", "alice"), ("contextUser", "admin")],
    [("contextUser", "admin"), ("CONTEXTUSER", "alice")],
    [("contextUser", "alice, admin")],
]


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "+".join(f"{k}={v}" for k, v in s))
def test_spoofed_identity_never_reaches_jira(
    stack: LocalStack, api: Any, spoof: list[tuple[str, str]]
) -> None:
    tok = api.create_token(stack, "--user", "alice")
    r = api.send(stack, MYSELF, [("Authorization", api.basic("alice", tok["secret"])), *spoof])
    if r.from_jira:
        assert identity(r) == "alice", r.echo["headers"]
    assert not r.from_jira, "an on-behalf-of request without permission must be refused"
    assert_denied(r, 403)


def test_on_behalf_of_allowed_user(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--on-behalf-of", "bob")
    auth = ("Authorization", api.basic("alice", tok["secret"]))
    r = api.send(stack, MYSELF, [auth, ("contextUser", "bob")])
    assert r.status == 200 and r.from_jira, r.body
    assert identity(r) == "bob"
    assert "authorization" not in r.echo["headers"]
    # Only bob: another user is refused, and so is an ambiguous (duplicated) header.
    assert_denied(api.send(stack, MYSELF, [auth, ("contextUser", "admin")]), 403)
    r = api.send(stack, MYSELF, [auth, ("contextUser", "bob"), ("contextUser", "admin")])
    assert not r.from_jira, r.echo
    assert r.status in (400, 401, 403)


def test_on_behalf_of_anyone(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--on-behalf-of", "*")
    auth = ("Authorization", api.basic("alice", tok["secret"]))
    r = api.send(stack, MYSELF, [auth, ("CONTEXTUSER", "dave")])
    assert r.status == 200 and r.from_jira, r.body
    assert identity(r) == "dave"


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Basic " + "YWxpY2U6bm90LWEtdG9rZW4tanVzdC1hLXBhc3N3b3Jk")],
        [],
    ],
    ids=["jira-password", "no-credentials"],
)
@pytest.mark.parametrize("spoof", SPOOFS[:3], ids=["plain", "upper", "twice"])
def test_pass_through_strips_spoofed_identity(
    stack: LocalStack,
    api: Any,
    headers: list[tuple[str, str]],
    spoof: list[tuple[str, str]],
) -> None:
    """A Jira password (alice:not-a-token-just-a-password) goes to Jira untouched, minus the
    client's identity header: Jira authenticates it itself."""
    r = api.send(stack, MYSELF, [*headers, *spoof])
    assert r.status == 200 and r.from_jira, r.body
    assert identity(r) is None, r.echo["headers"]
    if headers:
        assert r.echo["headers"]["authorization"] == headers[0][1]
    else:
        assert "authorization" not in r.echo["headers"]


def test_header_with_underscore_is_refused_by_envoy(stack: LocalStack, api: Any) -> None:
    r = api.send(stack, MYSELF, [("context_user", "admin")])
    assert r.status == 400 and not r.from_jira


# --- authentication failures (401) ------------------------------------------------------------


def test_wrong_login_for_bound_token(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    r = api.send(stack, MYSELF, [("Authorization", api.basic("bob", tok["secret"]))])
    assert_denied(r, 401)
    assert tok["secret"].encode() not in r.body


def test_expired_token(stack: LocalStack, api: Any) -> None:
    # The CLI refuses an expiry in the past, so the token expires two seconds from now.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    tok = api.create_token(stack, "--user", "alice", "--expires-at", expires.isoformat())
    auth = [("Authorization", api.basic("alice", tok["secret"]))]
    first = api.send(stack, MYSELF, auth)
    assert first.status == 200 and first.from_jira, first.body  # now cached as valid
    r = poll(
        lambda: (x := api.send(stack, MYSELF, auth)).status == 401 and x,
        timeout=10,
        interval=0.1,
    )
    assert r, "token still accepted 10 s after it expired"
    late = time.time() - expires.timestamp()
    assert late < 1.5, f"expired token accepted {late:.2f}s after expiry"
    assert_denied(r, 401)


def test_revocation_takes_effect_within_a_second(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    auth = [("Authorization", api.basic("alice", tok["secret"]))]
    assert api.send(stack, MYSELF, auth).status == 200  # cached in the server
    api.revoke_token(stack, tok["id"])
    start = time.monotonic()
    r = poll(
        lambda: (x := api.send(stack, MYSELF, auth)).status != 200 and x,
        timeout=5,
    )
    elapsed_ms = (time.monotonic() - start) * 1000
    print(f"revocation visible through Envoy after {elapsed_ms:.0f} ms")
    assert r, "revoked token still accepted after 5 s"
    assert_denied(r, 401)
    assert elapsed_ms < 1000


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!not-base64!!!",
        "Basic " + "bm8tY29sb24taGVyZQ==",  # "no-colon-here"
        "Basic " + "OnNlY3JldA==",  # ":secret" (empty login)
        "Basic " + "/w==",  # not UTF-8
        "Basic",
        "Bearer",
    ],
)
def test_malformed_credentials_get_401(stack: LocalStack, api: Any, value: str) -> None:
    r = api.send(stack, MYSELF, [("Authorization", value)])
    assert_denied(r, 401)


def test_unknown_generated_token_gets_401(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    api.revoke_token(stack, tok["id"])
    r = api.send(stack, MYSELF, [("Authorization", f"Bearer {tok['secret']}")])
    assert_denied(r, 401)


# --- authorisation failures (403) -------------------------------------------------------------


def test_ip_not_allowed(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--ip", "10.0.0.0/8")
    auth = ("Authorization", api.basic("alice", tok["secret"]))
    assert_denied(api.send(stack, MYSELF, [auth]), 403)
    # A client-sent X-Forwarded-For is not trusted (no trusted hops configured).
    r = api.send(stack, MYSELF, [auth, ("X-Forwarded-For", "10.1.2.3")])
    assert_denied(r, 403)


def test_ip_allowed(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--ip", "127.0.0.0/8")
    r = api.send(stack, MYSELF, [("Authorization", api.basic("alice", tok["secret"]))])
    assert r.status == 200 and r.from_jira, r.body


def test_token_outside_rest_is_refused(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice")
    r = api.send(
        stack, "/secure/Dashboard.jspa", [("Authorization", api.basic("alice", tok["secret"]))]
    )
    assert_denied(r, 403)
    # Without a token the page is Jira's business (its login form).
    r = api.send(stack, "/secure/Dashboard.jspa")
    assert r.status == 200 and r.from_jira


def test_limits_by_method(stack: LocalStack, api: Any) -> None:
    tok = api.create_token(stack, "--user", "alice", "--limit", f"[post]{LIMIT}/comment")
    auth = [("Authorization", api.basic("alice", tok["secret"]))]
    r = api.send(stack, f"{ALLOWED}/comment", auth, method="POST", body=b"{}")
    assert r.status == 200 and r.from_jira, r.body
    assert_denied(api.send(stack, f"{ALLOWED}/comment", auth), 403)


# --- path tricks against a URL limit ----------------------------------------------------------


BYPASSES = [
    f"{ALLOWED}/../OTHER-2",
    f"{ALLOWED}/%2e%2e/OTHER-2",
    f"{ALLOWED}/%2E%2E/OTHER-2",
    f"{ALLOWED}/.%2e/OTHER-2",
    f"{ALLOWED}//../OTHER-2",
    f"{ALLOWED}/..//OTHER-2",
    "//rest/api/2/issue/OTHER-2",
    f"{ALLOWED}%2F..%2FOTHER-2",
    f"{ALLOWED}%2f..%2fOTHER-2",
    f"{ALLOWED}/..%2FOTHER-2",
    f"{ALLOWED}/%5C..%5COTHER-2",
    f"{ALLOWED}\\..\\OTHER-2",
    f"{ALLOWED}/..;/OTHER-2",
    f"{ALLOWED}/%2e%2e;/OTHER-2",
    f"{ALLOWED}/..%3B/OTHER-2",
    f"{ALLOWED}/%2e%2e%3b/OTHER-2",
    f"{ALLOWED};/../OTHER-2",
    "/rest/api/2/issue/OTHER-2;x=/rest/api/2/issue/ALLOWED-1",
    "/rest/api/2/issue/OTHER-2%3Bx=/rest/api/2/issue/ALLOWED-1",
    "/rest/api/2/issue/OTHER-2?x=/rest/api/2/issue/ALLOWED-1",
    "/rest/api/2/issue/OTHER-2#/rest/api/2/issue/ALLOWED-1",
    f"{ALLOWED}/%252e%252e/OTHER-2",
    f"{ALLOWED}/..%00/OTHER-2",
    f"{ALLOWED}/..%09/OTHER-2",
]


@pytest.fixture(scope="module")
def limited(stack: LocalStack, api: Any) -> list[tuple[str, str]]:
    tok = api.create_token(stack, "--user", "alice", "--limit", LIMIT)
    return [("Authorization", api.basic("alice", tok["secret"]))]


def test_limit_baseline(stack: LocalStack, api: Any, limited: list[tuple[str, str]]) -> None:
    r = api.send(stack, ALLOWED, limited)
    assert r.status == 200 and r.from_jira, r.body
    assert_denied(api.send(stack, "/rest/api/2/issue/OTHER-2", limited), 403)


@pytest.mark.parametrize("path", BYPASSES)
def test_path_tricks_do_not_escape_the_limit(
    stack: LocalStack, api: Any, limited: list[tuple[str, str]], path: str
) -> None:
    r = api.send(stack, path, limited)
    print(f"{path} -> {r.status} {r.echo['path'] if r.echo else r.body[:80]!r}")
    if not r.from_jira:
        assert r.status in (400, 403, 404), (r.status, r.body)
        return
    seen = r.echo["path"]
    base = f"http://127.0.0.1:{stack.envoy_port}"
    assert re.fullmatch(LIMIT, base + seen), f"Jira got {seen!r}"
    assert re.fullmatch(LIMIT, base + tomcat_view(seen)), f"Tomcat would serve {seen!r} as " + (
        tomcat_view(seen)
    )
    assert "OTHER-2" not in tomcat_view(seen).split("/")[5:6], seen
    assert identity(r) == "alice"


# --- faults -----------------------------------------------------------------------------------


def test_redis_down_fails_closed_and_recovers(fault_stack: LocalStack, api: Any) -> None:
    used = api.create_token(fault_stack, "--user", "alice")
    fresh = api.create_token(fault_stack, "--user", "alice")
    used_auth = [("Authorization", api.basic("alice", used["secret"]))]
    fresh_auth = [("Authorization", api.basic("alice", fresh["secret"]))]
    assert api.send(fault_stack, MYSELF, used_auth).status == 200

    fault_stack.stop_redis()
    r = api.send(fault_stack, MYSELF, fresh_auth)
    assert r.status == 503 and not r.from_jira, (r.status, r.body)
    for _ in range(5):
        r = api.send(fault_stack, MYSELF, fresh_auth)
        assert r.status != 200 and not r.from_jira, "token never seen was allowed without Redis"

    fault_stack.start_redis()
    r = poll(
        lambda: (x := api.send(fault_stack, MYSELF, fresh_auth)).status == 200 and x,
        timeout=15,
        interval=0.1,
    )
    assert r and r.from_jira, "no recovery after Redis came back"
    assert identity(r) == "alice"


def test_authz_down_fails_closed_and_recovers(fault_stack: LocalStack, api: Any) -> None:
    tok = api.create_token(fault_stack, "--user", "alice")
    auth = [("Authorization", api.basic("alice", tok["secret"]))]
    assert api.send(fault_stack, MYSELF, auth).status == 200

    fault_stack.stop_authz()
    # Anything with credentials fails closed while the Check cannot run ...
    for headers in (auth, [("Authorization", api.basic("alice", "a-jira-password"))]):
        r = api.send(fault_stack, MYSELF, headers)
        assert r.status == 503 and not r.from_jira, (r.status, r.body)
    # ... while a request without credentials never needed it (issue 15): Jira's own
    # authentication answers, and a forged identity header is removed by Envoy.
    r = api.send(fault_stack, MYSELF, [("contextUser", "admin")])
    assert r.from_jira and identity(r) is None, (r.status, r.body)

    fault_stack.start_authz()
    r = poll(
        lambda: (x := api.send(fault_stack, MYSELF, auth)).status == 200 and x,
        timeout=15,
        interval=0.1,
    )
    assert r and r.from_jira and identity(r) == "alice"


def test_envoys_own_refusal_is_jira_shaped(
    stack: LocalStack, api: Any, limited: list[tuple[str, str]]
) -> None:
    """The `;` route answers from Envoy itself, without a Check: its body must read like a
    jira-authz deny too (Jira's errorMessages plus error and reason), with Jira's content type,
    so client libraries show the reason."""
    for headers in (limited, []):
        r = api.send(stack, "/rest/api/2/issue/OTHER-2;x=/rest/api/2/issue/ALLOWED-1", headers)
        assert r.status == 400 and not r.from_jira, r.body
        body = json.loads(r.body)
        assert body["errorMessages"] == [body["reason"]] and body["errors"] == {}
        assert body["error"] == "bad_request" and ";" in body["reason"]
        assert r.headers["content-type"] == "application/json;charset=UTF-8"
