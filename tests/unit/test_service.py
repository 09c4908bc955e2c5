"""CheckService (product.md §6-§7): lookup failures, strict audit, what is audited, and no secrets.

The token lookup and the audit sink are in-memory fakes of our own Protocols; Redis is not
involved at all here.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from typing import Any

import pytest
from prometheus_client import REGISTRY

from authz.domain import token_format
from authz.domain.decide import Policy
from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Reason, Token
from authz.service import CheckService, StoreUnavailableError

NOW = 1_700_000_000.0
SECRET = token_format.generate_secret()
UNKNOWN = token_format.generate_secret()
PASSWORD = "jira-password-123456"
TOKEN = Token(id="tok1", secret_hash=token_format.hash_secret(SECRET), label="ci", user="alice",
              limits=("[get].*/rest/api/2/issue/.*",))


class FakeTokens:
    def __init__(self, *tokens: Token, error: BaseException | None = None) -> None:
        self.by_hash = {t.secret_hash: t for t in tokens}
        self.error = error
        self.calls: list[str] = []

    async def lookup(self, secret_hash: str) -> Token | None:
        self.calls.append(secret_hash)
        if self.error is not None:
            raise self.error
        return self.by_hash.get(secret_hash)


class FakeAudit:
    def __init__(self, *, accept: bool = True, explode: bool = False) -> None:
        self.accept = accept
        self.explode = explode
        self.events: list[tuple[dict[str, str], str | None, bool]] = []

    def would_accept(self) -> bool:
        return self.accept

    def emit(self, event: dict[str, str], *, token_id: str | None = None,
             used: bool = False) -> bool:
        if self.explode:
            raise RuntimeError("sink broken")
        if not self.accept:
            return False
        self.events.append((event, token_id, used))
        return True


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def req(authorization: str | None = None, *, path: str = "/rest/api/2/issue/ABC-1",
        query: str = "", method: str = "GET", source_ip: str = "10.0.0.7",
        **headers: str) -> HttpRequest:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    h.setdefault("user-agent", "pytest")
    if authorization is not None:
        h["authorization"] = authorization
    return HttpRequest(method=method, scheme="https", host="jira.example.com", path=path,
                       query=query, headers=h, source_ip=source_ip, request_id="rid-1",
                       trace_id="trace-1")


def service(tokens: FakeTokens | None = None, audit: FakeAudit | None = None,
            **kw: Any) -> tuple[CheckService, FakeTokens, FakeAudit]:
    tokens = tokens if tokens is not None else FakeTokens(TOKEN)
    audit = audit if audit is not None else FakeAudit()
    policy = kw.pop("policy", Policy())
    kw.setdefault("clock", lambda: NOW)
    return CheckService(policy, tokens, audit, **kw), tokens, audit


def run(svc: CheckService, r: HttpRequest) -> Decision:
    return asyncio.run(svc.check(r))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def assert_no_secret(event: dict[str, str], *secrets_: str) -> None:
    for v in event.values():
        for s in secrets_:
            assert s not in v, (s, event)


# --- the ordinary paths ------------------------------------------------------------------------


def test_allowed_call_is_audited_as_a_use() -> None:
    svc, tokens, audit = service()
    d = run(svc, req(basic("alice", SECRET)))
    assert d.outcome is Outcome.ALLOW
    assert d.matched_limit == "[get].*/rest/api/2/issue/.*"
    assert tokens.calls == [token_format.hash_secret(SECRET)]  # only the hash is looked up
    assert len(audit.events) == 1
    event, token_id, used = audit.events[0]
    assert token_id == "tok1"
    assert used is True
    assert event["decision"] == "allow"
    assert event["reason"] == "ok"
    assert event["token_id"] == "tok1"
    assert event["login"] == "alice"
    assert event["effective_user"] == "alice"
    assert event["path"] == "/rest/api/2/issue/ABC-1"
    assert event["request_id"] == "rid-1"
    assert_no_secret(event, SECRET)


def test_denied_token_call_is_audited_not_used() -> None:
    svc, _, audit = service()
    d = run(svc, req(basic("alice", SECRET), method="DELETE"))
    assert d.reason is Reason.NO_LIMIT_MATCHED
    event, token_id, used = audit.events[0]
    assert (event["decision"], event["reason"], event["status"]) == (
        "deny", "no_limit_matched", "403")
    assert token_id == "tok1"
    assert used is False


def test_unknown_token_audited_without_token_id() -> None:
    svc, _, audit = service()
    d = run(svc, req(f"Bearer {UNKNOWN}"))
    assert d.reason is Reason.UNKNOWN_TOKEN
    assert len(audit.events) == 1
    event, token_id, used = audit.events[0]
    assert token_id is None and used is False
    assert event["token_id"] == ""
    assert_no_secret(event, UNKNOWN)


def test_malformed_token_audited_without_lookup() -> None:
    bad = SECRET[:-1] + ("A" if SECRET[-1] != "A" else "B")
    svc, tokens, audit = service()
    d = run(svc, req(basic("alice", bad)))
    assert d.reason is Reason.MALFORMED_TOKEN
    assert tokens.calls == []
    assert len(audit.events) == 1
    assert_no_secret(audit.events[0][0], bad)


@pytest.mark.parametrize("auth", [None, "Negotiate abc", basic("alice", PASSWORD), "Basic !!!"])
def test_non_token_calls_not_audited(auth: str | None) -> None:
    svc, _, audit = service()
    d = run(svc, req(auth))
    assert not d.token_like
    assert audit.events == []


def test_jira_password_is_looked_up_by_hash_and_passed() -> None:
    svc, tokens, audit = service()
    d = run(svc, req(basic("alice", PASSWORD)))
    assert d.outcome is Outcome.PASS
    assert tokens.calls == [token_format.hash_secret(PASSWORD)]
    assert PASSWORD not in tokens.calls
    assert audit.events == []


def test_no_credentials_no_lookup() -> None:
    svc, tokens, _ = service()
    assert run(svc, req(None)).outcome is Outcome.PASS
    assert tokens.calls == []


def test_clock_is_used_for_expiry() -> None:
    t = dataclasses.replace(TOKEN, expires_at=NOW + 10)
    svc, _, _ = service(FakeTokens(t))
    assert run(svc, req(basic("alice", SECRET))).outcome is Outcome.ALLOW
    svc, _, _ = service(FakeTokens(t), clock=lambda: NOW + 10)
    assert run(svc, req(basic("alice", SECRET))).reason is Reason.EXPIRED


# --- store failures ----------------------------------------------------------------------------


def test_store_unavailable_is_503() -> None:
    before = metric("jira_authz_redis_errors_total")
    svc, _, audit = service(FakeTokens(error=StoreUnavailableError("down")))
    d = run(svc, req(basic("alice", SECRET)))
    assert d.outcome is Outcome.DENY
    assert d.reason is Reason.STORE_UNAVAILABLE
    assert d.status == 503
    assert d.login == "alice"
    assert metric("jira_authz_redis_errors_total") == before + 1
    assert len(audit.events) == 1
    assert audit.events[0][0]["reason"] == "store_unavailable"
    assert_no_secret(audit.events[0][0], SECRET)


def test_store_unavailable_fails_closed_for_unprefixed_secrets_too() -> None:
    # An imported (unprefixed) token cannot be told from a Jira password without the store.
    svc, _, audit = service(FakeTokens(error=StoreUnavailableError("down")))
    d = run(svc, req(basic("alice", PASSWORD)))
    assert d.status == 503
    assert d.reason is Reason.STORE_UNAVAILABLE
    for event, _, _ in audit.events:
        assert_no_secret(event, PASSWORD)


def test_custom_unavailable_exceptions() -> None:
    svc, _, _ = service(FakeTokens(error=ConnectionError("refused")),
                        unavailable=(ConnectionError,))
    d = run(svc, req(basic("alice", SECRET)))
    assert d.reason is Reason.STORE_UNAVAILABLE and d.status == 503


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("x"), ValueError("bad"),
                                   StoreUnavailableError("not listed")])
def test_unexpected_exception_is_503_internal_error(error: Exception) -> None:
    svc, _, _ = service(FakeTokens(error=error), unavailable=(ConnectionError,))
    d = run(svc, req(basic("alice", SECRET)))
    assert d.outcome is Outcome.DENY
    assert d.reason is Reason.INTERNAL_ERROR
    assert d.status == 503
    assert SECRET not in d.message


def test_corrupt_token_record_denies_not_crashes() -> None:
    # A stored limit line the engine cannot even encode must not escape as an exception, and
    # must not widen access: it becomes a line that matches nothing.
    t = dataclasses.replace(TOKEN, limits=(".*/rest/\ud800.*",))
    svc, _, _ = service(FakeTokens(t))
    d = run(svc, req(basic("alice", SECRET)))
    assert d.outcome is Outcome.DENY
    assert d.status == 403 and d.reason is Reason.NO_LIMIT_MATCHED


def test_internal_error_on_token_call_is_audited() -> None:
    svc, _, audit = service(FakeTokens(error=RuntimeError("boom")))
    run(svc, req(basic("alice", SECRET)))
    assert len(audit.events) == 1
    assert audit.events[0][0]["reason"] == "internal_error"


# --- strict audit ------------------------------------------------------------------------------


def test_strict_audit_full_sink_denies_allowed_call() -> None:
    svc, _, _ = service(audit=FakeAudit(accept=False), strict_audit=True)
    d = run(svc, req(basic("alice", SECRET)))
    assert d.outcome is Outcome.DENY
    assert d.reason is Reason.AUDIT_UNAVAILABLE
    assert d.status == 503
    assert d.token is TOKEN
    assert d.effective_user == "alice"
    # Everything but the verdict is the allow's: the audit event names the line that matched.
    assert d.matched_limit == TOKEN.limits[0] and d.login == "alice"
    assert d.client_ip == "10.0.0.7" and d.status == STATUS[d.reason]


def test_strict_audit_event_records_the_denial() -> None:
    class Recording(FakeAudit):
        def emit(self, event: dict[str, str], *, token_id: str | None = None,
                 used: bool = False) -> bool:
            self.events.append((event, token_id, used))
            return False

    audit = Recording(accept=False)
    svc, _, _ = service(audit=audit, strict_audit=True)
    run(svc, req(basic("alice", SECRET)))
    event, _, used = audit.events[0]
    assert event["decision"] == "deny"
    assert event["reason"] == "audit_unavailable"
    assert used is False  # a refused call is not a use


def test_strict_audit_leaves_denials_and_pass_alone() -> None:
    svc, _, _ = service(audit=FakeAudit(accept=False), strict_audit=True)
    assert run(svc, req(basic("alice", SECRET), method="POST")).reason is (
        Reason.NO_LIMIT_MATCHED)
    assert run(svc, req(None)).outcome is Outcome.PASS
    assert run(svc, req(basic("alice", PASSWORD))).outcome is Outcome.PASS


def test_strict_audit_with_room_allows() -> None:
    svc, _, audit = service(strict_audit=True)
    assert run(svc, req(basic("alice", SECRET))).outcome is Outcome.ALLOW
    assert len(audit.events) == 1


def test_non_strict_full_sink_allows_and_counts_drop() -> None:
    before = metric("jira_authz_audit_emit_failures_total")
    svc, _, _ = service(audit=FakeAudit(accept=False))
    assert run(svc, req(basic("alice", SECRET))).outcome is Outcome.ALLOW
    assert metric("jira_authz_audit_emit_failures_total") == before + 1


@pytest.mark.parametrize("strict", [False, True])
def test_audit_sink_exception_does_not_escape(strict: bool) -> None:
    before = metric("jira_authz_audit_dropped_total")
    svc, _, _ = service(audit=FakeAudit(explode=True), strict_audit=strict)
    d = run(svc, req(basic("alice", SECRET)))
    assert isinstance(d, Decision)
    if strict:
        assert not d.forwarded
    # Lost before any stream counted it: still in the series JiraAuthzAuditDropped watches.
    assert metric("jira_authz_audit_dropped_total") == before + 1


def test_event_that_cannot_be_built_is_counted_where_the_alert_looks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import authz.service as service_mod

    def broken(*_a: object, **_k: object) -> dict[str, str]:
        raise ValueError("unbuildable")

    monkeypatch.setattr(service_mod, "build_event", broken)
    before = metric("jira_authz_audit_dropped_total")
    svc, _, audit = service()
    assert run(svc, req(basic("alice", SECRET))).outcome is Outcome.ALLOW
    assert audit.events == []
    assert metric("jira_authz_audit_dropped_total") == before + 1


# --- the event ---------------------------------------------------------------------------------


def test_event_uses_trusted_client_ip() -> None:
    svc, _, audit = service(policy=Policy(xff_trusted_hops=1))
    run(svc, req(basic("alice", SECRET), source_ip="10.9.9.9",
                 x_forwarded_for="1.1.1.1, 203.0.113.5, 10.9.9.9"))
    assert audit.events[0][0]["client_ip"] == "203.0.113.5"
    svc, _, audit = service()
    run(svc, req(basic("alice", SECRET), source_ip="10.9.9.9", x_forwarded_for="203.0.113.5"))
    assert audit.events[0][0]["client_ip"] == "10.9.9.9"


def test_query_only_when_configured() -> None:
    r = req(basic("alice", SECRET), query="jql=secret%20project")
    svc, _, audit = service()
    run(svc, r)
    assert "query" not in audit.events[0][0]
    svc, _, audit = service(include_query=True)
    run(svc, r)
    assert audit.events[0][0]["query"] == "jql=secret%20project"


@pytest.mark.parametrize("auth", [basic("alice", SECRET), f"Bearer {SECRET}",
                                  basic("mallory", SECRET)])
def test_event_never_contains_secret_even_if_echoed(auth: str) -> None:
    svc, _, audit = service(include_query=True)
    run(svc, req(auth, query=f"token={SECRET}", user_agent=f"script {SECRET}",
                 contextuser=SECRET))
    assert audit.events
    for event, _, _ in audit.events:
        assert_no_secret(event, SECRET, auth.split(" ", 1)[1])


def test_on_behalf_of_event_records_both_users() -> None:
    t = dataclasses.replace(TOKEN, on_behalf_of=("bob",))
    svc, _, audit = service(FakeTokens(t))
    d = run(svc, req(basic("alice", SECRET), contextuser="bob"))
    assert d.effective_user == "bob"
    event = audit.events[0][0]
    assert event["token_user"] == "alice"
    assert event["effective_user"] == "bob"


def test_decisions_metric_counts_result_and_reason() -> None:
    before = metric("jira_authz_decisions_total", result="deny", reason="unknown_token")
    svc, _, _ = service()
    run(svc, req(f"Bearer {UNKNOWN}"))
    run(svc, req(f"Bearer {UNKNOWN}"))
    assert metric("jira_authz_decisions_total", result="deny",
                  reason="unknown_token") == before + 2


class CachingTokens(FakeTokens):
    """A lookup with a cache in front: ``cached`` knows the tokens in ``warm`` only."""

    def __init__(self, *tokens: Token, warm: set[str]) -> None:
        super().__init__(*tokens)
        self.warm = warm

    def cached(self, secret_hash: str) -> object:
        if secret_hash in self.warm:
            return self.by_hash.get(secret_hash)
        return object()  # a miss: the caller must await lookup


CORPUS = [
    req(), req(basic("alice", SECRET)), req(basic("ALICE", SECRET)), req(basic("bob", SECRET)),
    req(f"Bearer {SECRET}"), req(basic("alice", SECRET), method="POST"),
    req(basic("alice", SECRET), path="/rest/api/2/project"), req(basic("alice", SECRET),
                                                                 path="/secure/Dashboard.jspa"),
    req(basic("alice", UNKNOWN)), req(basic("alice", PASSWORD)), req("Basic !!!"),
    req("Bearer"), req(basic("alice", SECRET), contextUser="bob"),
    req(basic("alice", SECRET), x_http_method_override="DELETE"),
    req(basic("alice", SECRET), path="/rest/api/2/issue/../project"),
]


@pytest.mark.parametrize("warm", ["all", "none"])
def test_check_now_decides_exactly_as_check_or_defers(warm: str) -> None:
    """The HTTP/1.1 port's synchronous path (no coroutine per Check) is the same decision,
    audit event and metric as the awaited one; on a cache miss it defers (None), never guesses."""
    hashes = ({token_format.hash_secret(x) for x in (SECRET, UNKNOWN, PASSWORD)}
              if warm == "all" else set())
    for r in CORPUS:
        now_svc, _, now_audit = service(CachingTokens(TOKEN, warm=hashes), clock=lambda: NOW)
        ref_svc, _, ref_audit = service(FakeTokens(TOKEN), clock=lambda: NOW)
        expected = asyncio.run(ref_svc.check(r))
        got = now_svc.check_now(r)
        if got is None:
            # Only a credential whose hash is not cached defers, and it records nothing yet.
            assert warm == "none", r
            assert now_audit.events == []
            continue
        assert got == expected, r
        assert now_audit.events == ref_audit.events, r
