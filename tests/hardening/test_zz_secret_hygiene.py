"""Secret hygiene, last (hence the file name): after the corpus, the faults and the load run,
no secret the suites used is anywhere it must not be (docs/product.md §2, §7, §9).

Scanned: every Redis key and value (token records, secret index, audit stream), the server's
log (JSON, with its access log on), Envoy's log, /metrics, and every span exported to a local
OTLP collector. Secrets are searched verbatim, without their ``jat_`` prefix, and
base64-encoded at any offset (a logged Basic header). Stacks of the fault tests were scanned
before they were torn down; their findings are reported here too.
"""

from __future__ import annotations

import base64
import time

import pytest
from hardening_support import (
    FIGURES,
    LEDGER,
    LocalStack,
    SpanCollector,
    TokenOps,
    basic,
    find_secrets,
    scan_stack,
    send,
    stack_texts,
    wait_for,
)

from authz.domain import token_format

pytestmark = pytest.mark.e2e

MYSELF = "/rest/api/2/myself"


def test_scanner_finds_planted_secrets() -> None:
    """The scan is only as good as its search: it must find a secret in every form."""
    s = token_format.generate_secret()
    other = "Jira-Password-0815!"
    forms = {
        "verbatim": f"x {s} y",
        "no prefix": f'"hash": "{s[4:]}"',
        "basic": "Authorization: " + basic("alice", s),
        "basic, offset 1": basic("al", s),
        "basic, offset 2": basic("a", s),
        "url-safe base64": base64.urlsafe_b64encode(f"alice:{s}".encode()).decode(),
        "password": f"pw={other}",
        "password in basic": basic("bob", other),
    }
    for name, text in forms.items():
        assert find_secrets(text, {s, other}), name
    assert not find_secrets(token_format.hash_secret(s) + " " + s[:30], {s, other})


def _leak_prone_requests(stack: LocalStack, ops: TokenOps) -> None:
    """Requests that put a secret where a careless implementation would log or store it."""
    _, bound = ops.create(user="alice", label="hygiene")
    _, star = ops.create(user="alice", label="hygiene obo", on_behalf_of=("*",))
    _, unbound = ops.create(label="hygiene unbound")
    _, other = ops.create(user="bob", label="hygiene other")
    port = stack.envoy_port
    reqs = [
        [("Authorization", basic("alice", bound)), ("User-Agent", f"script {bound}")],
        [("Authorization", basic("alice", bound)), ("X-Api-Key", bound)],
        [("Authorization", basic("alice", star)), ("contextUser", star)],
        [("Authorization", f"Bearer {bound} trailing-words")],
        [("Authorization", f"{basic('alice', bound)}, Bearer {other}")],
        [("Authorization", basic(bound, ""))],  # curl -u "$TOKEN:"
        [("Authorization", basic(bound, "x-oauth-basic"))],  # GitHub habit
        [("Authorization", basic("ALICE", bound[:-1] + "x"))],  # typo
    ]
    for headers in reqs:
        send(port, MYSELF, headers)
    send(port, f"{MYSELF}?token={bound}&x=1", [("Authorization", basic("alice", bound))])
    LEDGER.add(bound, star, unbound, other)


def _login_is_another_token(stack: LocalStack, ops: TokenOps) -> None:
    _, unbound = ops.create(label="hygiene unbound login")
    _, used_as_login = ops.create(user="carol", label="hygiene token as login")
    send(stack.envoy_port, MYSELF, [("Authorization", basic(used_as_login, unbound))])
    LEDGER.add(unbound, used_as_login)


def _scan(stack: LocalStack, collector: SpanCollector, exports_before: int) -> list[str]:
    time.sleep(0.3)  # Envoy flushes its log every 200 ms, the audit every 50 ms
    # Spans are exported in batches every 5 s: wait for an export after the requests began
    # (counted before they were sent: the batch may already have gone out by now).
    wait_for(lambda: len(collector.requests) > exports_before, timeout=12,
             what="a span export")
    return scan_stack(stack, LEDGER.secrets, {"spans": collector.text()})


def test_no_secret_anywhere(shared_stack: LocalStack, shared_ops: TokenOps,
                            span_collector: SpanCollector) -> None:
    exports_before = len(span_collector.requests)
    _leak_prone_requests(shared_stack, shared_ops)
    _login_is_another_token(shared_stack, shared_ops)
    findings = _scan(shared_stack, span_collector, exports_before)
    FIGURES.note("secret scan: secrets searched", len(LEDGER.secrets))
    FIGURES.note("secret scan: characters scanned by source", dict(LEDGER.scanned))
    FIGURES.note("secret scan: spans exported", span_collector.spans())
    all_findings = LEDGER.findings + findings
    if all_findings:
        for source, text in stack_texts(shared_stack, {"spans": span_collector.text()}).items():
            for sec in find_secrets(text, LEDGER.secrets):
                at = text.find(sec[4:])
                print(f"{source}: {sec[:8]} {text[max(0, at - 300):at + 60]!r}")
    FIGURES.note("secret scan: findings", all_findings)
    assert span_collector.spans() > 0
    assert LEDGER.scanned["redis"] > 0 and LEDGER.scanned["authz log"] > 0
    assert LEDGER.scanned["metrics"] > 0 and LEDGER.scanned["envoy log"] > 0
    assert not all_findings, all_findings


def test_secret_in_user_agent_stays_out_of_envoy_log(shared_stack: LocalStack,
                                                      shared_ops: TokenOps) -> None:
    """Found by this suite: the shipped Envoy configs logged the User-Agent verbatim, so a
    secret a script pasted there landed in Envoy's log. Fixed in 132d057."""
    _, secret = shared_ops.create(user="alice", label="hygiene user agent")
    r = send(shared_stack.envoy_port, MYSELF, [("Authorization", basic("alice", secret)),
                                               ("User-Agent", f"nightly-export {secret}")])
    assert r.status == 200
    time.sleep(0.5)  # Envoy flushes its log every 200 ms
    texts = stack_texts(shared_stack)
    assert not find_secrets(texts["redis"], {secret}), "audit must mask it"
    assert not find_secrets(texts["envoy log"], {secret})
