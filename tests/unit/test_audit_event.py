"""build_event / parse_event: the audit event holds exactly the product.md §7 fields, no
secret."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime

from hypothesis import assume, given
from hypothesis import strategies as st

from authz.domain.audit_event import (
    EVENT_FIELDS,
    USER_AGENT_MAX,
    AuditRecord,
    build_event,
    format_time,
    parse_event,
    parse_time,
)
from authz.domain.credentials import Credentials, parse_authorization
from authz.domain.model import Decision, HttpRequest, Outcome, Reason, Token

SECRET = "jat_0123456789abcdefghijABCDEFGHIJ0123456789"
TOKEN = Token(id="tok1", secret_hash="h" * 64, label="ci bot", user="alice")


def _request(**kw: object) -> HttpRequest:
    base: dict[str, object] = {
        "method": "POST",
        "scheme": "https",
        "host": "jira.example.com",
        "path": "/rest/api/2/issue/AAA-1/comment",
        "query": "expand=names",
        "headers": {
            "authorization": "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode(),
            "user-agent": "curl/8.5",
            "cookie": "JSESSIONID=cookie-value-1234",
        },
        "source_ip": "10.0.0.7",
        "request_id": "req-1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    base.update(kw)
    return HttpRequest(**base)  # type: ignore[arg-type]


ALLOW = Decision(
    outcome=Outcome.ALLOW,
    reason=Reason.OK,
    token=TOKEN,
    login="alice",
    effective_user="bob",
    matched_limit="[post].*/rest/api/2/issue/.*",
    token_like=True,
)


def test_allow_event_has_every_spec_field() -> None:
    ev = build_event(_request(), ALLOW, now=1714564800.1234, include_query=False)
    assert ev == {
        "time": "2024-05-01T12:00:00.123Z",
        "token_id": "tok1",
        "token_label": "ci bot",
        "token_user": "alice",
        "login": "alice",
        "effective_user": "bob",
        "method": "POST",
        "scheme": "https",
        "host": "jira.example.com",
        "path": "/rest/api/2/issue/AAA-1/comment",
        "decision": "allow",
        "reason": "ok",
        "status": "200",
        "matched_limit": "[post].*/rest/api/2/issue/.*",
        "client_ip": "10.0.0.7",
        "user_agent": "curl/8.5",
        "request_id": "req-1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert tuple(ev) == EVENT_FIELDS


def test_deny_without_token_uses_empty_strings() -> None:
    dec = Decision(outcome=Outcome.DENY, reason=Reason.UNKNOWN_TOKEN, status=401, login="mallory")
    ev = build_event(_request(headers={}), dec, now=0.0, include_query=True)
    assert ev["decision"] == "deny"
    assert ev["reason"] == "unknown_token"
    assert ev["status"] == "401"
    assert ev["token_id"] == ev["token_label"] == ev["token_user"] == ""
    assert ev["user_agent"] == ""
    assert ev["query"] == "expand=names"
    assert ev["time"] == "1970-01-01T00:00:00.000Z"


def test_client_ip_override_and_user_agent_truncation() -> None:
    req = _request(headers={"user-agent": "x" * 5000})
    ev = build_event(req, ALLOW, now=0.0, include_query=False, client_ip="203.0.113.9")
    assert ev["client_ip"] == "203.0.113.9"
    assert ev["user_agent"] == "x" * USER_AGENT_MAX


def test_secret_pasted_into_query_or_user_agent_is_masked() -> None:
    req = _request(
        query=f"token={SECRET}",
        headers={"authorization": f"Bearer {SECRET}", "user-agent": f"script {SECRET}"},
    )
    ev = build_event(req, ALLOW, now=0.0, include_query=True)
    assert ev["query"] == "token=***"
    assert ev["user_agent"] == "script ***"
    assert all(SECRET not in v for v in ev.values())


def test_time_round_trip() -> None:
    assert parse_time(format_time(1714564800.5)) == 1714564800.5
    assert parse_time("not a time") is None


def test_parse_event_round_trip_from_bytes() -> None:
    ev = build_event(_request(), ALLOW, now=1714564800.25, include_query=True)
    raw = {k.encode(): v.encode() for k, v in ev.items()}
    raw[b"future_field"] = b"ignored"
    rec = parse_event(raw, b"1714564800300-0")
    assert isinstance(rec, AuditRecord)
    assert rec.id == "1714564800300-0"
    assert rec.token_id == "tok1"
    assert rec.status == 200
    assert rec.query == "expand=names"
    assert rec.timestamp == 1714564800.25
    assert rec.matches_user("ALICE") and rec.matches_user("Bob")
    assert rec.extra == {"future_field": "ignored"}
    assert hash(rec)  # usable in sets
    assert not rec.matches_user("carol")


def test_parse_event_tolerates_missing_and_bad_fields() -> None:
    rec = parse_event({"status": "oops"}, "1714564800300-7")
    assert rec.status == 0
    assert rec.time == ""
    assert rec.timestamp == 1714564800.3  # falls back to the entry ID's time
    assert not rec.matches_user("")


# --- properties -----------------------------------------------------------------------------

_text = st.text(max_size=60)
_header_names = st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=20).filter(
    lambda n: n not in ("authorization", "user-agent")
)


@st.composite
def _authorization(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An Authorization value and the fragments of it that must never be audited."""
    # Envoy trims header values, so a credential never starts or ends with whitespace.
    secret = draw(st.text(min_size=8, max_size=60).filter(lambda s: s == s.strip()))
    kind = draw(st.sampled_from(["basic", "bearer", "raw"]))
    if kind == "basic":
        login = draw(st.text(alphabet=string.ascii_letters, max_size=10))
        payload = base64.b64encode(f"{login}:{secret}".encode()).decode()
        return f"Basic {payload}", [payload, secret]
    if kind == "bearer":
        return f"Bearer {secret}", [secret]
    return secret, [secret]


@given(
    auth=_authorization(),
    ua=_text,
    path=_text,
    query=_text,
    login=_text,
    other=st.dictionaries(_header_names, st.uuids().map(lambda u: f"hv-{u}"), max_size=5),
    include_query=st.booleans(),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_no_credential_or_other_header_ever_leaks(
    auth: tuple[str, list[str]],
    ua: str,
    path: str,
    query: str,
    login: str,
    other: dict[str, str],
    include_query: bool,
    now: float,
) -> None:
    value, fragments = auth
    headers = {**other, "authorization": value, "user-agent": ua}
    req = _request(headers=headers, path=path, query=query)
    dec = Decision(outcome=Outcome.DENY, reason=Reason.WRONG_USER, status=401, login=login)
    ev = build_event(req, dec, now=now, include_query=include_query)

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in ev.items())
    assert set(ev) == set(EVENT_FIELDS) | ({"query"} if include_query else set())
    for field_value in ev.values():
        assert value not in field_value
        for frag in fragments:
            assert frag not in field_value
        for hv in other.values():
            assert hv not in field_value
    assert len(ev["user_agent"]) <= USER_AGENT_MAX


@given(ua=st.text(alphabet=string.printable, max_size=600), include_query=st.booleans())
def test_fields_unchanged_when_no_credential_fragment_occurs(ua: str, include_query: bool) -> None:
    assume(SECRET not in ua)
    req = _request(headers={"authorization": f"Bearer {SECRET}", "user-agent": ua})
    ev = build_event(req, ALLOW, now=1.0, include_query=include_query)
    assert ev["user_agent"] == ua[:USER_AGENT_MAX]
    assert ("query" in ev) is include_query
    assert parse_event(ev).user_agent == ev["user_agent"]


@given(st.floats(min_value=0, max_value=253402300000.0, allow_nan=False)
       | st.integers(min_value=1_600_000_000_000, max_value=2_000_000_000_000).map(
           lambda ms: ms / 1000))
def test_format_time_matches_datetime_to_the_millisecond(ts: float) -> None:
    """The per-second cache must give exactly what datetime's own rounding gives."""
    expected = (datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"))
    assert format_time(ts) == expected
    assert format_time(ts + 1) != expected


_SECRET_CHARS = string.ascii_letters + string.digits + "-_.~+/=!@#$%^&*:"


@given(secret=st.text(alphabet=_SECRET_CHARS, min_size=8, max_size=50),
       login=st.text(alphabet=string.ascii_letters + "@.", min_size=1, max_size=12),
       bearer=st.booleans(), data=st.data())
def test_quick_probe_masks_exactly_as_deriving_every_fragment(
    secret: str, login: str, bearer: bool, data: st.DataObject
) -> None:
    payload = secret if bearer else base64.b64encode(f"{login}:{secret}".encode()).decode()
    value = f"{'Bearer' if bearer else 'Basic'} {payload}"
    creds = parse_authorization(value)
    assert isinstance(creds, Credentials)
    pool = [value, payload, secret, login, f"{login}:{secret}", secret[:-1], payload[1:]]

    def field() -> str:
        parts = st.lists(st.one_of(st.sampled_from(pool), _text), max_size=3)
        return "".join(data.draw(parts))

    req = _request(headers={"authorization": value, "user-agent": field()}, path=field(),
                   query=field(), request_id=field())
    dec = Decision(outcome=Outcome.DENY, reason=Reason.WRONG_USER, status=401, login=field())
    for include_query in (False, True):
        quick = build_event(req, dec, now=1.0, include_query=include_query, secret=creds.secret)
        assert quick == build_event(req, dec, now=1.0, include_query=include_query)


# --- issue 13: every field bounded, cuts marked ------------------------------------------------

from authz.domain.audit_event import FIELD_CAPS, UNTRUSTED_CAPS  # noqa: E402

UNKNOWN = Decision(outcome=Outcome.DENY, reason=Reason.MALFORMED_TOKEN, status=401,
                   login="x" * 9000, token_like=True)


def test_every_field_capped_and_marked() -> None:
    huge = "A" * 70_000
    req = _request(path="/rest/" + huge, host="h" * 9000, query=huge,
                   headers={"user-agent": huge, "authorization": "Bearer jat_x"},
                   request_id=huge, trace_id=huge)
    ev = build_event(req, UNKNOWN, now=0.0, include_query=True, client_ip="c" * 500)
    for k, v in ev.items():
        if k != "truncated":
            assert len(v) <= UNTRUSTED_CAPS.get(k, 256), k
    cut = set(ev["truncated"].split(","))
    assert {"path", "host", "query", "user_agent", "login", "request_id", "trace_id",
            "client_ip"} <= cut
    assert sum(len(v) for v in ev.values()) < 2500  # a stranger's event stays small
    ev = build_event(req, ALLOW, now=0.0, include_query=True)
    assert len(ev["path"]) == FIELD_CAPS["path"] and "path" in ev["truncated"]


def test_nothing_marked_when_nothing_cut() -> None:
    ev = build_event(_request(), ALLOW, now=0.0, include_query=True)
    assert "truncated" not in ev


def test_masking_happens_before_the_cut() -> None:
    # A secret straddling the cap must not survive half: it is masked whole first.
    path = "/rest/" + "p" * (FIELD_CAPS["path"] - 20) + SECRET
    ev = build_event(_request(path=path), ALLOW, now=0.0, include_query=False)
    assert SECRET[:12] not in ev["path"]


# --- the rate bound of events without a valid token --------------------------------------------

from authz.adapters.audit_stream import UntrustedBudget  # noqa: E402
from authz.config import AuditConfig  # noqa: E402


def test_budget_per_client_and_overall_with_summary() -> None:
    b = UntrustedBudget(AuditConfig(untrusted_per_client_per_second=1, untrusted_per_second=3,
                                    untrusted_window_seconds=2))
    # Per client: 2 per 2 s window; overall: 6.
    got = [b.admit("1.1.1.1", "malformed_token", 100.0)[0] for _ in range(5)]
    assert got == [True, True, False, False, False]
    got = [b.admit(f"2.2.2.{i}", "unknown_token", 100.5)[0] for i in range(6)]
    assert got == [True, True, True, True, False, False]
    ok, summary = b.admit("1.1.1.1", "malformed_token", 102.0)  # next window
    assert ok and summary is not None
    assert summary["kind"] == "summary" and summary["suppressed"] == "5"
    assert "1.1.1.1=3" in summary["top_clients"]
    assert "malformed_token=3" in summary["reasons"] and "unknown_token=2" in summary["reasons"]
    assert b.suppressed_total == 5
    assert b.roll(103.0) is None  # nothing suppressed in this window
    assert b.roll(104.5) is None


def test_budget_memory_bounded_by_max_clients() -> None:
    b = UntrustedBudget(AuditConfig(untrusted_per_client_per_second=1, untrusted_per_second=1e9,
                                    untrusted_window_seconds=1, untrusted_max_clients=100))
    got = [b.admit(f"10.0.{i // 256}.{i % 256}", "r", 5.0)[0] for i in range(1000)]
    assert sum(got) == 100 and len(b.by_client) == 100
    assert len(b.suppressed_by_client) <= 1000


def test_budget_counts_ipv6_clients_per_64() -> None:
    b = UntrustedBudget(AuditConfig(untrusted_per_client_per_second=1, untrusted_per_second=1e9,
                                    untrusted_window_seconds=3))
    got = [b.admit(f"2001:db8:1:2::{i:x}", "r", 1.0)[0] for i in range(10)]
    assert sum(got) == 3  # one /64, one budget
    assert b.admit("2001:db8:1:3::1", "r", 1.0)[0]  # another /64
    assert list(b.by_client) == ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]


# --- one schema (issue 14): the writer's maps, the reader's record and admin events agree ----


def test_record_fields_are_the_schema() -> None:
    import dataclasses

    from authz.domain import audit_event as ae

    names = {f.name for f in dataclasses.fields(ae.AuditRecord)} - {"id", "extra"}
    assert names == set(ae.EVENT_FIELDS) | set(ae.OPTIONAL_FIELDS)


def test_admin_event_is_read_back_with_its_own_fields_in_extra() -> None:
    from authz.domain import audit_event as ae

    ev = ae.admin_event(now=1_700_000_000.5, action="revoke", actor="cli:root",
                        token_id="tok1", details={"label": "ci", "user": "maß"})
    assert tuple(ev) == ae.ADMIN_FIELDS and all(isinstance(v, str) for v in ev.values())
    rec = ae.parse_event({k.encode(): v.encode() for k, v in ev.items()}, b"1700000000500-0")
    assert rec.token_id == "tok1" and rec.time == "2023-11-14T22:13:20.500Z"
    assert dict(rec.extra) == {"kind": "admin", "action": "revoke", "actor": "cli:root",
                               "details": '{"label": "ci", "user": "maß"}'}
    assert rec.timestamp == 1_700_000_000.5
