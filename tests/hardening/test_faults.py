"""Faults with traffic running through the real Envoy: nothing let in, nothing lost.

Each test runs its own stack, sends steady traffic through Envoy while it breaks something
(Redis stopped, Redis slow, the server stopped or killed, the pub/sub link cut or silently
stalled), and afterwards checks every request against what was allowed to happen at its time,
and Envoy's access log against the audit stream.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hardening_support import (
    FIGURES,
    LEDGER,
    Call,
    DelayProxy,
    LocalStack,
    Sent,
    TokenOps,
    Traffic,
    authz_pid,
    basic,
    kill_authz,
    reconcile,
    redis_client,
    scaled,
    send,
    wait_for,
)

from authz.domain import token_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_server import RedisServer

pytestmark = pytest.mark.e2e

MYSELF = "/rest/api/2/myself"
REFRESH = 1.0
MAX_STALE = 4.0
STALE_ENV = {
    # Short bounds so a test sees both sides of them in seconds.
    "JIRA_AUTHZ_CACHE_REFRESH_AFTER_SECONDS": str(REFRESH),
    "JIRA_AUTHZ_CACHE_MAX_STALE_SECONDS": str(MAX_STALE),
}
RATE = scaled(40, 80)


@dataclass
class Pools:
    """Token secrets by the role they play in a fault run."""

    warm: list[tuple[str, str]] = field(default_factory=list)
    """(id, secret), used before the fault: cached in the server."""
    cold: list[tuple[str, str]] = field(default_factory=list)
    """Each used once only: never cached when it is sent."""
    revoked: list[tuple[str, str]] = field(default_factory=list)
    """Cached while valid, then revoked before the fault."""
    unknown: list[str] = field(default_factory=list)
    """Well-formed, never issued."""

    def pick(self, n: int, _now: float) -> Call:
        kinds = ("warm", "warm", "cold", "revoked", "unknown", "anonymous")
        kind = kinds[n % len(kinds)]
        i = n // len(kinds)
        if kind == "cold" and i < len(self.cold):
            tid, s = self.cold[i]
            return Call(kind, MYSELF, f"Bearer {s}", tid)
        if kind in ("warm", "cold"):  # cold pool used up: another warm call
            tid, s = self.warm[i % len(self.warm)]
            return Call("warm", MYSELF, basic("alice", s), tid)
        if kind == "revoked":
            tid, s = self.revoked[i % len(self.revoked)]
            return Call(kind, MYSELF, basic("alice", s), tid)
        if kind == "unknown":
            return Call(kind, MYSELF, f"Bearer {self.unknown[i % len(self.unknown)]}")
        return Call(kind, MYSELF, "", extra_headers=(("contextUser", "admin"),), audited=False)


def make_pools(stack: LocalStack, ops: TokenOps, *, warm: int = 3,
               seconds: float = 30) -> Pools:
    """Pools for a run of ``seconds`` at ``RATE``: enough cold tokens for one use each."""
    cold = int(seconds * RATE / 6) + 5
    p = Pools()
    for _ in range(warm):
        t, s = ops.create(user="alice", label="fault warm")
        p.warm.append((t.id, s))
    for _ in range(cold):
        t, s = ops.create(user="alice", label="fault cold")
        p.cold.append((t.id, s))
    t, s = ops.create(user="alice", label="fault revoked")
    p.revoked.append((t.id, s))
    p.unknown = [token_format.generate_secret() for _ in range(2)]
    LEDGER.add(*p.unknown)
    for _, s in p.warm + p.revoked:  # into the server's cache
        r = send(stack.envoy_port, MYSELF, [("Authorization", basic("alice", s))])
        assert r.status == 200 and r.from_jira, r.body
    ops.revoke(t.id)
    wait_for(lambda: send(stack.envoy_port, MYSELF, [("Authorization", basic("alice", s))])
             .status == 401, timeout=5, what="revocation before the fault")
    return p


@pytest.fixture
def ops_for() -> Iterator[Any]:
    made: list[TokenOps] = []

    def factory(stack: LocalStack, **kw: Any) -> TokenOps:
        o = TokenOps(stack, **kw)
        made.append(o)
        return o

    yield factory
    for o in made:
        o.close()


def never_wrongly_allowed(sent: list[Sent], *, uncached_window: tuple[float, float] | None
                          ) -> Counter[str]:
    """Revoked and unknown tokens are never allowed, an anonymous request never carries an
    identity, and (inside ``uncached_window``) a token never seen before is never allowed."""
    wrongful: Counter[str] = Counter()
    for s in sent:
        k = s.call.kind
        if s.status == 200 and k in ("revoked", "unknown"):
            wrongful[k] += 1
        if s.from_jira and k == "anonymous" and s.identity is not None:
            wrongful["anonymous-identity"] += 1
        if (uncached_window and k == "cold" and s.status == 200
                and uncached_window[0] <= s.start and s.end <= uncached_window[1]):
            wrongful["cold-during-outage"] += 1
    FIGURES.add("wrongful allows", sum(wrongful.values()))
    return wrongful


def record_traffic(t: Traffic) -> None:
    FIGURES.add("requests sent", len(t.sent))
    assert not [s for s in t.sent if s.error], [s.error for s in t.sent if s.error][:5]


def check_audit(stack: LocalStack, t: Traffic, *, allow_crash_loss: int = 0) -> dict[str, Any]:
    rec = reconcile(stack, t)
    # Events buffered in a process that is SIGKILLed are gone by design (batched, async):
    # counted apart from losses, which must be none.
    FIGURES.add("audit events lost on a crash (SIGKILL)" if allow_crash_loss else
                "audit events lost", len(rec.lost))
    FIGURES.add("audit events duplicated", len(rec.duplicated))
    print("audit reconciliation:", rec.summary())
    assert not rec.missing_in_envoy, rec.missing_in_envoy[:5]
    assert not rec.mismatched, rec.mismatched[:3]
    assert not rec.unexpected_events, rec.unexpected_events[:5]
    assert len(rec.lost) <= allow_crash_loss, (rec.summary(), rec.lost[:5])
    assert not rec.duplicated, (rec.summary(), rec.duplicated[:5])
    return rec.summary()


def statuses(sent: list[Sent], kind: str, lo: float, hi: float) -> Counter[int]:
    return Counter(s.status for s in sent if s.call.kind == kind and lo <= s.start and s.end <= hi)


# --- Redis stopped and restarted --------------------------------------------------------------


def test_redis_down_and_back_under_traffic(private_stack: Any, ops_for: Any) -> None:
    stack = private_stack(env=STALE_ENV)
    outage = scaled(6.0, 20.0)
    pools = make_pools(stack, ops_for(stack), seconds=outage + 6)
    pid = authz_pid(stack)
    with Traffic(stack.envoy_port, pools.pick, rate=RATE, duration=outage + 6) as t:
        time.sleep(1.5)
        down0 = time.time()
        stack.stop_redis()
        down1 = time.time()
        FIGURES.add("faults injected")
        time.sleep(outage)
        up0 = time.time()
        stack.start_redis()
        up1 = time.time()
        t.wait()
    record_traffic(t)
    sent = t.sent
    assert not never_wrongly_allowed(sent, uncached_window=(down1, up0))

    # Cached tokens carry on while their last read is younger than max_stale ...
    carry = statuses(sent, "warm", down1 + 0.3, down0 + MAX_STALE - REFRESH - 0.5)
    assert carry and set(carry) == {200}, carry
    # ... and get 503 after that, like every token the server has not seen.
    late = statuses(sent, "warm", down0 + MAX_STALE + 0.5, up0)
    assert late and set(late) == {503}, late
    cold = statuses(sent, "cold", down1 + 0.3, up0)
    assert cold and set(cold) == {503}, cold
    assert set(statuses(sent, "revoked", 0, float("inf"))) == {401}  # sticky in the cache

    # Recovery without a restart: the same process answers again within seconds.
    assert authz_pid(stack) == pid
    cold_ok = [s.start for s in sent if s.call.kind == "cold" and s.status == 200
               and s.start > up1]
    assert cold_ok, "no recovery after Redis came back"
    recovery = cold_ok[0] - up1
    FIGURES.note("redis outage: recovery after restart (s)", round(recovery, 2))
    assert recovery < 5
    # Audit events decided during the outage were buffered and written afterwards.
    summary = check_audit(stack, t)
    during = sum(1 for s in sent if down1 < s.start < up0 and s.status in (200, 401, 503)
                 and s.call.kind != "anonymous")
    assert during > 0
    FIGURES.note("redis outage: audit", {**summary, "decided during outage": during})


# --- the authz server stopped / killed --------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_authz_down_and_back_under_traffic(private_stack: Any, ops_for: Any, how: str) -> None:
    stack = private_stack()
    gap = scaled(2.0, 8.0)
    pools = make_pools(stack, ops_for(stack), seconds=gap + 5)
    with Traffic(stack.envoy_port, pools.pick, rate=RATE, duration=gap + 5) as t:
        time.sleep(1.5)
        down0 = time.time()
        if how == "sigterm":
            stack.stop_authz()
        else:
            kill_authz(stack)
        down1 = time.time()
        FIGURES.add("faults injected")
        time.sleep(gap)
        up0 = time.time()
        stack.start_authz()
        up1 = time.time()
        t.wait()
    record_traffic(t)
    sent = t.sent
    assert not never_wrongly_allowed(sent, uncached_window=None)
    meanwhile = [s for s in sent if down1 <= s.start and s.end <= up0]
    assert meanwhile
    # Envoy denies every request with credentials meanwhile (fail closed); requests without
    # any never needed the Check (issue 15) and reach Jira without an identity.
    checked = [s for s in meanwhile if s.call.kind != "anonymous"]
    assert checked and {s.status for s in checked} == {503}, Counter(s.status for s in checked)
    assert not any(s.from_jira for s in checked)
    assert all(s.from_jira and s.identity is None
               for s in meanwhile if s.call.kind == "anonymous")
    after = [s for s in sent if s.start > up1 + 1.0 and s.call.kind == "warm"]
    assert after and all(s.status == 200 for s in after)
    # SIGTERM drains and flushes: nothing lost. SIGKILL loses at most what was buffered for
    # the flush interval (50 ms) when the process died.
    crash_loss = 0 if how == "sigterm" else max(2, int(RATE * 0.2))
    summary = check_audit(stack, t, allow_crash_loss=crash_loss)
    FIGURES.note(f"authz {how}: audit", summary)
    assert down0 <= down1


# --- the pub/sub connection cut or silently stalled -------------------------------------------


def _revocation_delay(stack: LocalStack, ops: TokenOps, before_revoke: Any) -> float:
    """Seconds from a revocation (issued right after ``before_revoke()``) until Envoy refuses
    the token, which was cached and fresh just before."""
    tok, secret = ops.create(user="alice", label="pubsub")
    auth = [("Authorization", basic("alice", secret))]
    assert send(stack.envoy_port, MYSELF, auth).status == 200
    before_revoke()
    t0 = time.monotonic()
    ops.revoke(tok.id)
    allowed_after = 0
    while time.monotonic() - t0 < 35:  # bounded: the cache's refresh_after is 30 s
        r = send(stack.envoy_port, MYSELF, auth)
        if r.status == 200:
            allowed_after += 1
            time.sleep(0.005)
            continue
        assert r.status == 401, r.body
        return time.monotonic() - t0
    raise AssertionError("revoked token still allowed after 35 s")


def test_pubsub_killed_revocation_still_honoured(private_stack: Any, ops_for: Any) -> None:
    """CLIENT KILL TYPE pubsub, then revoke at once (the message may be published while the
    server has no subscription): the server re-reads everything after resubscribing."""
    stack = private_stack()  # default cache: refresh_after 30 s, so only invalidation helps
    ops = ops_for(stack)
    pools = make_pools(stack, ops, seconds=60)
    r = redis_client(stack)
    delays = []
    with Traffic(stack.envoy_port, pools.pick, rate=RATE / 2, duration=60) as t:
        for _ in range(scaled(3, 15)):
            delays.append(_revocation_delay(
                stack, ops, lambda: r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")))
            FIGURES.add("faults injected")
        t.stop()
    r.close()
    record_traffic(t)
    assert not never_wrongly_allowed(t.sent, uncached_window=None)
    FIGURES.note("pub/sub killed: revocation visible after (s, max)", round(max(delays), 3))
    assert max(delays) < 1.0, delays  # docs/product.md §2: every replica within 1 s
    check_audit(stack, t)


@pytest.fixture
def proxied_redis() -> Iterator[tuple[RedisServer, DelayProxy]]:
    with RedisServer() as server:
        proxy = DelayProxy(server.port)
        try:
            yield server, proxy
        finally:
            proxy.close()


def test_pubsub_stalled_silently(proxied_redis: tuple[RedisServer, DelayProxy],
                                 private_stack: Any, ops_for: Any) -> None:
    """The pub/sub link stays open but delivers nothing (a half-dead connection): the server's
    keepalive must notice, resubscribe and re-read; a revocation meanwhile is honoured once it
    does, well within the cache's refresh bound."""
    _, proxy = proxied_redis
    stack = private_stack(redis_url=proxy.url)
    ops = ops_for(stack, redis_url=proxy.url)

    def stall() -> None:
        proxy.stall_subscribers = True

    delays = []
    for _ in range(scaled(1, 6)):
        proxy.stall_subscribers = False
        wait_for(lambda: _ready(stack), timeout=10, what="server ready (subscribed)")
        delays.append(_revocation_delay(stack, ops, stall))
        FIGURES.add("faults injected")
    proxy.stall_subscribers = False
    FIGURES.note("pub/sub stalled: revocation visible after (s, max)", round(max(delays), 3))
    assert max(delays) < 30.0, delays  # the staleness bound: refresh_after_seconds


def test_pubsub_stalled_revocation_within_a_second(
    proxied_redis: tuple[RedisServer, DelayProxy], private_stack: Any, ops_for: Any
) -> None:
    _, proxy = proxied_redis
    stack = private_stack(redis_url=proxy.url)
    ops = ops_for(stack, redis_url=proxy.url)
    wait_for(lambda: _ready(stack), timeout=10, what="server ready (subscribed)")

    def stall() -> None:
        proxy.stall_subscribers = True

    # Found by this suite: with a 1 s keepalive and a 1 s answer deadline even the best case
    # took over a second (2.0 s typical); fixed in de45c9d (a quiet subscription is not fresh).
    delay = _revocation_delay(stack, ops, stall)
    proxy.stall_subscribers = False
    assert delay < 1.0, delay


def _ready(stack: LocalStack) -> bool:
    from authz.stack.processes import grpc_health_probe

    return grpc_health_probe(stack.check_addr, require_serving=True)()


# --- Redis slow -------------------------------------------------------------------------------


def test_redis_slow_under_traffic(proxied_redis: tuple[RedisServer, DelayProxy],
                                  private_stack: Any, ops_for: Any) -> None:
    """Latency injected between the server and Redis: below the socket timeout decisions stay
    right (slower); above it, cached tokens carry on within the staleness bound, uncached ones
    are refused, nothing is wrongly allowed, and everything recovers when Redis is fast again."""
    _, proxy = proxied_redis
    stack = private_stack(env=STALE_ENV, redis_url=proxy.url)
    slow = scaled(3.5, 15.0)
    pools = make_pools(stack, ops_for(stack, redis_url=proxy.url), seconds=slow * 2 + 6)
    with Traffic(stack.envoy_port, pools.pick, rate=RATE, duration=slow * 2 + 6) as t:
        time.sleep(1.0)
        mild0 = time.time()
        proxy.delay = 0.05  # 0.1 s round trip: well under the socket timeout and Check deadline
        FIGURES.add("faults injected")
        time.sleep(slow)
        mild1 = bad0 = time.time()
        proxy.delay = 1.0  # 2 s round trip: over every timeout
        FIGURES.add("faults injected")
        time.sleep(slow)
        bad1 = time.time()
        proxy.delay = 0.0
        t.wait()
    record_traffic(t)
    sent = t.sent
    assert not never_wrongly_allowed(sent, uncached_window=(bad0 + 0.3, bad1))
    # Two round trips per uncached lookup (plus new pooled connections) can pass Envoy's
    # 0.5 s Check deadline now and then: a 503, never an allow.
    mild = statuses(sent, "cold", mild0 + 0.3, mild1)
    assert mild and set(mild) <= {200, 503} and mild[200] >= 0.6 * mild.total(), mild
    warm_mild = statuses(sent, "warm", mild0 + 0.3, mild1)
    FIGURES.note("redis slow (0.1 s RTT): uncached / cached statuses",
                 {"uncached": dict(mild), "cached": dict(warm_mild)})
    bad = statuses(sent, "cold", bad0 + 0.6, bad1)
    assert bad and set(bad) == {503}, bad
    warm_bad = statuses(sent, "warm", bad0 + 0.6, bad1)
    FIGURES.note("redis slow (2 s RTT): cached statuses", dict(warm_bad))
    recovered = [s for s in sent if s.call.kind == "cold" and s.start > bad1 + 3]
    assert recovered and all(s.status == 200 for s in recovered), Counter(
        s.status for s in recovered)
    rec = reconcile(stack, t, settle=20)
    FIGURES.add("audit events lost", len(rec.lost))
    FIGURES.note("redis slow: audit", rec.summary())
    print("audit reconciliation:", rec.summary())
    assert not rec.lost and not rec.mismatched and not rec.missing_in_envoy, rec.summary()
    FIGURES.add("audit events duplicated", len(rec.duplicated))
    assert not rec.duplicated, rec.summary()


def test_redis_slow_cached_tokens_carry_on(
    proxied_redis: tuple[RedisServer, DelayProxy], private_stack: Any, ops_for: Any
) -> None:
    """Found by this suite: the lookup waited for Redis longer than Envoy's 0.5 s deadline, so
    cached tokens got 503 when Redis was slow rather than down. Fixed in de45c9d."""
    _, proxy = proxied_redis
    stack = private_stack(env=STALE_ENV, redis_url=proxy.url)
    ops = ops_for(stack, redis_url=proxy.url)
    _, secret = ops.create(user="alice", label="slow cached")
    auth = [("Authorization", basic("alice", secret))]
    assert send(stack.envoy_port, MYSELF, auth).status == 200  # cached now
    proxy.delay = 1.0
    FIGURES.add("faults injected")
    t0 = time.monotonic()
    got = []
    while time.monotonic() - t0 < MAX_STALE - REFRESH - 0.5:  # inside the staleness bound
        got.append(send(stack.envoy_port, MYSELF, auth).status)
        time.sleep(0.1)
    proxy.delay = 0.0
    assert got and set(got) == {200}, Counter(got)


def test_redis_stall_audit_exactly_once(
    proxied_redis: tuple[RedisServer, DelayProxy], private_stack: Any, ops_for: Any
) -> None:
    """Redis frozen longer than the socket timeout: the batch it then executes was also retried
    by the writer. Found by this suite (duplicate events); fixed in f0960da."""
    _, proxy = proxied_redis
    stack = private_stack(redis_url=proxy.url)
    pools = make_pools(stack, ops_for(stack, redis_url=proxy.url), seconds=6)
    with Traffic(stack.envoy_port, pools.pick, rate=RATE, duration=5.5) as t:
        for _ in range(2):
            time.sleep(0.8)
            proxy.pause(1.2)  # Redis frozen (fork, slow command, failover), links stay open
            FIGURES.add("faults injected")
            time.sleep(1.2)
        t.wait()
    record_traffic(t)
    assert not never_wrongly_allowed(t.sent, uncached_window=None)
    rec = reconcile(stack, t)
    FIGURES.note("redis stalls: audit", rec.summary())
    FIGURES.add("audit events duplicated", len(rec.duplicated))
    assert not rec.lost and not rec.mismatched, rec.summary()
    assert not rec.duplicated, rec.summary()
