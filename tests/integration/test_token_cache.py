"""TokenCache against a real Redis: zero round trips on hits, pub/sub invalidation across
replicas in well under a second, sticky revocation, bounded staleness through outages."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis_server import (
    FakeClock,
    RedisServer,
    client_for,
    command_calls,
    new_token,
    open_store,
    wait_for,
)

from authz.adapters.redis_store import CorruptRecord, RedisTokenStore, StoreUnavailable
from authz.adapters.token_cache import TokenCache
from authz.config import CacheConfig
from authz.domain.model import Token
from authz.domain.token_format import hash_secret

pytestmark = pytest.mark.integration

CFG = CacheConfig(
    max_entries=1000, refresh_after_seconds=30, max_stale_seconds=60, negative_ttl_seconds=5
)


@asynccontextmanager
async def running_cache(
    url: str, prefix: str, cfg: CacheConfig = CFG, **kw: object
) -> AsyncIterator[TokenCache]:
    """A started, subscribed cache on a client (connection pool) of its own."""
    async with open_store(url, prefix) as store:
        cache = TokenCache(store, cfg, **kw)  # type: ignore[arg-type]
        await cache.start()
        try:
            assert await cache.wait_subscribed(10), "cache never subscribed"
            yield cache
        finally:
            await cache.close()


def revoked_now(token: Token | None) -> bool:
    return token is not None and token.is_revoked(time.time())


async def warm(cache: TokenCache, token: Token) -> None:
    """Look the token up until the answer is a fresh hit (a create message may overlap)."""

    async def is_hit() -> bool:
        hits = cache.stats.hits
        assert await cache.lookup(token.secret_hash) == token
        return cache.stats.hits > hits

    await wait_for(is_hit, what="a fresh cache hit")


async def test_hit_makes_zero_redis_commands(private_redis: RedisServer, prefix: str) -> None:
    async with (
        open_store(private_redis.url, prefix) as admin,
        running_cache(private_redis.url, prefix) as cache,
    ):
        _, tok = new_token()
        await admin.create(tok)
        unknown = hash_secret("not a token")
        await warm(cache, tok)
        assert await cache.lookup(unknown) is None

        before = await command_calls(admin.client)
        for _ in range(200):
            assert await cache.lookup(tok.secret_hash) == tok
            assert await cache.lookup(unknown) is None
        after = await command_calls(admin.client)
        assert after - before == 0, f"{after - before} Redis commands for 400 cache hits"

        fresh = hash_secret("another unknown")
        before = await command_calls(admin.client)
        assert await cache.lookup(fresh) is None
        assert await command_calls(admin.client) - before == 1  # a miss: GET secret:..


async def test_concurrent_misses_share_one_read(private_redis: RedisServer, prefix: str) -> None:
    async with (
        open_store(private_redis.url, prefix) as admin,
        running_cache(private_redis.url, prefix) as cache,
    ):
        _, tok = new_token()
        await admin.create(tok)
        await wait_for(lambda: cache.stats.invalidations >= 1, what="create message")
        reads, before = cache.stats.reads, await command_calls(admin.client)
        results = await asyncio.gather(*(cache.lookup(tok.secret_hash) for _ in range(50)))
        assert results == [tok] * 50
        assert cache.stats.reads - reads == 1
        assert await command_calls(admin.client) - before == 2  # GET + HGETALL, once


async def test_refresh_after_and_negative_ttl(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix, clock=clock) as cache,
    ):
        _, tok = new_token("t", label="one")
        await admin.create(tok)
        await warm(cache, tok)
        # edited behind the cache's back (no message): invisible until refresh_after
        await admin.client.hset(admin.token_key("t"), "label", "two")
        clock.advance(29)
        assert (await cache.lookup(tok.secret_hash)).label == "one"  # type: ignore[union-attr]
        clock.advance(2)
        assert (await cache.lookup(tok.secret_hash)).label == "two"  # type: ignore[union-attr]

        # a secret created without a message stays unknown for negative_ttl, then appears
        _, ghost = new_token("g")
        assert await cache.lookup(ghost.secret_hash) is None
        await admin.client.set(admin.secret_key(ghost.secret_hash), "g")
        await admin.client.hset(
            admin.token_key("g"), mapping={"id": "g", "secret_hash": ghost.secret_hash}
        )
        assert await cache.lookup(ghost.secret_hash) is None
        clock.advance(5.1)
        found = await cache.lookup(ghost.secret_hash)
        assert found is not None and found.id == "g"


async def test_create_and_update_messages_invalidate(redis_url: str, prefix: str) -> None:
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix) as cache,
    ):
        _, tok = new_token("t", label="one")
        assert await cache.lookup(tok.secret_hash) is None  # negative entry
        await admin.create(tok)

        async def known() -> bool:
            return await cache.lookup(tok.secret_hash) == tok

        await wait_for(known, timeout=1, what="create to drop the negative entry")
        await warm(cache, tok)
        await admin.update("t", label="two", limits=("x",))

        async def edited() -> bool:
            t = await cache.lookup(tok.secret_hash)
            return t is not None and (t.label, t.limits) == ("two", ("x",))

        await wait_for(edited, timeout=1, what="update to drop the entry")


async def test_revocation_reaches_two_replicas_within_a_second(redis_url: str, prefix: str) -> None:
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix) as one,
        running_cache(redis_url, prefix) as two,
    ):
        assert one._store.client is not two._store.client
        worst: list[float] = []
        for i in range(20):
            _, tok = new_token(f"r{i}")
            await admin.create(tok)
            await warm(one, tok)
            await warm(two, tok)
            reads = (one.stats.reads, two.stats.reads)
            start = time.perf_counter()
            await admin.revoke(tok.id, time.time())
            seen: list[float] = []
            for cache in (one, two):

                async def revoked(c: TokenCache = cache, t: Token = tok) -> bool:
                    return revoked_now(await c.lookup(t.secret_hash))

                await wait_for(revoked, timeout=5, what="revocation")
                seen.append(time.perf_counter() - start)
            worst.append(max(seen))
            assert (one.stats.reads, two.stats.reads) == reads, "pub/sub, not a re-read"
        ms = sorted(w * 1000 for w in worst)
        delays = [d * 1000 for d in list(one.propagation_delays) + list(two.propagation_delays)]
        report = (
            f"revocation visible on both replicas: median {statistics.median(ms):.2f} ms, "
            f"max {ms[-1]:.2f} ms over {len(ms)} revocations; "
            f"publish->receipt median {statistics.median(delays):.2f} ms"
        )
        print("\n" + report)
        assert ms[-1] < 1000, report


async def test_revoked_and_expired_are_sticky(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    cfg = CacheConfig(max_entries=2, refresh_after_seconds=30, max_stale_seconds=60)
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix, cfg, clock=clock) as cache,
    ):
        _, rev = new_token("rev")
        _, exp = new_token("exp", expires_at=time.time() + 100)
        await admin.create(rev)
        await admin.create(exp)
        await warm(cache, rev)
        await warm(cache, exp)
        await admin.revoke("rev", 123.0)
        await wait_for(lambda: revoked_now(cache._entries[rev.secret_hash].token))

        # a lagging replica / restore from backup says otherwise: the cache does not believe it
        await admin.client.hset(admin.token_key("rev"), "revoked_at", "")
        await admin.client.hset(admin.token_key("exp"), "expires_at", "")
        clock.advance(31)
        assert (await cache.lookup(rev.secret_hash)).revoked_at == 123.0  # type: ignore[union-attr]
        assert (await cache.lookup(exp.secret_hash)).expires_at == exp.expires_at  # type: ignore[union-attr]

        # even after the entry was evicted (max_entries=2)
        for i in range(3):
            _, other = new_token(f"o{i}")
            await admin.create(other)
            await cache.lookup(other.secret_hash)
        assert rev.secret_hash not in cache._entries
        again = await cache.lookup(rev.secret_hash)
        assert again is not None and again.revoked_at == 123.0
        assert cache.stats.evictions >= 3


async def test_grace_period_is_refreshed_and_can_only_shrink(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix, clock=clock) as cache,
    ):
        _, tok = new_token("grace")
        await admin.create(tok)
        await warm(cache, tok)
        later = time.time() + 3600
        await admin.revoke("grace", later)  # rotation with a one-hour grace period

        async def pending() -> bool:
            found = await cache.lookup(tok.secret_hash)
            return found is not None and found.revoked_at == later

        await wait_for(pending, timeout=1, what="grace-period revocation")
        assert not revoked_now(await cache.lookup(tok.secret_hash))
        # not in force yet, so not final: the entry is refreshed like any other ...
        await admin.client.hset(admin.token_key("grace"), "revoked_at", "")
        clock.advance(31)
        assert (await cache.lookup(tok.secret_hash)).revoked_at == later  # type: ignore[union-attr]
        # ... and a shorter grace period found on refresh wins
        await admin.client.hset(admin.token_key("grace"), "revoked_at", "100.0")
        clock.advance(31)
        assert (await cache.lookup(tok.secret_hash)).revoked_at == 100.0  # type: ignore[union-attr]
        reads = cache.stats.reads
        clock.advance(3600)  # in force now: answered from memory, forever
        assert revoked_now(await cache.lookup(tok.secret_hash))
        assert cache.stats.reads == reads


async def test_revocation_during_an_inflight_read_is_not_lost(redis_url: str, prefix: str) -> None:
    gate = asyncio.Event()

    class SlowStore(RedisTokenStore):
        async def find_by_hash(self, secret_hash: str) -> Token | None:
            token = await super().find_by_hash(secret_hash)
            await gate.wait()  # the record was read before the revocation
            return token

    async with open_store(redis_url, prefix) as admin:
        slow = SlowStore(client_for(redis_url), prefix)
        cache = TokenCache(slow, CFG)
        await cache.start()
        try:
            assert await cache.wait_subscribed(10)
            _, tok = new_token("race")
            await admin.create(tok)
            await wait_for(lambda: cache.stats.invalidations >= 1)
            pending = asyncio.create_task(cache.lookup(tok.secret_hash))
            await wait_for(lambda: cache.stats.reads == 1)
            await admin.revoke("race", 7.0)
            await wait_for(lambda: cache.stats.invalidations >= 2, what="revoke message")
            gate.set()
            assert (await pending).revoked_at == 7.0  # type: ignore[union-attr]
            assert (await cache.lookup(tok.secret_hash)).revoked_at == 7.0  # type: ignore[union-attr]
        finally:
            await cache.close()
            await slow.client.aclose()


async def test_resubscribe_after_client_kill_forces_reread(
    private_redis: RedisServer, prefix: str
) -> None:
    url = private_redis.url
    async with open_store(url, prefix) as admin, running_cache(url, prefix) as cache:
        _, tok = new_token("k")
        await admin.create(tok)
        await warm(cache, tok)
        # revoked without a message (as if published while we were disconnected)
        await admin.client.hset(admin.token_key("k"), "revoked_at", "42.0")
        assert not revoked_now(await cache.lookup(tok.secret_hash))

        killed = await admin.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await wait_for(lambda: cache.stats.resubscribes >= 1 and cache.subscribed)
        reads = cache.stats.reads
        assert (await cache.lookup(tok.secret_hash)).revoked_at == 42.0  # type: ignore[union-attr]
        assert cache.stats.reads == reads + 1, "entries must be re-read after a resubscribe"

        # the new subscription carries revocations again
        _, other = new_token("k2")
        await admin.create(other)
        await warm(cache, other)
        reads = cache.stats.reads
        await admin.revoke("k2", time.time())

        async def revoked() -> bool:
            return revoked_now(await cache.lookup(other.secret_hash))

        took = await wait_for(revoked, timeout=1, what="revocation after resubscribe")
        assert cache.stats.reads == reads, f"seen via pub/sub in {took * 1000:.1f} ms"


async def test_silent_subscription_is_detected_by_keepalive(
    private_redis: RedisServer, prefix: str
) -> None:
    url = private_redis.url
    async with (
        open_store(url, prefix) as admin,
        running_cache(url, prefix, keepalive_seconds=0.2) as cache,
    ):
        # the server stops answering anyone (pubsub PINGs included) without closing sockets
        await admin.client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        await wait_for(lambda: not cache.subscribed, timeout=1.2, what="keepalive timeout")
        await wait_for(lambda: cache.subscribed, timeout=10, what="resubscribe after pause")
        assert cache.stats.resubscribes >= 1


async def test_freshness_needs_answered_pings_not_a_busy_listener(
    private_redis: RedisServer, prefix: str
) -> None:
    """A PING unanswered for longer than the keepalive (a stalled link) makes cached entries
    unconfirmed at once; a listener that merely ran late (a loaded event loop) does not, until
    four keepalives of complete silence."""
    async with (
        open_store(private_redis.url, prefix) as admin,
        running_cache(private_redis.url, prefix, keepalive_seconds=10) as cache,
    ):
        _, tok = new_token()
        await admin.create(tok)
        await warm(cache, tok)

        async def hit() -> bool:
            hits = cache.stats.hits
            assert await cache.lookup(tok.secret_hash) == tok
            return cache.stats.hits > hits

        now = time.monotonic()
        cache._last_heard = now - 25  # 2.5 keepalives quiet, no PING pending: still fresh
        assert await hit()
        cache._ping_since = now - 11  # a PING pending for longer than the keepalive
        assert not await hit()
        cache._ping_since = now - 5  # pending, but within the keepalive
        cache._last_heard = now - 5
        assert await hit()
        cache._ping_since, cache._last_heard = 0.0, now - 41  # silent for over 4 keepalives
        assert not await hit()


async def test_outage_serves_stale_then_recovers(private_redis: RedisServer, prefix: str) -> None:
    clock = FakeClock()
    url = private_redis.url
    async with (
        open_store(url, prefix) as admin,
        running_cache(url, prefix, clock=clock, reconnect_max_seconds=0.2) as cache,
    ):
        _, cached = new_token("cached")
        _, uncached = new_token("uncached")
        await admin.create(cached)
        await admin.create(uncached)
        await warm(cache, cached)

        private_redis.stop(persist=True)
        await wait_for(lambda: not cache.subscribed, what="subscription loss")
        assert await cache.lookup(cached.secret_hash) == cached
        assert cache.stats.stale_serves == 1
        with pytest.raises(StoreUnavailable):
            await cache.lookup(uncached.secret_hash)
        clock.advance(59)
        assert await cache.lookup(cached.secret_hash) == cached
        clock.advance(2)  # 61 s since the last successful read
        with pytest.raises(StoreUnavailable):
            await cache.lookup(cached.secret_hash)
        assert cache.stats.stale_serves == 2

        private_redis.start()  # same port, same data, same cache object
        await wait_for(lambda: cache.subscribed, timeout=10, what="resubscribe after restart")
        assert await cache.lookup(uncached.secret_hash) == uncached
        await warm(cache, cached)
        await admin.revoke("cached", time.time())

        async def revoked() -> bool:
            return revoked_now(await cache.lookup(cached.secret_hash))

        await wait_for(revoked, timeout=1, what="revocation after recovery")


async def test_lru_bound_and_corrupt_record(redis_url: str, prefix: str) -> None:
    cfg = CacheConfig(max_entries=3, refresh_after_seconds=30, max_stale_seconds=60)
    async with (
        open_store(redis_url, prefix) as admin,
        running_cache(redis_url, prefix, cfg) as cache,
    ):
        toks = [new_token(f"l{i}")[1] for i in range(5)]
        for t in toks:
            await admin.create(t)
        await wait_for(lambda: cache.stats.invalidations >= 5)
        for t in toks[:3]:
            await cache.lookup(t.secret_hash)
        await cache.lookup(toks[0].secret_hash)  # most recently used now
        for t in toks[3:]:
            await cache.lookup(t.secret_hash)
        assert len(cache) == 3
        assert set(cache._entries) == {
            toks[0].secret_hash,
            toks[3].secret_hash,
            toks[4].secret_hash,
        }

        await admin.client.hset(admin.token_key("l1"), "created_at", "garbage")
        errors = cache.stats.errors
        with pytest.raises(CorruptRecord):
            await cache.lookup(toks[1].secret_hash)
        assert cache.stats.errors == errors + 1


async def test_close_stops_listener_and_lookups_go_to_redis(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as admin, running_cache(redis_url, prefix) as cache:
        _, tok = new_token()
        await admin.create(tok)
        await warm(cache, tok)
        await cache.close()
        assert not cache.subscribed
        reads = cache.stats.reads
        assert await cache.lookup(tok.secret_hash) == tok
        assert cache.stats.reads == reads + 1
        with pytest.raises(ValueError):
            await cache.lookup("not-a-hash")


async def test_close_right_after_start_never_hangs(redis_url: str, prefix: str) -> None:
    """A cancellation landing while redis-py connects can be swallowed; close() still ends."""
    async with open_store(redis_url, prefix) as store:
        for i in range(60):
            cache = TokenCache(store, CFG)
            await cache.start()
            await asyncio.sleep((i % 12) * 0.0005)
            await asyncio.wait_for(cache.close(), 3)
            assert not cache.subscribed
        await cache.start()  # restartable after close
        assert await cache.wait_subscribed(10)
        await cache.close()
