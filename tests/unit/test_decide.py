"""screen + judge (docs/product.md §2-§6): every Reason, its status, and the order of the checks."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.config import load_config
from authz.domain import token_format
from authz.domain.credentials import Credentials
from authz.domain.decide import Policy, judge, not_a_token, screen
from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Reason, Token
from authz.policies import decision_policy

NOW = 1_700_000_000.0
SECRET = token_format.generate_secret()
OTHER_SECRET = token_format.generate_secret()
BAD_CHECKSUM = SECRET[:-1] + ("A" if SECRET[-1] != "A" else "B")
PASSWORD = "correct horse battery staple"
TOKEN = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), label="ci", user="alice",
              created_at=NOW - 100)
UNBOUND = Token(id="t2", secret_hash=token_format.hash_secret(SECRET), label="shared")


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def req(
    authorization: str | None = None,
    *,
    method: str = "GET",
    path: str = "/rest/api/2/issue/ABC-1",
    query: str = "",
    source_ip: str = "10.0.0.7",
    body: bytes | None = None,
    **headers: str,
) -> HttpRequest:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if authorization is not None:
        h["authorization"] = authorization
    return HttpRequest(method=method, scheme="https", host="jira.example.com", path=path,
                       query=query, headers=h, source_ip=source_ip, body=body)


def decide(
    r: HttpRequest,
    token: Token | None = TOKEN,
    policy: Policy | None = None,
    now: float = NOW,
) -> Decision:
    """screen → lookup by hash (a dict of one) → judge, as the service does."""
    policy = policy or Policy()
    first = screen(r, policy)
    if isinstance(first, Decision):
        return first
    assert isinstance(first, Credentials)
    found = token if token is not None and token_format.hash_secret(
        first.secret) == token.secret_hash else None
    return judge(r, first, found, policy, now)


def tok(**kw: object) -> Token:
    return dataclasses.replace(TOKEN, **kw)  # type: ignore[arg-type]


def assert_deny(d: Decision, reason: Reason, status: int) -> None:
    assert d.outcome is Outcome.DENY, d
    assert d.reason is reason, d
    assert d.status == status
    assert not d.forwarded
    assert d.message
    assert SECRET not in d.message and PASSWORD not in d.message


# --- allow -------------------------------------------------------------------------------------


def test_basic_bound_token_allowed() -> None:
    d = decide(req(basic("alice", SECRET)))
    assert d.outcome is Outcome.ALLOW
    assert d.reason is Reason.OK
    assert d.status == 200
    assert d.forwarded
    assert d.token is TOKEN
    assert d.login == "alice"
    assert d.effective_user == "alice"
    assert d.token_like
    assert d.matched_limit == ""


@pytest.mark.parametrize("login", ["alice", "ALICE", "Alice", "aLiCe"])
def test_bound_login_compared_case_insensitively(login: str) -> None:
    d = decide(req(basic(login, SECRET)))
    assert d.outcome is Outcome.ALLOW
    assert d.login == login
    assert d.effective_user == "alice"  # runs as the canonical user


@pytest.mark.parametrize("login", ["alice@example.com", "ALICE@EXAMPLE.COM", "a.smith"])
def test_extra_logins_accepted(login: str) -> None:
    t = tok(logins=("alice@example.com", "A.Smith"))
    d = decide(req(basic(login, SECRET)), t)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "alice"


def test_wrong_login_for_bound_token() -> None:
    d = decide(req(basic("bob", SECRET)), tok(logins=("alice@example.com",)))
    assert_deny(d, Reason.WRONG_USER, 401)
    assert d.token_like
    assert d.token is not None and d.token.id == "t1"
    assert d.login == "bob"


@pytest.mark.parametrize("login", ["alic", "alice2", "alice ", "bob@example.com"])
def test_near_miss_logins_refused(login: str) -> None:
    d = decide(req(basic(login, SECRET)), tok(logins=("alice@example.com",)))
    assert d.outcome is Outcome.DENY
    assert d.status == 401


def test_unbound_token_runs_as_login() -> None:
    d = decide(req(basic("Bob", SECRET)), UNBOUND)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "Bob"
    assert d.login == "Bob"


def test_bearer_bound_token_allowed() -> None:
    d = decide(req(f"Bearer {SECRET}"))
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "alice"
    assert d.login == ""


def test_bearer_unbound_token_refused() -> None:
    d = decide(req(f"Bearer {SECRET}"), UNBOUND)
    assert_deny(d, Reason.BEARER_UNBOUND, 401)
    assert d.token_like


def test_imported_unprefixed_secret_works() -> None:
    imported = "extender-plain-random-string-0123456789"
    t = tok(secret_hash=token_format.hash_secret(imported))
    assert decide(req(basic("alice", imported)), t).outcome is Outcome.ALLOW
    assert decide(req(f"Bearer {imported}"), t).outcome is Outcome.ALLOW


# --- pass-through / unauthenticated ------------------------------------------------------------


def test_no_credentials_passes() -> None:
    d = decide(req(None))
    assert d.outcome is Outcome.PASS
    assert d.reason is Reason.NO_CREDENTIALS
    assert d.status == 200
    assert d.forwarded
    assert not d.token_like


def test_no_credentials_denied_by_policy() -> None:
    d = decide(req(None), policy=Policy(deny_unauthenticated=True))
    assert_deny(d, Reason.UNAUTHENTICATED_DENIED, 401)
    assert not d.token_like


@pytest.mark.parametrize("value", ["Negotiate YIIBhwYGKwYBBQUC", "OAuth abc", "Digest x=y"])
def test_other_schemes_pass(value: str) -> None:
    assert decide(req(value)).outcome is Outcome.PASS
    d = decide(req(value), policy=Policy(deny_unauthenticated=True))
    assert_deny(d, Reason.UNAUTHENTICATED_DENIED, 401)


def test_basic_jira_password_passes() -> None:
    d = decide(req(basic("alice", PASSWORD)))
    assert d.outcome is Outcome.PASS
    assert d.reason is Reason.NOT_A_TOKEN
    assert not d.token_like


def test_basic_jira_password_denied_by_policy() -> None:
    d = decide(req(basic("alice", PASSWORD)), policy=Policy(deny_unauthenticated=True))
    assert_deny(d, Reason.UNAUTHENTICATED_DENIED, 401)


def test_bearer_jira_pat_passes() -> None:
    d = decide(req("Bearer NjE2NDQzMDQ3NTYxOhq0Ry1pSGgCAxG2rFq9SOHSKmRB"))
    assert d.outcome is Outcome.PASS
    assert d.reason is Reason.NOT_A_TOKEN


def test_password_on_non_rest_path_passes() -> None:
    d = decide(req(basic("alice", PASSWORD), path="/secure/Dashboard.jspa"))
    assert d.outcome is Outcome.PASS


def test_not_a_token_helper() -> None:
    assert not_a_token(Policy(), Reason.NO_CREDENTIALS, "m").outcome is Outcome.PASS
    d = not_a_token(Policy(deny_unauthenticated=True), Reason.NO_CREDENTIALS, "m")
    assert d.reason is Reason.UNAUTHENTICATED_DENIED and d.status == 401


# --- malformed credentials and tokens ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!",
        "Basic " + base64.b64encode(b"alice").decode(),
        "Basic " + base64.b64encode(b"alice:").decode(),
        "Basic " + base64.b64encode(b"alice:\xff").decode(),
        "Bearer a b",
        "Bearer",
        basic("alice", SECRET) + "," + basic("alice", SECRET),
    ],
)
def test_malformed_credentials_401(value: str) -> None:
    d = decide(req(value))
    assert_deny(d, Reason.MALFORMED_CREDENTIALS, 401)
    # Even with pass-through configured: a malformed header is never forwarded.
    assert decide(req(value), policy=Policy(deny_unauthenticated=False)).status == 401


def test_malformed_with_token_secret_is_token_like() -> None:
    d = decide(req("Basic " + base64.b64encode(f":{SECRET}".encode()).decode()))
    assert_deny(d, Reason.MALFORMED_CREDENTIALS, 401)
    assert d.token_like


def test_oversized_header_uses_policy_limit() -> None:
    value = basic("alice", SECRET)
    assert decide(req(value), policy=Policy(max_header_bytes=len(value))).forwarded
    d = decide(req(value), policy=Policy(max_header_bytes=len(value) - 1))
    assert_deny(d, Reason.MALFORMED_CREDENTIALS, 401)


@pytest.mark.parametrize(
    "secret",
    [BAD_CHECKSUM, SECRET + "x", SECRET[:-1], "jat_", "jat_short", "jat_" + "!" * 38],
)
def test_prefixed_token_with_bad_checksum_or_length(secret: str) -> None:
    for value in (basic("alice", secret), f"Bearer {secret}"):
        d = decide(req(value))
        assert d.reason in (Reason.MALFORMED_TOKEN, Reason.MALFORMED_CREDENTIALS), d
        assert d.status == 401
        assert d.token_like or d.reason is Reason.MALFORMED_CREDENTIALS


def test_bad_checksum_rejected_before_lookup() -> None:
    r = req(basic("alice", BAD_CHECKSUM))
    first = screen(r, Policy())
    assert isinstance(first, Decision)
    assert_deny(first, Reason.MALFORMED_TOKEN, 401)
    assert first.login == "alice"
    assert first.token_like


def test_unknown_prefixed_token() -> None:
    d = decide(req(basic("alice", OTHER_SECRET)))
    assert_deny(d, Reason.UNKNOWN_TOKEN, 401)
    assert d.token_like
    assert d.token is None
    # Never passed through to Jira, even with pass-through configured.
    d = decide(req(f"Bearer {OTHER_SECRET}"), policy=Policy(deny_unauthenticated=False))
    assert_deny(d, Reason.UNKNOWN_TOKEN, 401)


# --- scheme policy -----------------------------------------------------------------------------


def test_bearer_not_allowed_for_token() -> None:
    policy = Policy(schemes=frozenset({"basic"}))
    d = decide(req(f"Bearer {SECRET}"), policy=policy)
    assert_deny(d, Reason.SCHEME_NOT_ALLOWED, 401)
    assert d.token_like
    assert "Bearer" in d.message
    assert decide(req(basic("alice", SECRET)), policy=policy).outcome is Outcome.ALLOW


def test_basic_not_allowed_for_token() -> None:
    policy = Policy(schemes=frozenset({"bearer"}))
    d = decide(req(basic("alice", SECRET)), policy=policy)
    assert_deny(d, Reason.SCHEME_NOT_ALLOWED, 401)
    assert d.login == "alice"
    assert decide(req(f"Bearer {SECRET}"), policy=policy).outcome is Outcome.ALLOW


def test_disallowed_scheme_without_token_passes_or_denies_by_policy() -> None:
    policy = Policy(schemes=frozenset({"bearer"}))
    d = decide(req(basic("alice", PASSWORD)), policy=policy)
    assert d.outcome is Outcome.PASS
    assert d.reason is Reason.NOT_A_TOKEN
    policy = Policy(schemes=frozenset({"bearer"}), deny_unauthenticated=True)
    assert_deny(decide(req(basic("alice", PASSWORD)), policy=policy),
                Reason.UNAUTHENTICATED_DENIED, 401)


# --- token state -------------------------------------------------------------------------------


def test_revoked() -> None:
    d = decide(req(basic("alice", SECRET)), tok(revoked_at=NOW - 1))
    assert_deny(d, Reason.REVOKED, 401)
    assert d.token_like and d.token is not None


def test_revocation_grace_period() -> None:
    # A future revoked_at is a rotation's grace period: usable until then, revoked from then on.
    t = tok(revoked_at=NOW + 3600)
    assert decide(req(basic("alice", SECRET)), t).outcome is Outcome.ALLOW
    assert_deny(decide(req(basic("alice", SECRET)), t, now=NOW + 3600), Reason.REVOKED, 401)
    assert_deny(decide(req(basic("alice", SECRET)), t, now=NOW + 3601), Reason.REVOKED, 401)


def test_expired() -> None:
    d = decide(req(basic("alice", SECRET)), tok(expires_at=NOW - 1))
    assert_deny(d, Reason.EXPIRED, 401)


def test_expiry_boundary() -> None:
    t = tok(expires_at=NOW)
    assert_deny(decide(req(basic("alice", SECRET)), t, now=NOW), Reason.EXPIRED, 401)
    assert decide(req(basic("alice", SECRET)), t, now=NOW - 0.001).outcome is Outcome.ALLOW


# --- IP ----------------------------------------------------------------------------------------


def test_ip_allowed_and_refused() -> None:
    t = tok(ips=("10.0.0.0/24",))
    assert decide(req(basic("alice", SECRET), source_ip="10.0.0.9"), t).forwarded
    d = decide(req(basic("alice", SECRET), source_ip="10.0.1.9"), t)
    assert_deny(d, Reason.IP_NOT_ALLOWED, 403)
    assert d.effective_user == "alice"


def test_ip_from_trusted_xff_hop() -> None:
    t = tok(ips=("203.0.113.0/24",))
    policy = Policy(xff_trusted_hops=1)
    # Envoy appended its peer (the balancer, 10.0.0.1) after the balancer's entry.
    r = req(basic("alice", SECRET), source_ip="10.0.0.1",
            x_forwarded_for="203.0.113.5, 10.0.0.1")
    assert decide(r, t, policy).forwarded
    # Not trusted by default: the socket address (the load balancer) is judged.
    assert_deny(decide(r, t), Reason.IP_NOT_ALLOWED, 403)
    # Spoofed leftmost entry does not help.
    r = req(basic("alice", SECRET), source_ip="10.0.0.1",
            x_forwarded_for="203.0.113.5, 198.51.100.1, 10.0.0.1")
    assert_deny(decide(r, t, policy), Reason.IP_NOT_ALLOWED, 403)
    # The balancer's own address is never the client: the old off-by-one (issue 13).
    r = req(basic("alice", SECRET), source_ip="203.0.113.9",
            x_forwarded_for="198.51.100.7, 203.0.113.9")
    assert_deny(decide(r, t, policy), Reason.IP_NOT_ALLOWED, 403)


def test_xff_shorter_than_hops_falls_back_to_socket() -> None:
    t = tok(ips=("203.0.113.0/24",))
    r = req(basic("alice", SECRET), source_ip="10.0.0.1", x_forwarded_for="203.0.113.5")
    assert_deny(decide(r, t, Policy(xff_trusted_hops=2)), Reason.IP_NOT_ALLOWED, 403)
    t2 = tok(ips=("10.0.0.1",))
    assert decide(r, t2, Policy(xff_trusted_hops=2)).forwarded


def test_ipv4_mapped_socket_address() -> None:
    t = tok(ips=("10.0.0.0/8",))
    assert decide(req(basic("alice", SECRET), source_ip="::ffff:10.1.1.1"), t).forwarded


# --- path --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/rest/api/2/issue/../project", "/rest//api", "/rest/api/2/issue/%2e%2e",
     "/rest/api/2/issue/..;/x", "/rest/api/2/issue%2fx"],
)
def test_non_normal_path_400_before_anything(path: str) -> None:
    for auth in (None, basic("alice", SECRET), basic("alice", PASSWORD), "Basic !!!"):
        d = decide(req(auth, path=path))
        assert_deny(d, Reason.NON_NORMAL_PATH, 400)


@pytest.mark.parametrize("path", ["/secure/Dashboard.jspa", "/rest", "/restapi/x", "/REST/api",
                                  "/plugins/servlet/x", "/"])
def test_token_outside_supported_prefixes(path: str) -> None:
    d = decide(req(basic("alice", SECRET), path=path))
    assert_deny(d, Reason.UNSUPPORTED_PATH, 403)
    assert d.token_like


def test_context_path_prefixes() -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_AUTH_CONTEXT_PATH": "/jira"})
    policy = decision_policy(cfg)
    assert policy.token_prefixes == ("/jira/rest/",)
    assert decide(req(basic("alice", SECRET), path="/jira/rest/api/2/issue/A-1"),
                  policy=policy).forwarded
    assert_deny(decide(req(basic("alice", SECRET), path="/rest/api/2/issue/A-1"), policy=policy),
                Reason.UNSUPPORTED_PATH, 403)


def test_limits_see_context_path_in_url() -> None:
    policy = Policy(token_prefixes=("/jira/rest/",))
    t = tok(limits=(".*/jira/rest/api/2/issue/.*",))
    assert decide(req(basic("alice", SECRET), path="/jira/rest/api/2/issue/A-1"), t,
                  policy).forwarded


# --- limits ------------------------------------------------------------------------------------


def test_limit_matched_is_reported() -> None:
    line = "[get].*/rest/api/2/issue/.*"
    t = tok(limits=(line,))
    d = decide(req(basic("alice", SECRET)), t)
    assert d.outcome is Outcome.ALLOW
    assert d.matched_limit == line


def test_no_limit_matched() -> None:
    t = tok(limits=("[post].*/rest/api/2/issue/KANBAN-100/comment.*",))
    d = decide(req(basic("alice", SECRET), path="/rest/api/2/issue/KANBAN-100/comment"), t)
    assert_deny(d, Reason.NO_LIMIT_MATCHED, 403)
    assert "GET" in d.message  # the why
    assert d.effective_user == "alice"


def test_query_cannot_satisfy_url_limit() -> None:
    t = tok(limits=(".*/rest/api/2/issue.*",))
    r = req(basic("alice", SECRET), path="/rest/api/2/project", query="x=/rest/api/2/issue")
    assert r.url == "https://jira.example.com/rest/api/2/project"
    assert_deny(decide(r, t), Reason.NO_LIMIT_MATCHED, 403)


def test_json_limit_uses_body() -> None:
    t = tok(limits=("[post].*/rest/api/2/issue[JsonData::fields.project.key==SCRUM]",))
    ok = req(basic("alice", SECRET), method="POST", path="/rest/api/2/issue",
             body=b'{"fields": {"project": {"key": "SCRUM"}}}')
    assert decide(ok, t).forwarded
    bad = ok._replace(body=b'{"fields": {"project": {"key": "X"}}}')
    assert_deny(decide(bad, t), Reason.NO_LIMIT_MATCHED, 403)
    trunc = ok._replace(body_truncated=True)
    assert_deny(decide(trunc, t), Reason.NO_LIMIT_MATCHED, 403)


def test_token_with_only_corrupt_limits_is_not_unrestricted() -> None:
    t = tok(limits=("[gte].*/rest/api/2/issue/.*",))
    d = decide(req(basic("alice", SECRET), method="DELETE", path="/rest/api/2/project/X"), t)
    assert d.outcome is Outcome.DENY


# --- on behalf of ------------------------------------------------------------------------------


def test_on_behalf_of_allowed_by_list() -> None:
    t = tok(on_behalf_of=("bob", "carol"))
    d = decide(req(basic("alice", SECRET), contextuser="bob"), t)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "bob"
    assert d.token is t
    assert d.login == "alice"


def test_on_behalf_of_case_insensitive_and_trimmed() -> None:
    t = tok(on_behalf_of=("Bob",))
    d = decide(req(basic("alice", SECRET), contextuser="  BOB "), t)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user.casefold() == "bob"


def test_on_behalf_of_wildcard() -> None:
    t = tok(on_behalf_of=("*",))
    d = decide(req(basic("alice", SECRET), contextuser="anyone"), t)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "anyone"


def test_on_behalf_of_not_listed() -> None:
    t = tok(on_behalf_of=("carol",))
    d = decide(req(basic("alice", SECRET), contextuser="bob"), t)
    assert_deny(d, Reason.ON_BEHALF_NOT_ALLOWED, 403)
    assert d.effective_user == "bob"
    assert d.token_like


def test_on_behalf_of_default_none() -> None:
    d = decide(req(basic("alice", SECRET), contextuser="bob"))
    assert_deny(d, Reason.ON_BEHALF_NOT_ALLOWED, 403)


@pytest.mark.parametrize("value", ["bob,carol", "bob, carol", "alice,bob", "bob,bob", ","])
def test_on_behalf_of_comma_joined_duplicates_refused(value: str) -> None:
    t = tok(on_behalf_of=("*",))
    d = decide(req(basic("alice", SECRET), contextuser=value), t)
    assert_deny(d, Reason.ON_BEHALF_NOT_ALLOWED, 403)


@pytest.mark.parametrize("value", ["alice", "ALICE", " alice ", "", "   "])
def test_identity_header_equal_to_own_user_or_empty_is_fine(value: str) -> None:
    d = decide(req(basic("alice", SECRET), contextuser=value))
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "alice"


def test_identity_header_for_unbound_token_compares_with_login() -> None:
    d = decide(req(basic("Bob", SECRET), contextuser="bob"), UNBOUND)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "Bob"
    d = decide(req(basic("bob", SECRET), contextuser="carol"), UNBOUND)
    assert_deny(d, Reason.ON_BEHALF_NOT_ALLOWED, 403)


def test_configured_identity_header_name() -> None:
    policy = Policy(identity_header="x-forwarded-user")
    t = tok(on_behalf_of=("bob",))
    d = decide(req(basic("alice", SECRET), x_forwarded_user="bob"), t, policy)
    assert d.effective_user == "bob"
    # contextUser is just another header now.
    d = decide(req(basic("alice", SECRET), contextuser="mallory"), t, policy)
    assert d.outcome is Outcome.ALLOW
    assert d.effective_user == "alice"


def test_on_behalf_of_decided_after_limits() -> None:
    t = tok(on_behalf_of=("bob",), limits=("[post].*/rest/.*",))
    d = decide(req(basic("alice", SECRET), contextuser="mallory"), t)
    assert d.reason is Reason.NO_LIMIT_MATCHED
    t2 = tok(on_behalf_of=("bob",), limits=("[get].*/rest/.*",))
    d = decide(req(basic("alice", SECRET), contextuser="mallory"), t2)
    assert d.reason is Reason.ON_BEHALF_NOT_ALLOWED
    assert d.matched_limit == "[get].*/rest/.*"


# --- order of checks ---------------------------------------------------------------------------

ALL_BAD = dict(
    revoked_at=NOW - 1,
    expires_at=NOW - 1,
    ips=("192.0.2.0/24",),
    limits=("[post].*/nothing",),
    on_behalf_of=(),
)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ((), Reason.REVOKED),
        (("revoked_at",), Reason.EXPIRED),
        (("revoked_at", "expires_at"), Reason.WRONG_USER),
        (("revoked_at", "expires_at", "user"), Reason.IP_NOT_ALLOWED),
        (("revoked_at", "expires_at", "user", "ips"), Reason.UNSUPPORTED_PATH),
        (("revoked_at", "expires_at", "user", "ips", "path"), Reason.NO_LIMIT_MATCHED),
        (("revoked_at", "expires_at", "user", "ips", "path", "limits"),
         Reason.ON_BEHALF_NOT_ALLOWED),
        (("revoked_at", "expires_at", "user", "ips", "path", "limits", "obo"), Reason.OK),
    ],
)
def test_order_of_checks(drop: tuple[str, ...], reason: Reason) -> None:
    fields = {k: v for k, v in ALL_BAD.items() if k not in drop}
    login = "alice" if "user" in drop else "mallory"
    path = "/rest/api/2/issue/A-1" if "path" in drop else "/secure/x"
    headers = {} if "obo" in drop else {"contextuser": "bob"}
    d = decide(req(basic(login, SECRET), path=path, **headers), tok(**fields))
    assert d.reason is reason, d


def test_non_normal_path_before_malformed_credentials() -> None:
    d = decide(req("Basic !!!", path="/rest/../x"))
    assert d.reason is Reason.NON_NORMAL_PATH


def test_bearer_unbound_before_ip() -> None:
    t = dataclasses.replace(UNBOUND, ips=("192.0.2.0/24",))
    assert decide(req(f"Bearer {SECRET}"), t).reason is Reason.BEARER_UNBOUND


def test_revoked_wins_over_ip_and_wrong_user() -> None:
    t = tok(revoked_at=NOW - 5, ips=("192.0.2.0/24",))
    assert decide(req(basic("mallory", SECRET)), t).reason is Reason.REVOKED


# --- Policy ------------------------------------------------------------------------------------


def test_policy_from_config() -> None:
    cfg = load_config(environ={
        "JIRA_AUTHZ_AUTH_SCHEMES": "bearer",
        "JIRA_AUTHZ_AUTH_UNAUTHENTICATED": "deny",
        "JIRA_AUTHZ_IDENTITY_HEADER": "X-Forwarded-User",
        "JIRA_AUTHZ_CLIENT_IP_XFF_TRUSTED_HOPS": "2",
        "JIRA_AUTHZ_AUTH_MAX_HEADER_BYTES": "1024",
        "JIRA_AUTHZ_AUTH_PATH_PREFIXES": "/rest/,/plugins/servlet/",
        "JIRA_AUTHZ_AUTH_CONTEXT_PATH": "/jira/",
    })
    p = decision_policy(cfg)
    assert p == Policy(
        schemes=frozenset({"bearer"}),
        deny_unauthenticated=True,
        token_prefixes=("/jira/rest/", "/jira/plugins/servlet/"),
        identity_header="x-forwarded-user",
        xff_trusted_hops=2,
        max_header_bytes=1024,
    )


def test_policy_defaults_match_config_defaults() -> None:
    assert decision_policy(load_config(environ={})) == Policy()


# --- properties --------------------------------------------------------------------------------


@given(
    st.one_of(st.none(), st.text(max_size=120)),
    st.text(max_size=60).map(lambda s: "/rest/" + s),
    st.text(max_size=20),
)
def test_decision_never_raises_and_never_leaks(auth: str | None, path: str, obo: str) -> None:
    r = req(auth, path=path, contextuser=obo)
    d = decide(r)
    assert isinstance(d, Decision)
    assert d.status in (200, 400, 401, 403)
    assert (d.outcome is Outcome.DENY) == (d.status != 200)
    assert SECRET not in d.message


@given(st.sampled_from([SECRET, BAD_CHECKSUM, OTHER_SECRET, PASSWORD]),
       st.sampled_from(["alice", "ALICE", "bob"]),
       st.booleans(), st.booleans())
def test_decision_status_matches_reason(secret: str, login: str, bearer: bool,
                                        deny: bool) -> None:
    auth = f"Bearer {secret.replace(' ', '')}" if bearer else basic(login, secret)
    d = decide(req(auth), policy=Policy(deny_unauthenticated=deny))
    assert d.status == STATUS[d.reason]
    if secret == SECRET and (bearer or login != "bob"):
        assert d.outcome is Outcome.ALLOW


def test_status_table_covers_every_reason() -> None:
    """One table answers every reason; only the pass-through and allow reasons answer 200."""
    assert set(STATUS) == set(Reason)
    assert set(STATUS.values()) == {200, 400, 401, 403, 503}
    assert {r for r, s in STATUS.items() if s == 200} == {
        Reason.OK, Reason.NOT_A_TOKEN, Reason.NO_CREDENTIALS}
    assert STATUS[Reason.STORE_UNAVAILABLE] == STATUS[Reason.AUDIT_UNAVAILABLE] == 503


# --- issue 13: what is judged is what Jira acts on -------------------------------------------


@pytest.mark.parametrize("method", ["post", "Post", "gEt", "GET ", "", "P\x00ST", "PROPFIND"])
def test_non_canonical_method_refused(method: str) -> None:
    for auth in (basic("alice", SECRET), None):  # token calls and pass-through alike
        assert_deny(decide(req(auth, method=method)), Reason.NON_CANONICAL_METHOD, 400)


def test_lowercase_method_never_satisfies_a_method_line() -> None:
    t = tok(limits=("[post].*/rest/api/2/issue/.*",))
    assert decide(req(basic("alice", SECRET), method="POST"), t).forwarded
    assert_deny(decide(req(basic("alice", SECRET), method="post"), t),
                Reason.NON_CANONICAL_METHOD, 400)


@pytest.mark.parametrize("host", [
    "x/rest/api/2/issue/KANBAN-100/comment", "jira?x", "jira#x", "a@jira", "jira\\x",
    "jira x", "", "jira:8o", "[::1", "jira\r\n", "é.example.com",
])
def test_host_with_path_text_refused(host: str) -> None:
    r = req(basic("alice", SECRET))._replace(host=host)
    assert_deny(decide(r, tok(limits=(".*/rest/api/2/issue/KANBAN-100/comment.*",))),
                Reason.INVALID_HOST, 400)


@pytest.mark.parametrize("scheme", ["HTTPS", "ftp", "", "https://x/rest/api/2/issue/A-1#",
                                    "http,https"])
def test_scheme_other_than_http_or_https_refused(scheme: str) -> None:
    assert_deny(decide(req(basic("alice", SECRET))._replace(scheme=scheme)),
                Reason.INVALID_SCHEME, 400)


@pytest.mark.parametrize("header", ["x-http-method-override", "x-http-method",
                                    "x-method-override"])
def test_method_override_refused_on_token_calls(header: str) -> None:
    r = req(basic("alice", SECRET), method="POST", **{header.replace("-", "_"): "DELETE"})
    assert_deny(decide(r, tok(limits=("[post].*",))), Reason.METHOD_OVERRIDE, 400)
    # Not a token call (a Jira password): passed to Jira's own authentication as before.
    assert decide(req(basic("alice", "a-password"), method="POST",
                      **{header.replace("-", "_"): "DELETE"}), None).outcome is Outcome.PASS


def test_unbound_token_refused_under_service_credential() -> None:
    unbound = tok(user=None)
    r = req(basic("whoever", SECRET))
    assert decide(r, unbound).forwarded
    policy = Policy(service_credential=True)
    assert_deny(decide(r, unbound, policy), Reason.UNBOUND_WITH_SERVICE_CREDENTIAL, 401)
    assert decide(req(basic("alice", SECRET)), tok(), policy).forwarded  # bound: unaffected
    allowed = Policy(service_credential=True, allow_unbound_with_service_credential=True)
    assert decide(r, unbound, allowed).forwarded


def test_service_credential_policy_from_config(tmp_path: object) -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_IDENTITY_UPSTREAM_AUTHORIZATION_FILE": "/x"})
    p = decision_policy(cfg)
    assert p.service_credential and not p.allow_unbound_with_service_credential
    assert not decision_policy(load_config(environ={})).service_credential
