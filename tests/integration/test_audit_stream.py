"""AuditStream against a real, private redis-server (never the shared one on 6379).

Each test gets its own server (``private_redis``: stop/start on the same port, restart with
the data kept when stopped with ``persist=True``), drives the stream from ``asyncio.run`` and
waits on conditions with a deadline, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis
from redis_server import RedisServer, client_for, wait_for

from authz.adapters.audit_reader import AuditReader
from authz.adapters.audit_stream import AuditStream
from authz.config import AuditConfig
from authz.domain.audit_event import AuditRecord, build_event
from authz.domain.model import Decision, HttpRequest, Outcome, Reason, Token

pytestmark = pytest.mark.integration

STREAM = "test:audit"


def _client(url: str) -> Redis:
    """Configured like production: short timeouts, one quick retry, decoded responses."""
    return client_for(url)


async def _xlen_is(client: Redis, n: int) -> bool:
    return bool(await client.xlen(STREAM) == n)


async def _commandstats(client: Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def _request_ids(client: Redis) -> list[str]:
    return [f["request_id"] for _, f in await client.xrange(STREAM)]


def _ev(i: int, tid: str = "tokA") -> dict[str, str]:
    return {"time": "", "token_id": tid, "request_id": str(i), "decision": "allow"}


class _Uses:
    """Records every token_store_record_use call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, tuple[int, float]]] = []
        self.fail_next = 0

    async def __call__(self, uses: dict[str, tuple[int, float]]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("store down")
        self.calls.append(dict(uses))


# --- tests ------------------------------------------------------------------------------------


def test_batches_in_order_one_transaction_each_with_aggregated_uses(
    private_redis: RedisServer,
) -> None:
    now = [1000.0]

    async def main() -> None:
        client = _client(private_redis.url)
        cfg = AuditConfig(stream=STREAM, batch_size=10, flush_interval_seconds=0.05)
        uses = _Uses()
        # use_flush_interval=0: one record_use call per batch, so the aggregation is visible.
        audit = AuditStream(client, cfg, token_store_record_use=uses, clock=lambda: now[0],
                            use_flush_interval=0)
        await client.config_resetstat()
        await audit.start()
        # 30 events in one go (no await between them): exactly three full batches.
        for i in range(30):
            now[0] = 1000.0 + i
            token = "tokA" if i % 3 else "tokB"
            assert audit.emit(_ev(i, token), token_id=token, used=i % 5 != 4)
        await wait_for(lambda: _xlen_is(client, 30))
        # Then a partial batch, written when the flush interval elapses.
        for i in range(30, 35):
            assert audit.emit(_ev(i), used=False)
        await wait_for(lambda: _xlen_is(client, 35))
        await wait_for(lambda: audit.depth == 0 and audit.stats.flushed == 35)

        assert await _request_ids(client) == [str(i) for i in range(35)]
        stats = await _commandstats(client)
        assert stats["xadd"] == 35
        # One atomic script run per batch: it reads and sets the writer's batch mark once.
        assert stats["get"] == stats["set"] == 4

        # One record_use call per batch that counted uses, aggregated per token.
        expected = []
        for b in range(3):
            agg: dict[str, tuple[int, float]] = {}
            for i in range(b * 10, b * 10 + 10):
                if i % 5 != 4:
                    tok = "tokA" if i % 3 else "tokB"
                    n, _ = agg.get(tok, (0, 0.0))
                    agg[tok] = (n + 1, 1000.0 + i)
            expected.append(agg)
        assert uses.calls == expected
        assert audit.stats.emitted == 35 and audit.stats.dropped == 0
        await audit.close(timeout=2)
        await client.aclose()

    asyncio.run(main())


def test_failed_use_callback_is_retried_with_next_batch(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        cfg = AuditConfig(stream=STREAM, batch_size=3, flush_interval_seconds=0.05)
        uses = _Uses()
        uses.fail_next = 1
        audit = AuditStream(client, cfg, token_store_record_use=uses, clock=lambda: 5.0)
        await audit.start()
        for i in range(3):
            audit.emit(_ev(i), used=True)  # token id taken from the event
        await wait_for(lambda: audit.stats.flushed == 3)
        assert uses.calls == []
        for i in range(3, 5):
            audit.emit(_ev(i), used=True)
        await wait_for(lambda: len(uses.calls) == 1)
        assert uses.calls == [{"tokA": (5, 5.0)}]  # nothing lost, nothing counted twice
        assert await _request_ids(client) == [str(i) for i in range(5)]  # events not re-sent
        await audit.close(timeout=2)
        await client.aclose()

    asyncio.run(main())


def test_maxlen_trims_approximately(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        await client.config_set("stream-node-max-entries", 10)
        cfg = AuditConfig(stream=STREAM, max_len=50, batch_size=100)
        audit = AuditStream(client, cfg)
        await audit.start()
        for i in range(1000):
            assert audit.emit(_ev(i))
        await wait_for(lambda: audit.stats.flushed == 1000)
        n = await client.xlen(STREAM)
        assert 50 <= n < 50 + 2 * 10  # approximate: whole macro nodes only
        ids = await _request_ids(client)
        assert ids == [str(i) for i in range(1000 - n, 1000)]  # the newest survive
        await audit.close(timeout=2)
        await client.aclose()

    asyncio.run(main())


def test_max_age_trims_old_entries_periodically(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        await client.config_set("stream-node-max-entries", 5)
        now = [time.time()]
        cfg = AuditConfig(stream=STREAM, max_age_days=1.0, batch_size=10)
        audit = AuditStream(client, cfg, clock=lambda: now[0], age_trim_interval=3600)
        await client.config_resetstat()
        await audit.start()
        for i in range(10):
            audit.emit(_ev(i))
        await wait_for(lambda: _xlen_is(client, 10))
        # Two days later (by the service clock) the first ten entries are past the age.
        now[0] += 2 * 86400
        audit._next_age_trim = 0.0  # the periodic trim is due
        for i in range(10, 13):
            audit.emit(_ev(i))
        await wait_for(lambda: audit.stats.flushed == 13)
        assert await _request_ids(client) == ["10", "11", "12"]
        for i in range(13, 15):  # not due again: no further XTRIM
            audit.emit(_ev(i))
        await wait_for(lambda: audit.stats.flushed == 15)
        stats = await _commandstats(client)
        assert stats["xtrim"] == 2  # at the first flush and once when due; never per event
        assert stats["xadd"] == 15
        await audit.close(timeout=2)
        await client.aclose()

    asyncio.run(main())


def test_outage_buffers_then_every_event_lands_exactly_once(
    private_redis: RedisServer,
) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        cfg = AuditConfig(stream=STREAM, batch_size=8, flush_interval_seconds=0.02)
        audit = AuditStream(client, cfg)
        await audit.start()
        for i in range(20):
            audit.emit(_ev(i))
        await wait_for(lambda: audit.stats.flushed == 20)

        private_redis.stop(persist=True)  # SHUTDOWN SAVE: the 20 written events survive
        for i in range(20, 70):  # traffic continues while Redis is down
            t0 = time.perf_counter()
            assert audit.emit(_ev(i))
            assert time.perf_counter() - t0 < 0.01  # never waits for Redis
            if i % 10 == 0:
                await asyncio.sleep(0.02)
        await wait_for(lambda: audit.stats.flush_errors >= 2)
        assert audit.depth == 50
        assert audit.stats.flushed == 20

        private_redis.start()
        await wait_for(lambda: audit.depth == 0, timeout=15)
        check = _client(private_redis.url)
        ids = await _request_ids(check)
        assert ids == [str(i) for i in range(70)]  # all, in order, none twice
        assert audit.stats.flushed == 70
        assert audit.stats.dropped == 0
        await audit.close(timeout=2)
        await client.aclose()
        await check.aclose()

    asyncio.run(main())


def test_overflow_drops_exactly_the_overflow_and_logs_without_content(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    def drop_counts() -> list[int]:
        msgs = [r.getMessage() for r in caplog.records if "audit: dropped" in r.getMessage()]
        return [int(m.split()[2]) for m in msgs]

    async def main() -> None:
        client = _client(private_redis.url)
        cfg = AuditConfig(stream=STREAM, buffer_size=10, batch_size=100)
        audit = AuditStream(client, cfg)
        secretish = {"path": "/rest/very-private-path", "user_agent": "ua-content-xyz"}
        results = [audit.emit({**_ev(i, "tokZ"), **secretish}) for i in range(15)]
        assert results == [True] * 10 + [False] * 5
        assert audit.stats.dropped == 5
        assert audit.stats.emitted == 10
        assert not audit.would_accept()
        assert drop_counts() == [1]  # rate-limited: the first drop at once, the rest later
        assert "tokZ" in caplog.text

        await audit.start()
        await wait_for(lambda: audit.would_accept() and audit.stats.flushed == 10)
        assert await _request_ids(client) == [str(i) for i in range(10)]
        await audit.close(timeout=2)
        assert sum(drop_counts()) == 5  # close reports what was not reported yet
        assert len(drop_counts()) == 2
        assert not audit.would_accept()
        assert audit.emit(_ev(99)) is False  # closed
        assert audit.stats.dropped == 6
        await client.aclose()

    with caplog.at_level(logging.WARNING, logger="authz.adapters.audit_stream"):
        asyncio.run(main())
    assert "very-private-path" not in caplog.text and "ua-content-xyz" not in caplog.text


def test_close_flushes_pending_events(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        cfg = AuditConfig(stream=STREAM, batch_size=1000, flush_interval_seconds=60)
        uses = _Uses()
        audit = AuditStream(client, cfg, token_store_record_use=uses, clock=lambda: 7.0)
        await audit.start()
        for i in range(7):
            audit.emit(_ev(i), used=True)
        assert await client.xlen(STREAM) == 0  # not due yet
        await audit.close(timeout=5)
        assert await _request_ids(client) == [str(i) for i in range(7)]
        assert uses.calls == [{"tokA": (7, 7.0)}]
        assert audit.stats.dropped == 0 and audit.depth == 0
        await client.aclose()

    asyncio.run(main())


def test_close_without_start_still_flushes(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        audit = AuditStream(client, AuditConfig(stream=STREAM))
        for i in range(3):
            audit.emit(_ev(i))
        await audit.close(timeout=5)
        assert await _request_ids(client) == ["0", "1", "2"]
        await client.aclose()

    asyncio.run(main())


def test_close_with_redis_down_counts_unwritten_as_dropped(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        client = _client(private_redis.url)
        audit = AuditStream(client, AuditConfig(stream=STREAM, flush_interval_seconds=0.02))
        await audit.start()
        private_redis.stop()
        for i in range(5):
            audit.emit(_ev(i))
        t0 = time.monotonic()
        await audit.close(timeout=0.5)
        assert time.monotonic() - t0 < 2.0  # bounded by the timeout (+ one connect attempt)
        assert audit.stats.dropped == 5
        assert audit.depth == 0
        await client.aclose()

    with caplog.at_level(logging.ERROR, logger="authz.adapters.audit_stream"):
        asyncio.run(main())
    assert any("5 buffered events could not be written" in r.getMessage() for r in caplog.records)


# --- query --------------------------------------------------------------------------------------


def _http(i: int) -> HttpRequest:
    return HttpRequest(
        method="GET",
        scheme="https",
        host="jira.example.com",
        path=f"/rest/api/2/issue/AAA-{i}",
        query="",
        headers={"authorization": "Bearer jat_secretsecretsecret", "user-agent": "py"},
        source_ip="10.1.1.1",
        request_id=f"r{i}",
    )


def test_query_filters_by_token_user_time_and_decision(private_redis: RedisServer) -> None:
    t0 = time.time() - 600
    tok_a = Token(id="tokA", secret_hash="a" * 64, label="A", user="alice")
    tok_b = Token(id="tokB", secret_hash="b" * 64, label="B", user=None)
    plan = [
        # (token, login, effective user, allowed, minutes after t0)
        (tok_a, "alice", "alice", True, 0),
        (tok_a, "alice", "bob", True, 1),
        (tok_b, "carol", "carol", True, 2),
        (tok_a, "mallory", "", False, 3),
        (tok_b, "dave", "dave", False, 4),
        (tok_a, "Alice", "alice", True, 5),
        (None, "eve", "", False, 6),
    ]

    async def main() -> None:
        client = _client(private_redis.url)
        audit = AuditStream(client, AuditConfig(stream=STREAM))
        for i, (tok, login, eff, ok, minute) in enumerate(plan):
            dec = Decision(
                Outcome.ALLOW if ok else Outcome.DENY,
                Reason.OK if ok else Reason.WRONG_USER,
                200 if ok else 401,
                token=tok,
                login=login,
                effective_user=eff,
            )
            audit.emit(build_event(_http(i), dec, now=t0 + 60 * minute, include_query=False))
        await audit.close(timeout=5)
        q = AuditReader(client, STREAM).query

        def rids(recs: list[AuditRecord]) -> list[str]:
            return [r.request_id for r in recs]

        assert rids(await q()) == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]  # newest first
        assert rids(await q(limit=2)) == ["r6", "r5"]
        assert rids(await q(token_id="tokA")) == ["r5", "r3", "r1", "r0"]
        assert rids(await q(user="ALICE")) == ["r5", "r3", "r1", "r0"]  # token user or login
        assert rids(await q(user="bob")) == ["r1"]  # effective user
        assert rids(await q(decision="deny")) == ["r6", "r4", "r3"]
        assert rids(await q(token_id="tokA", decision="allow", user="bob")) == ["r1"]
        assert rids(await q(since=t0 + 120, until=t0 + 240)) == ["r4", "r3", "r2"]
        assert rids(await q(since=t0 + 300)) == ["r6", "r5"]
        assert rids(await q(until=t0 + 60)) == ["r1", "r0"]
        assert rids(await q(token_id="tokA", page_size=2)) == ["r5", "r3", "r1", "r0"]
        assert rids(await q(token_id="tokA", page_size=2, limit=3)) == ["r5", "r3", "r1"]
        assert await q(token_id="nope") == []
        assert await q(since=time.time() + 3600) == []  # maps to an empty ID range

        rec = (await q(token_id="tokB", decision="allow"))[0]
        assert (rec.token_label, rec.token_user, rec.login) == ("B", "", "carol")
        assert rec.path == "/rest/api/2/issue/AAA-2"
        assert rec.status == 200 and rec.id
        assert abs(rec.timestamp - (t0 + 120)) < 0.001
        # The credential is nowhere in the stream.
        for _, fields in await client.xrange(STREAM):
            assert not any("secretsecret" in v for v in fields.values())
        await client.aclose()

    asyncio.run(main())


def test_query_works_with_a_bytes_client(private_redis: RedisServer) -> None:
    async def main() -> None:
        client = Redis.from_url(private_redis.url)  # decode_responses=False
        audit = AuditStream(client, AuditConfig(stream=STREAM))
        audit.emit(_ev(1, "tokQ"))
        await audit.close(timeout=5)
        recs = await AuditReader(client, STREAM).query(token_id="tokQ")
        assert [r.request_id for r in recs] == ["1"]
        await client.aclose()

    asyncio.run(main())


def test_values_round_trip_exactly_whatever_they_hold(private_redis: RedisServer) -> None:
    """Events travel NUL-joined in one script argument: empty values, separators inside a
    value, non-ASCII and unencodable text must neither shift fields nor fail the batch."""
    awkward = {
        "time": "",
        "token_id": "tokA",
        "token_label": "a\x00b",
        "path": "/rest/ü/😀",
        "user_agent": "x\udcffy",
        "request_id": "",
        "decision": "allow",
    }

    async def main() -> None:
        client = _client(private_redis.url)
        audit = AuditStream(client, AuditConfig(stream=STREAM, flush_interval_seconds=0.02))
        await audit.start()
        assert audit.emit(awkward)
        assert audit.emit(_ev(2))
        await wait_for(lambda: _xlen_is(client, 2), timeout=5)
        (_, first), (_, second) = await client.xrange(STREAM)
        assert list(first) == list(awkward)
        assert first["token_label"] == "a\ufffdb"
        assert first["path"] == "/rest/ü/😀"
        assert first["user_agent"] == "x?y"
        assert first["time"] == first["request_id"] == ""
        assert second == _ev(2)
        assert audit.stats.flush_errors == 0
        await audit.close()
        await client.aclose()

    asyncio.run(main())


def test_untrusted_events_rate_bounded_with_summary(private_redis: RedisServer) -> None:
    """Issue 13: events without a token id are bounded; a summary counts the rest, known
    tokens' events are all written one by one."""

    async def main() -> None:
        client = _client(private_redis.url)
        now = [1000.0]
        cfg = AuditConfig(stream=STREAM, flush_interval_seconds=0.01,
                          untrusted_per_client_per_second=1, untrusted_per_second=1,
                          untrusted_window_seconds=5)
        audit = AuditStream(client, cfg, clock=lambda: now[0])
        await audit.start()
        for i in range(50):
            ev = {"time": "", "token_id": "", "request_id": f"u{i}", "decision": "deny",
                  "reason": "malformed_token", "client_ip": f"203.0.113.{i % 3}"}
            assert audit.emit(ev)
        for i in range(30):
            audit.emit(_ev(i))
        now[0] += 5  # the window ends: the flush loop writes its summary
        await wait_for(lambda: _xlen_is(client, 5 + 1 + 30), timeout=5, what="summary")
        entries = [f for _, f in await client.xrange(STREAM)]
        summaries = [f for f in entries if f.get("kind") == "summary"]
        assert len(summaries) == 1 and summaries[0]["suppressed"] == "45"
        assert sum(1 for f in entries if f.get("request_id", "").startswith("u")) == 5
        assert audit.stats.suppressed == 45 and audit.stats.dropped == 0
        await audit.close(timeout=5)
        await client.aclose()

    asyncio.run(main())
