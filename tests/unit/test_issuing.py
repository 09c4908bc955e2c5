"""Creating a token (product.md §2, §4): every field validated up front; only the hash is kept."""

from __future__ import annotations

import math
import re

import pytest

from authz.domain import token_format
from authz.domain.issuing import (
    DAY,
    MAX_LABEL,
    MAX_LOGIN,
    InvalidToken,
    TokenRequest,
    issue,
    new_token_id,
    validate_request,
)
from authz.domain.model import Token

NOW = 1_700_000_000.0


def problems(req: TokenRequest, *, max_days: float = 0.0, **kw: bool) -> list[str]:
    return validate_request(req, now=NOW, max_lifetime_days=max_days, **kw)


def refused(req: TokenRequest, words: str, *, max_days: float = 0.0) -> str:
    got = problems(req, max_days=max_days)
    assert len(got) == 1, got
    assert words.lower() in got[0].lower(), got
    with pytest.raises(InvalidToken) as ei:
        issue(req, now=NOW, max_lifetime_days=max_days)
    assert ei.value.problems == got
    assert words.lower() in str(ei.value).lower()
    return got[0]


# --- a good request ----------------------------------------------------------------------------


def test_generated_secret_token() -> None:
    req = TokenRequest(
        label="ci bot", user="alice", logins=["alice@example.com", "alice@example.com"],
        expires_at=NOW + 10 * DAY, limits=["  [get].*/rest/api/2/issue.*  ", "[post].*/x"],
        ips=[" 10.0.0.0/8 ", "2001:db8::/32"], on_behalf_of=["bob", "*", "bob"],
        created_by="admin",
    )
    token, secret = issue(req, now=NOW, max_lifetime_days=30)
    assert isinstance(token, Token)
    assert token_format.is_well_formed(secret)
    assert token.secret_hash == token_format.hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", token.secret_hash)
    assert re.fullmatch(r"[0-9a-f]{12}", token.id)
    assert token.label == "ci bot"
    assert token.user == "alice"
    assert token.logins == ("alice@example.com",)  # de-duplicated
    assert token.expires_at == NOW + 10 * DAY
    assert token.created_at == NOW
    assert token.created_by == "admin"
    assert token.limits == ("[get].*/rest/api/2/issue.*", "[post].*/x")  # stripped
    assert token.ips == ("10.0.0.0/8", "2001:db8::/32")
    assert token.on_behalf_of == ("bob", "*")
    assert token.revoked_at is None
    assert token.use_count == 0


def test_secret_never_in_token() -> None:
    token, secret = issue(TokenRequest(label="x"), now=NOW)
    assert secret not in repr(token)
    for value in (token.id, token.label, token.secret_hash, token.created_by):
        assert secret not in value


def test_each_issue_draws_fresh_secret_and_id() -> None:
    (t1, s1), (t2, s2) = issue(TokenRequest(), now=NOW), issue(TokenRequest(), now=NOW)
    assert s1 != s2
    assert t1.id != t2.id
    assert t1.secret_hash != t2.secret_hash


def test_minimal_request_is_unbound_and_unrestricted() -> None:
    token, _ = issue(TokenRequest(), now=NOW)
    assert token.user is None
    assert token.expires_at is None
    assert token.limits == ()
    assert token.ips == ()
    assert token.on_behalf_of == ()


def test_imported_secret_kept_and_hashed() -> None:
    imported = "Xk9pQ2mZ7vL4wR8tY1uE"
    req = TokenRequest(label="from extender", user="alice", secret=imported,
                       created_at=NOW - 400 * DAY, use_count=17)
    token, secret = issue(req, now=NOW)
    assert secret == imported
    assert token.secret_hash == token_format.hash_secret(imported)
    assert token.created_at == NOW - 400 * DAY
    assert token.use_count == 17
    assert imported not in repr(req)


def test_imported_well_formed_prefixed_secret_accepted() -> None:
    s = token_format.generate_secret()
    _, secret = issue(TokenRequest(secret=s), now=NOW)
    assert secret == s


def test_new_token_id() -> None:
    ids = {new_token_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


# --- every refusal -----------------------------------------------------------------------------


def test_expiry_in_the_past() -> None:
    refused(TokenRequest(expires_at=NOW - 1), "future")
    refused(TokenRequest(expires_at=NOW), "future")


def test_expired_import_allowed_with_flag() -> None:
    req = TokenRequest(expires_at=NOW - DAY, secret="Xk9pQ2mZ7vL4wR8tY1uE")
    assert problems(req, allow_expired=True) == []
    # The lifetime policy is moot for an already expired import.
    assert problems(req, max_days=30, allow_expired=True) == []
    token, _ = issue(req, now=NOW, allow_expired=True)
    assert token.is_expired(NOW)


def test_policy_max_lifetime() -> None:
    refused(TokenRequest(), "within 30 days", max_days=30)
    refused(TokenRequest(expires_at=NOW + 31 * DAY), "policy maximum of 30 days", max_days=30)
    assert problems(TokenRequest(expires_at=NOW + 30 * DAY), max_days=30) == []
    assert problems(TokenRequest(expires_at=NOW + 1), max_days=30) == []
    assert problems(TokenRequest(expires_at=NOW + 1.5 * DAY), max_days=1.5) == []
    refused(TokenRequest(expires_at=NOW + 1.5 * DAY + 1), "1.5 days", max_days=1.5)


def test_no_policy_means_no_maximum() -> None:
    assert problems(TokenRequest(expires_at=NOW + 10_000 * DAY)) == []
    assert problems(TokenRequest()) == []


@pytest.mark.parametrize("max_days", [0.0, 30.0])
def test_non_finite_expiry_refused(max_days: float) -> None:
    got = problems(TokenRequest(expires_at=math.nan), max_days=max_days)
    assert got


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-an-ip", "", "10.0.0.1:80", "::1/200"])
def test_bad_cidr(cidr: str) -> None:
    msg = refused(TokenRequest(ips=["10.0.0.0/8", cidr]), "not an IP address or CIDR")
    assert repr(cidr) in msg


def test_bad_limit_line_named_by_number() -> None:
    req = TokenRequest(limits=[".*/rest/.*", "[gte].*/rest/.*", "(.*"])
    got = problems(req)
    assert len(got) == 2
    assert got[0].startswith("limit line 2:") and "GTE" in got[0]
    assert got[1].startswith("limit line 3:") and "RE2" in got[1]
    with pytest.raises(InvalidToken):
        issue(req, now=NOW)


def test_empty_limit_line() -> None:
    refused(TokenRequest(limits=[""]), "limit line 1: line is empty")


def test_logins_without_user() -> None:
    refused(TokenRequest(logins=["alice@example.com"]), "bound user")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", ""),
        ("user", " alice"),
        ("user", "alice "),
        ("user", "al\x00ice"),
        ("user", "al\nice"),
        ("user", "al\x7fice"),
        ("user", "a,b"),
        ("user", "a:b"),
        ("user", "x" * (MAX_LOGIN + 1)),
    ],
)
def test_bad_user(field: str, value: str) -> None:
    refused(TokenRequest(**{field: value}), "user")


@pytest.mark.parametrize("value", ["", " a", "a,b", "a:b", "a\tb", "x" * (MAX_LOGIN + 1)])
def test_bad_extra_login(value: str) -> None:
    refused(TokenRequest(user="alice", logins=[value]), "login")


@pytest.mark.parametrize("value", ["", "bob,carol", "b:c", " bob", "b\x01"])
def test_bad_on_behalf_of(value: str) -> None:
    refused(TokenRequest(on_behalf_of=[value]), "on-behalf-of")


def test_wildcard_on_behalf_of_accepted() -> None:
    assert problems(TokenRequest(on_behalf_of=["*"])) == []


def test_user_at_max_length_accepted() -> None:
    assert problems(TokenRequest(user="x" * MAX_LOGIN)) == []


@pytest.mark.parametrize("label", ["x" * (MAX_LABEL + 1), "a\nb", "a\x00"])
def test_bad_label(label: str) -> None:
    refused(TokenRequest(label=label), "label")


def test_label_at_max_length_and_unicode_accepted() -> None:
    assert problems(TokenRequest(label="x" * MAX_LABEL)) == []
    assert problems(TokenRequest(label="Jürgen's Skript ✓")) == []


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("", "empty"),
        ("short", "shorter than"),
        ("x" * 513, "longer than 512"),
        ("has space in it!", "whitespace"),
        ("has\ttab-in-it-x", "whitespace"),
        ("ctl\x00char-in-it", "control"),
        ("ctl\x7fchar-in-it", "control"),
    ],
)
def test_bad_imported_secret(secret: str, words: str) -> None:
    msg = refused(TokenRequest(secret=secret), words)
    if len(secret) >= 8:
        assert secret not in msg  # the reason never repeats the secret


def test_imported_secret_with_prefix_but_bad_checksum() -> None:
    good = token_format.generate_secret()
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    msg = refused(TokenRequest(secret=bad), "checksum")
    assert bad not in msg
    refused(TokenRequest(secret="jat_plain-extender-token"), "checksum")


def test_every_problem_reported_at_once() -> None:
    req = TokenRequest(
        label="x" * (MAX_LABEL + 1), user=" alice", logins=["a,b"], expires_at=NOW - 1,
        limits=["(.*"], ips=["nope"], on_behalf_of=["b:c"], secret="short",
    )
    got = problems(req, max_days=30)
    assert len(got) == 8, got
    joined = " | ".join(got)
    for words in ("label", "user", "login", "on-behalf-of", "future", "limit line 1",
                  "'nope'", "shorter"):
        assert words in joined, words


def test_invalid_token_error_lists_problems() -> None:
    e = InvalidToken(["a", "b"])
    assert e.problems == ["a", "b"]
    assert str(e) == "a; b"
