"""Bugs the hardening suites found in ``authz.domain``, pinned so they stay fixed.

Each test failed before its fix; the fix lives in its own commit.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from authz.domain import token_format
from authz.domain.decide import Policy, judge, screen
from authz.domain.model import Decision, HttpRequest, Outcome, Reason, Token

SECRET = token_format.generate_secret()


def _request(login: str, **headers: str) -> HttpRequest:
    auth = "Basic " + base64.b64encode(f"{login}:{SECRET}".encode()).decode()
    return HttpRequest("GET", "https", "jira.example.com", "/rest/api/2/myself", "",
                       {"authorization": auth, **headers}, "10.0.0.7")


def _decide(token: Token, login: str, **headers: str) -> Decision:
    r = _request(login, **headers)
    first = screen(r, Policy())
    assert not isinstance(first, Decision), first
    return judge(r, first, token, Policy(), 0.0)


# Jira lower-cases user names (Java's toLowerCase): it keeps "maß" and "mass", "ﬀ" and "ff"
# apart. Unicode case folding merges them, so comparing with casefold() let a token allowed to
# act for "mass" act for the distinct Jira user "maß".
FOLD_ONLY = [("mass", "maß"), ("MASS", "MAẞ"), ("ff", "ﬀ"), ("strasse", "straße"),
             ("ss", "ß"), ("fi", "ﬁ")]


@pytest.mark.parametrize(("allowed", "requested"), FOLD_ONLY)
def test_on_behalf_of_does_not_equate_case_folded_names(allowed: str, requested: str) -> None:
    token = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), user="alice",
                  on_behalf_of=(allowed,))
    d = _decide(token, "alice", contextuser=requested)
    assert d.outcome is Outcome.DENY, d.effective_user
    assert d.reason is Reason.ON_BEHALF_NOT_ALLOWED and d.status == 403


@pytest.mark.parametrize(("user", "requested"), FOLD_ONLY)
def test_identity_header_fold_equal_to_own_user_is_another_user(
    user: str, requested: str
) -> None:
    """Before the fix, "maß" counted as the token's own user "mass": allowed, and Jira got
    "mass". It is another Jira account, so it needs on-behalf-of permission."""
    token = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), user=user)
    d = _decide(token, user, contextuser=requested)
    assert d.outcome is Outcome.DENY and d.reason is Reason.ON_BEHALF_NOT_ALLOWED


@pytest.mark.parametrize(("user", "login"), FOLD_ONLY)
def test_bound_login_not_matched_by_case_folding(user: str, login: str) -> None:
    token = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), user=user)
    d = _decide(token, login)
    assert d.outcome is Outcome.DENY
    assert d.reason is Reason.WRONG_USER and d.status == 401


@pytest.mark.parametrize(("user", "variant"), [("alice", "ALICE"), ("maß", "MAẞ"),
                                               ("émile", "ÉMILE"), ("kate", "\u212aATE")])
def test_case_variants_still_equal(user: str, variant: str) -> None:
    """Plain case differences (as Jira lower-cases them) keep working everywhere."""
    token = Token(id="t1", secret_hash=token_format.hash_secret(SECRET), user=user,
                  on_behalf_of=(user,))
    d = _decide(token, variant)
    assert d.outcome is Outcome.ALLOW and d.effective_user == user
    d = _decide(token, user, contextuser=variant)
    assert d.outcome is Outcome.ALLOW


# A malformed header that still carries one of our tokens is a token call: product.md §7 wants every
# token call audited, and probing with a stolen token in a duplicated or garbled header must
# leave a trace. Before the fix these were refused (401) without an audit event.
def _basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


TOKEN_IN_MALFORMED = [
    pytest.param(f"Bearer {SECRET} extra", id="bearer-two-words"),
    pytest.param(f"Bearer {SECRET}\x0b", id="bearer-vertical-tab"),
    pytest.param(f"{_basic('alice', SECRET)}, {_basic('admin', 'jira-password')}",
                 id="duplicate-token-then-password"),
    pytest.param(f"{_basic('admin', 'jira-password')}, Bearer {SECRET}",
                 id="duplicate-password-then-bearer"),
    pytest.param(f"Bearer {SECRET},Bearer {SECRET}", id="duplicate-same-token"),
    pytest.param(f"Bearer jat_,{SECRET[4:]}", id="comma-inside-token"),
    pytest.param(_basic("ali\x01ce", SECRET), id="control-char-login"),
    pytest.param(_basic("alice", SECRET + "\x7f"), id="control-char-secret"),
    pytest.param("Basic " + base64.b64encode(SECRET.encode()).decode(), id="no-colon"),
]


@pytest.mark.parametrize("auth", TOKEN_IN_MALFORMED)
def test_malformed_header_with_a_token_is_audited(auth: str) -> None:
    r = HttpRequest("GET", "https", "jira.example.com", "/rest/api/2/myself", "",
                    {"authorization": auth}, "10.0.0.7")
    d = screen(r, Policy())
    assert isinstance(d, Decision) and d.status == 401, d
    assert d.token_like, "a token call refused without an audit event"
    assert SECRET not in d.message


@pytest.mark.parametrize("auth", [
    f"{_basic('alice', 'pw-one-123')}, {_basic('bob', 'pw-two-456')}",
    "Bearer pat one two",
    _basic("ali\x01ce", "jira-password"),
])
def test_malformed_header_without_a_token_is_not_audited(auth: str) -> None:
    r = HttpRequest("GET", "https", "jira.example.com", "/rest/api/2/myself", "",
                    {"authorization": auth}, "10.0.0.7")
    d = screen(r, Policy())
    assert isinstance(d, Decision) and d.status == 401
    assert not d.token_like


# A secret where a user name belongs (the Basic login, the identity header) became the
# decision's login / effective user: the server's access log, the span's enduser.id and Jira's
# contextUser carried it (the audit masks only fragments of the credential itself). Found by the
# secret-hygiene scan (tests/hardening/test_zz_secret_hygiene.py).
OTHER = token_format.generate_secret()


def _screen_and_judge(auth: str, token: Token | None, **headers: str) -> Decision:
    r = HttpRequest("GET", "https", "jira.example.com", "/rest/api/2/myself", "",
                    {"authorization": auth, **headers}, "10.0.0.7")
    first = screen(r, Policy())
    if isinstance(first, Decision):
        return first
    found = token if token and token_format.hash_secret(first.secret) == token.secret_hash else None
    return judge(r, first, found, Policy(), 0.0)


@pytest.mark.parametrize("password", [SECRET, "", "x-oauth-basic", "jira-password"],
                         ids=["a-token", "empty", "x-oauth-basic", "password"])
def test_token_as_basic_login_is_refused_and_never_a_user(password: str) -> None:
    """``curl -u "$TOKEN:"`` (or with GitHub's x-oauth-basic, or another token): the token is
    in the login. Refused with a clear 401, audited, and the login is never echoed."""
    unbound = Token(id="u1", secret_hash=token_format.hash_secret(SECRET))
    d = _screen_and_judge(_basic(OTHER, password), unbound)
    assert d.outcome is Outcome.DENY and d.status == 401, d
    assert d.reason is Reason.MALFORMED_CREDENTIALS
    assert d.token_like
    for field in (d.login, d.effective_user, d.message):
        assert OTHER not in field and OTHER[4:] not in field


@pytest.mark.parametrize("identity", [SECRET, OTHER, f" {OTHER} ", "jat_anything"],
                         ids=["own-token", "other-token", "padded-token", "prefixed"])
def test_token_in_identity_header_is_refused_and_never_a_user(identity: str) -> None:
    star = Token(id="s1", secret_hash=token_format.hash_secret(SECRET), user="alice",
                 on_behalf_of=("*",))
    d = _screen_and_judge(_basic("alice", SECRET), star, contextuser=identity)
    assert d.outcome is Outcome.DENY and d.status == 403, d
    assert d.reason is Reason.ON_BEHALF_NOT_ALLOWED
    assert identity.strip() not in d.effective_user and identity.strip() not in d.message


# One comparison rule for logins everywhere (issue 14): the audit query, ``token list --user``,
# the console's "own token" check and the per-user cap used casefold() while the decision did
# not, so ``--user mass`` listed maß's tokens and events.


@pytest.mark.parametrize(("a", "b"), FOLD_ONLY)
def test_every_login_comparison_keeps_fold_only_names_apart(a: str, b: str) -> None:
    from authz.admin.operations import TokenAdmin
    from authz.domain.audit_event import AuditRecord
    from authz.domain.issuing import IssuePolicy
    from authz.domain.lifecycle import TokenFilter
    from authz.domain.logins import login_key, same_user

    assert not same_user(a, b) and login_key(a) != login_key(b)
    assert same_user(a, a.upper()) and same_user(b, b)
    for field in ("token_user", "login", "effective_user"):
        rec = AuditRecord(time="", **{field: b})
        assert not rec.matches_user(a) and rec.matches_user(b)
    theirs = Token(id="t", secret_hash="h", user=b)
    assert not TokenFilter(user=a).matches(theirs, 0.0)
    assert TokenFilter(user=b).matches(theirs, 0.0)

    class Store:
        async def list(self) -> list[Token]:
            return [theirs, Token(id="u", secret_hash="h2", user=b)]

    ops = object.__new__(TokenAdmin)  # only the store and the cap are read
    ops.store = Store()  # type: ignore[assignment]
    ops.policy = IssuePolicy(max_active_tokens_per_user=5)
    assert asyncio.run(ops._active_for_user(a, 0.0)) == 0
    assert asyncio.run(ops._active_for_user(b, 0.0)) == 2
