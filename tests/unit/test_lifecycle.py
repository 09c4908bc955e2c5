"""Token lifecycle rules (pure): durations, state at a time, filters, prune, policy, webhooks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.domain import lifecycle as lc
from authz.domain import webhook_event as hooks
from authz.domain.extender_import import STATUS_INVALID, STATUS_NEW, parse_extender_json
from authz.domain.issuing import (
    DAY,
    IssuePolicy,
    TokenRequest,
    issue,
    issue_warnings,
    validate_request,
)
from authz.domain.model import Token

NOW = 1_800_000_000.0
H = "a" * 64


def tok(**kw: object) -> Token:
    kw.setdefault("created_at", NOW - 100 * DAY)
    return Token(id=str(kw.pop("id", "t1")), secret_hash=H, **kw)  # type: ignore[arg-type]


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("15m", 900), ("12h", 43200), ("30d", 30 * DAY), ("2w", 14 * DAY),
    ("1d12h", 1.5 * DAY), ("1.5h", 5400), ("0s", 0), (" 14D ", 14 * DAY), ("1h30m15s", 5415),
])
def test_durations_take_units(text: str, seconds: float) -> None:
    assert lc.parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "30", "d", "30x", "-1d", "1d 2h", "1dd", "1e3s", "d30", "30d!", "1.d", ".5d", "\u0661d",
    "200000w", "nan", "inf",
])
def test_bad_durations_are_refused_with_the_units(text: str) -> None:
    with pytest.raises(lc.InvalidDuration):
        lc.parse_duration(text)


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from("smhdw")), min_size=1,
                max_size=4))
def test_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert lc.parse_duration(text) == sum(n * lc.UNITS[u] for n, u in parts)


@pytest.mark.parametrize("seconds", [1, 59, 60, 3600, 86400, 14 * 86400, 90 * 86400, 5400])
def test_format_duration_round_trips(seconds: float) -> None:
    assert lc.parse_duration(lc.format_duration(seconds)) == seconds


# --- state -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "state"), [
    ({}, "active"),
    ({"expires_at": NOW + 1}, "active"),
    ({"expires_at": NOW}, "expired"),
    ({"revoked_at": NOW}, "revoked"),
    ({"revoked_at": NOW + 3600}, "rotating"),
    ({"revoked_at": NOW + 3600, "expires_at": NOW - 1}, "expired"),
    ({"revoked_at": NOW - 1, "expires_at": NOW - 10}, "revoked"),
])
def test_state_at_a_time(kw: dict[str, float], state: str) -> None:
    t = tok(**kw)
    assert lc.token_state(t, NOW) == state
    assert t.state(NOW) == state  # the model delegates: one rule


@given(st.floats(NOW - 1e6, NOW + 1e6), st.one_of(st.none(), st.floats(NOW - 1e6, NOW + 1e6)),
       st.one_of(st.none(), st.floats(NOW - 1e6, NOW + 1e6)))
def test_state_agrees_with_what_decisions_check(now: float, rev: float | None,
                                                exp: float | None) -> None:
    t = tok(revoked_at=rev, expires_at=exp)
    usable = lc.token_state(t, now) in lc.USABLE
    assert usable == (not t.is_revoked(now) and not t.is_expired(now))


# --- filters and prune -------------------------------------------------------------------------


def test_filters() -> None:
    soon = tok(id="soon", expires_at=NOW + 3 * DAY, last_used_at=NOW - DAY, user="Alice")
    later = tok(id="later", expires_at=NOW + 40 * DAY, last_used_at=NOW - DAY)
    stale = tok(id="stale", last_used_at=NOW - 60 * DAY)
    never = tok(id="never", created_at=NOW - 45 * DAY)
    fresh_never = tok(id="fresh", created_at=NOW - DAY)
    dead = tok(id="dead", expires_at=NOW - DAY, created_at=NOW - 400 * DAY)
    rotating = tok(id="rot", revoked_at=NOW + 600, expires_at=NOW + DAY, last_used_at=NOW)
    all_ = [soon, later, stale, never, fresh_never, dead, rotating]

    def ids(**kw: object) -> set[str]:
        f = lc.TokenFilter(**kw)  # type: ignore[arg-type]
        assert f.problems() == []
        return {t.id for t in all_ if f.matches(t, NOW)}

    assert ids(expiring_within=14 * DAY) == {"soon", "rot"}
    assert ids(unused_for=30 * DAY) == {"stale", "never", "dead"} - {"dead"}  # usable only
    assert ids(state="rotating") == {"rot"}
    assert ids(state="expired") == {"dead"}
    assert ids(user="alice", expiring_within=7 * DAY) == {"soon"}
    assert ids(expiring_within=14 * DAY, state="active") == {"soon"}
    assert lc.TokenFilter(state="gone").problems()
    assert lc.TokenFilter(unused_for=0).problems()
    assert lc.TokenFilter(expiring_within=float("nan")).problems()


def test_prunable_counts_from_when_the_token_stopped_working() -> None:
    assert lc.prunable(tok(expires_at=NOW - 31 * DAY), NOW, 30 * DAY)
    assert not lc.prunable(tok(expires_at=NOW - 29 * DAY), NOW, 30 * DAY)
    assert lc.prunable(tok(revoked_at=NOW - 31 * DAY, expires_at=NOW - DAY), NOW, 30 * DAY)
    assert not lc.prunable(tok(revoked_at=NOW + 60), NOW, 0)  # rotating: still in use
    assert not lc.prunable(tok(), NOW, 0)
    assert lc.prunable(tok(revoked_at=NOW), NOW, 0)
    assert lc.ended_at(tok(revoked_at=NOW - 5, expires_at=NOW - 9), NOW) == NOW - 9


def test_summary_counts_every_state() -> None:
    s = lc.Summary.empty()
    for t in (tok(id="a"), tok(id="b", expires_at=NOW + DAY), tok(id="c", revoked_at=NOW - 1),
              tok(id="d", expires_at=NOW - 1), tok(id="e", revoked_at=NOW + 10),
              tok(id="f", last_used_at=NOW - 1)):
        s.add(t, NOW, window=14 * DAY, unused_after=90 * DAY)
    assert s.by_state == {"active": 3, "rotating": 1, "expired": 1, "revoked": 1}
    assert s.expiring == 1 and s.total == 6
    assert s.unused == 3  # a, b, e created 100 days ago and never used; f used


# --- policy ------------------------------------------------------------------------------------

FUTURE = NOW + 10 * DAY
RULES = [
    (IssuePolicy(), TokenRequest(expires_at=FUTURE), "any_user"),
    (IssuePolicy(), TokenRequest(any_user=True), "policy.allow_unbound"),
    (IssuePolicy(allow_unbound=True), TokenRequest(user="a", any_user=True), "any_user"),
    (IssuePolicy(require_expiry=True), TokenRequest(user="a"), "policy.require_expiry"),
    (IssuePolicy(max_lifetime_days=5), TokenRequest(user="a", expires_at=FUTURE),
     "policy.max_lifetime_days"),
    (IssuePolicy(max_lifetime_days=5), TokenRequest(user="a"), "policy.max_lifetime_days"),
    (IssuePolicy(allow_unrestricted=False), TokenRequest(user="a", limits=["", " "]),
     "policy.allow_unrestricted"),
]


@pytest.mark.parametrize(("policy", "req", "rule"), RULES)
def test_each_rule_is_named(policy: IssuePolicy, req: TokenRequest, rule: str) -> None:
    problems = validate_request(req, now=NOW, policy=policy)
    assert any(p.startswith(rule + ":") for p in problems), problems


def test_cap_per_user_and_what_passes() -> None:
    cap = IssuePolicy(max_active_tokens_per_user=2)
    req = TokenRequest(user="alice")
    assert validate_request(req, now=NOW, policy=cap, active_for_user=1) == []
    (p,) = validate_request(req, now=NOW, policy=cap, active_for_user=2)
    assert p.startswith("policy.max_active_tokens_per_user:") and "'alice'" in p
    strict = IssuePolicy(True and 30, True, 1, False, False)  # type: ignore[arg-type]
    ok = TokenRequest(user="a", expires_at=FUTURE, limits=[".*/rest/api/2/myself"])
    assert validate_request(ok, now=NOW, policy=strict) == []
    assert validate_request(TokenRequest(any_user=True), now=NOW,
                            policy=IssuePolicy(allow_unbound=True)) == []


def test_without_policy_the_domain_issues_as_before() -> None:
    token, _ = issue(TokenRequest(), now=NOW)  # tests and internal callers
    assert token.user is None
    assert issue_warnings(token) and "ANY" in issue_warnings(token)[0]
    assert issue_warnings(tok(user="a")) == []


def test_expired_import_keeps_only_the_binding_rules() -> None:
    pol = IssuePolicy(require_expiry=True, allow_unrestricted=False, max_lifetime_days=1)
    req = TokenRequest(user="a", expires_at=NOW - DAY, secret="x" * 30)
    assert validate_request(req, now=NOW, policy=pol, allow_expired=True) == []


def test_import_unbound_kept_only_when_policy_allows() -> None:
    doc = json.dumps({"tokens": [
        {"label": "anyone", "user": "", "token": "unb0und-t0ken-from-extender-1"},
        {"label": "bound", "user": "bob", "token": "b0und-t0ken-from-extender-22"},
    ]})
    refused = parse_extender_json(doc, now=NOW, policy=IssuePolicy())
    assert [it.status for it in refused] == [STATUS_INVALID, STATUS_NEW]
    assert refused[0].problems[0].startswith("policy.allow_unbound:")
    allowed = parse_extender_json(doc, now=NOW, policy=IssuePolicy(allow_unbound=True))
    assert [it.status for it in allowed] == [STATUS_NEW, STATUS_NEW]


# --- webhooks ----------------------------------------------------------------------------------


def test_webhook_event_carries_no_secret_and_signature_verifies() -> None:
    token, secret = issue(TokenRequest(user="alice", limits=[".*/rest/api/2/issue/A-1"],
                                       ips=["10.1.2.0/24"]), now=NOW)
    event = hooks.build_event("token.created", token, now=NOW, actor="ops")
    body = hooks.encode(event)
    text = body.decode()
    for forbidden in (secret, token.secret_hash, "secret", "10.1.2.0", "A-1"):
        assert forbidden not in text
    assert event["token"]["id"] == token.id and event["token"]["state"] == "active"
    key = b"k" * 32
    sig = hooks.sign(key, "1700000000", body)
    assert sig.startswith("sha256=") and hooks.verify(key, "1700000000", body, sig)
    assert not hooks.verify(key, "1700000001", body, sig)  # timestamp is bound
    assert not hooks.verify(b"j" * 32, "1700000000", body, sig)
    assert not hooks.verify(key, "1700000000", body + b" ", sig)
