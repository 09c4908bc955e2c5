"""The limit tester is the Check's own decision (issue 16 item 2): each request the server
refuses, the tester refuses too, with the same status and reason code."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.domain import token_format
from authz.domain.decide import Policy, judge, screen
from authz.domain.dry_run import DryRunError, DryRunRequest, dry_run, header_pairs, resolve_url
from authz.domain.model import Decision, HttpRequest, Token

NOW = 1_700_000_000.0
SECRET = token_format.generate_secret()
BASE = "https://jira.example.com"


def tok(**kw: object) -> Token:
    fields: dict[str, object] = {"id": "t1", "secret_hash": token_format.hash_secret(SECRET),
                                 "user": "alice", "created_at": NOW - 10}
    fields.update(kw)
    return Token(**fields)  # type: ignore[arg-type]


def run(token: Token, url: str, method: str = "GET", **kw: object) -> object:
    return dry_run(token, DryRunRequest(method=method, url=url, **kw),  # type: ignore[arg-type]
                   Policy(), base_url=BASE, now=NOW)


ISSUE_LINE = "[get].*/rest/api/2/issue/.*"


@pytest.mark.parametrize(
    ("token", "url", "kw", "status", "code"),
    [
        # The issue's examples: each was ALLOW in the old tester and is refused by the server.
        (tok(revoked_at=NOW - 1), "/rest/api/2/issue/A-1", {}, 401, "revoked"),
        (tok(expires_at=NOW - 1), "/rest/api/2/issue/A-1", {}, 401, "expired"),
        (tok(ips=("10.9.9.0/24",)), "/rest/api/2/issue/A-1", {}, 403, "ip_not_allowed"),
        (tok(), "/secure/Dashboard.jspa", {}, 403, "unsupported_path"),
        (tok(limits=("[get]/rest/api/2/issue/.*",)), "/rest/api/2/issue/A-1", {}, 403,
         "no_limit_matched"),
        # And more of the same class: binding, on-behalf-of, normal form, method.
        (tok(), "/rest/api/2/issue/A-1", {"login": "bob"}, 401, "wrong_user"),
        (tok(), "/rest/api/2/issue/A-1", {"headers": [("contextUser", "bob")]}, 403,
         "on_behalf_of_not_allowed"),
        (tok(), "/rest/api/2/../2/issue/A-1", {}, 400, "non_normal_path"),
        (tok(), "/rest/api/2//issue/A-1", {}, 400, "non_normal_path"),
        (tok(limits=(ISSUE_LINE,)), "/rest/api/2/issue/A-1", {"method": "DELETE"}, 403,
         "no_limit_matched"),
        (tok(ips=("10.9.9.0/24",)), "/rest/api/2/issue/A-1",
         {"client_ip": "10.9.8.1"}, 403, "ip_not_allowed"),
    ],
)
def test_refused_requests_are_refused(token: Token, url: str, kw: dict[str, object],
                                      status: int, code: str) -> None:
    r = run(token, url, **kw)
    assert not r.allowed and (r.status, r.code) == (status, code), r  # type: ignore[attr-defined]


def test_allowed_requests_say_by_which_line_and_as_whom() -> None:
    r = run(tok(limits=(ISSUE_LINE,), ips=("10.9.9.0/24",), on_behalf_of=("bob",)),
            "/rest/api/2/issue/A-1", client_ip="10.9.9.7", headers=[("contextUser", "bob")])
    assert r.allowed and r.status == 200 and r.code == "ok"  # type: ignore[attr-defined]
    assert r.matched_line == ISSUE_LINE and r.effective_user == "bob"  # type: ignore[attr-defined]
    assert r.url == BASE + "/rest/api/2/issue/A-1"  # type: ignore[attr-defined]
    assert r.client_ip == "10.9.9.7"  # type: ignore[attr-defined]


def test_path_only_url_is_resolved_against_the_base_url() -> None:
    assert resolve_url("/rest/api/2/issue/A-1?x=1", BASE) == (
        "https", "jira.example.com", "/rest/api/2/issue/A-1", "x=1")
    assert resolve_url("http://h:8080/rest/a", BASE)[:3] == ("http", "h:8080", "/rest/a")
    # The raw path, as the server receives it: not normalised by the URL parser.
    assert resolve_url("https://h/rest/./x", BASE)[2] == "/rest/./x"


def test_forwarded_for_is_judged_like_the_server_does() -> None:
    policy = Policy(xff_trusted_hops=1)
    token = tok(ips=("192.0.2.0/24",))
    req = DryRunRequest("GET", "/rest/api/2/issue/A-1", client_ip="10.0.0.1",
                        headers=[("X-Forwarded-For", "192.0.2.9")])
    assert dry_run(token, req, policy, base_url=BASE, now=NOW).allowed
    assert not dry_run(token, req, Policy(), base_url=BASE, now=NOW).allowed


@pytest.mark.parametrize(
    ("url", "kw", "why"),
    [
        ("", {}, "empty"),
        ("ftp://h/rest/x", {}, r"http\(s\)"),
        ("rest/api/2/issue", {}, r"http\(s\)"),
        ("https://h/rest/x#frag", {}, "fragment"),
        ("/rest/x", {"headers": [("Authorization", "Basic eA==")]}, "set by the tester"),
        ("/rest/x", {"method": "GE T"}, "not an HTTP method"),
    ],
)
def test_malformed_test_requests_are_one_line_errors(url: str, kw: dict[str, object],
                                                     why: str) -> None:
    with pytest.raises(DryRunError, match=why):
        run(tok(), url, **kw)


def test_unbound_token_needs_a_login() -> None:
    with pytest.raises(DryRunError, match="--login"):
        run(tok(user=None), "/rest/api/2/myself")
    r = run(tok(user=None), "/rest/api/2/myself", login="carol")
    assert r.allowed and r.effective_user == "carol"  # type: ignore[attr-defined]


def test_header_pairs() -> None:
    assert header_pairs(["contextUser: bob", "X-A:1"]) == [("contextUser", " bob"), ("X-A", "1")]
    with pytest.raises(DryRunError):
        header_pairs(["no colon"])


# --- the tester and the Check agree (pure; the real-server version is in integration) ---------

LINES = [ISSUE_LINE, "[post].*/rest/api/2/issue/KANBAN-100/comment.*", ".*/rest/api/2/myself",
         "[get]/rest/api/2/issue/.*", ".*/rest/api/2/search[QueryParam::jql==project = A.*]"]
PATHS = ["/rest/api/2/issue/A-1", "/rest/api/2/issue/KANBAN-100/comment", "/rest/api/2/myself",
         "/rest/api/2/search", "/secure/Dashboard.jspa", "/rest/api/2/./issue", "/rest//x"]


@settings(max_examples=300, deadline=None)
@given(
    limits=st.lists(st.sampled_from(LINES), max_size=3, unique=True),
    user=st.sampled_from([None, "alice"]),
    revoked=st.sampled_from([None, NOW - 1, NOW + 100]),
    expires=st.sampled_from([None, NOW - 1, NOW + 100]),
    ips=st.sampled_from([(), ("10.0.0.0/8",), ("192.0.2.0/24",)]),
    obo=st.sampled_from([(), ("bob",), ("*",)]),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.sampled_from(PATHS),
    query=st.sampled_from(["", "jql=project%20%3D%20A", "jql=x"]),
    login=st.sampled_from(["alice", "ALICE", "bob"]),
    source=st.sampled_from(["10.1.2.3", "192.0.2.5", "203.0.113.9"]),
    ctx=st.sampled_from([None, "bob", "alice", "carol"]),
)
def test_tester_agrees_with_screen_and_judge(
    limits: list[str], user: str | None, revoked: float | None, expires: float | None,
    ips: tuple[str, ...], obo: tuple[str, ...], method: str, path: str, query: str,
    login: str, source: str, ctx: str | None,
) -> None:
    token = tok(limits=tuple(limits), user=user, revoked_at=revoked, expires_at=expires,
                ips=ips, on_behalf_of=obo)
    headers = {"authorization": "Basic " + base64.b64encode(f"{login}:{SECRET}".encode()).decode()}
    if ctx:
        headers["contextuser"] = ctx
    http = HttpRequest(method, "https", "jira.example.com", path, query, headers, source)
    policy = Policy()
    first = screen(http, policy)
    server = first if isinstance(first, Decision) else judge(http, first, token, policy, NOW)
    url = path + (f"?{query}" if query else "")
    tested = dry_run(token, DryRunRequest(method, url, login=login, client_ip=source,
                                          headers=[("contextUser", ctx)] if ctx else []),
                     policy, base_url=BASE, now=NOW)
    assert (tested.allowed, tested.code) == (server.forwarded, server.reason.value)
    assert tested.status == (200 if server.forwarded else server.status)
