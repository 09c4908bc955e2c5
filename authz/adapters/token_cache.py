"""In-process cache of token records in front of ``RedisTokenStore``.

Most Check calls must not touch Redis, yet a revocation must reach every replica within a
second, and a Redis outage must not turn into an outage for tokens we already know. So:

* a cached answer is used without any Redis round trip only while it is younger than
  ``refresh_after_seconds`` **and** the invalidation subscription is healthy (otherwise a
  revocation could have been missed);
* the ``{prefix}invalidate`` channel revokes cached tokens at once, drops edited ones and
  forgets "unknown" answers for newly created secrets;
* after any (re)subscription every entry must be re-read before it counts as fresh, because
  messages may have been lost while the subscription was down;
* when Redis fails, an entry read less than ``max_stale_seconds`` ago is served (a "stale
  serve"); otherwise ``StoreUnavailable`` tells the service to answer 503;
* revoked and expired are sticky: no later read (e.g. a lagging replica) can undo them or move
  them later; a revocation already in force is answered from memory for as long as it is
  cached (a future ``revoked_at``, a rotation's grace period, is refreshed as usual).

Concurrent misses for one hash share one Redis read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from authz.adapters.invalidation import Invalidation
from authz.adapters.invalidation import parse as parse_invalidation
from authz.adapters.redis_store import (
    CorruptRecord,
    RedisTokenStore,
    StoreUnavailable,
    check_secret_hash,
)
from authz.config import CacheConfig
from authz.domain.model import Token

log = logging.getLogger(__name__)

_NOT_FRESH = -1
"""Generation of an entry that must be re-read before it is used without Redis."""
_KEEPALIVE_MESSAGE = "jira-authz-keepalive"
_SILENCE_KEEPALIVES = 4
"""Keepalive intervals of total silence after which cached entries stop counting as fresh."""


class Miss:
    """``TokenCache.cached``: the answer needs a read (``await lookup``)."""

    __slots__ = ()


MISS = Miss()


@dataclass
class CacheStats:
    """Plain counters; the metrics module reads them."""

    hits: int = 0
    """Answers given from memory without Redis."""
    misses: int = 0
    """Lookups that needed Redis (absent, not fresh, or subscription unhealthy)."""
    reads: int = 0
    """Redis reads actually issued (concurrent misses for one hash share one)."""
    stale_serves: int = 0
    """Answers from memory because Redis failed, within ``max_stale_seconds``."""
    invalidations: int = 0
    """Valid messages received on the invalidation channel."""
    errors: int = 0
    """Redis errors, corrupt records, malformed messages, subscription failures."""
    resubscribes: int = 0
    """Subscriptions re-established after the first one."""
    evictions: int = 0


@dataclass(slots=True)
class _Entry:
    token: Token | None
    """None: the hash is unknown (negative entry)."""
    read_at: float
    """``clock()`` when the Redis read that produced this entry started."""
    gen: int
    """Subscription generation the read happened under; ``_NOT_FRESH`` forces a re-read."""


class TokenCache:
    """``lookup(secret_hash)`` with bounded staleness; ``start()`` the invalidation listener."""

    def __init__(
        self,
        store: RedisTokenStore,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        pubsub_client: Redis | None = None,
        keepalive_seconds: float | None = None,
        reconnect_min_seconds: float = 0.05,
        reconnect_max_seconds: float = 2.0,
        delay_samples: int = 1024,
        on_propagation: Callable[[float], None] | None = None,
        on_read: Callable[[float], None] | None = None,
    ) -> None:
        """``on_propagation(seconds)`` / ``on_read(seconds)``: metric hooks, called for each
        invalidation received and each Redis read on a miss."""
        self._store = store
        self._cfg = config or CacheConfig()
        self._clock = clock
        self._pubsub_client = pubsub_client or store.client
        self._keepalive = (
            keepalive_seconds if keepalive_seconds is not None
            else self._cfg.subscription_keepalive_seconds
        )
        self._last_heard = float("-inf")
        """Monotonic time the subscription last delivered anything (message or PONG)."""
        self._ping_since = 0.0
        """Monotonic time the unanswered keepalive PING was sent; 0.0 when none is pending."""
        self._reconnect_min = reconnect_min_seconds
        self._reconnect_max = reconnect_max_seconds
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._revoked: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """hash -> (token id, revoked_at) seen revoked; survives eviction of the entry."""
        self._inflight: dict[str, asyncio.Task[Token | None]] = {}
        self._gen = 0
        self._epoch = 0
        """Bumped on every invalidation: a read that overlapped one is not fresh."""
        self._subscribed = False
        self._subscribed_evt = asyncio.Event()
        self._ever_subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._resubscribe_requested = False
        self.stats = CacheStats()
        self._on_propagation = on_propagation
        self._on_read = on_read
        self.propagation_delays: deque[float] = deque(maxlen=delay_samples)
        """Seconds from publish (message ``ts``, wall clock) to receipt, most recent last."""

    # --- lookups ---------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        """The invalidation subscription is established: fresh entries may skip Redis."""
        return self._subscribed

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, secret_hash: str) -> Token | Miss | None:
        """``lookup``'s answer when it needs no I/O (a fresh cache entry), else ``MISS``.

        Lets a caller decide without a coroutine or a task per Check on the common path."""
        entry = self._entries.get(secret_hash)
        if entry is not None and self._is_fresh(entry, self._clock()):
            self._entries.move_to_end(secret_hash)
            self.stats.hits += 1
            return entry.token
        return MISS

    async def lookup(self, secret_hash: str) -> Token | None:
        """The token for this hash, None if unknown; ``StoreUnavailable`` if no safe answer."""
        entry = self._entries.get(secret_hash)
        if entry is not None and self._is_fresh(entry, self._clock()):
            self._entries.move_to_end(secret_hash)
            self.stats.hits += 1
            return entry.token
        check_secret_hash(secret_hash)  # entries hold only valid hashes: a hit needs no check
        self.stats.misses += 1
        try:
            if entry is not None and self._stale_usable(entry):
                # Serve-stale-while-revalidate: a slow Redis must not turn a safely cached
                # answer into a 503 at Envoy's deadline.
                try:
                    return await asyncio.wait_for(
                        self._read(secret_hash), self._cfg.stale_read_budget_seconds
                    )
                except TimeoutError:
                    self.stats.stale_serves += 1
                    return entry.token
            return await self._read(secret_hash)
        except StoreUnavailable:
            return self._stale_or_raise(secret_hash)

    def _stale_usable(self, entry: _Entry) -> bool:
        limit = self._cfg.max_stale_seconds if entry.token else self._cfg.negative_ttl_seconds
        return self._clock() - entry.read_at < limit

    def _is_fresh(self, entry: _Entry, now: float) -> bool:
        if entry.token is not None and entry.token.is_revoked(time.time()):
            return True  # in force and final: no read can change the answer
        if not self._subscribed or entry.gen != self._gen:
            return False
        mono = time.monotonic()
        if self._ping_since and mono - self._ping_since > self._keepalive:
            return False  # a PING went unanswered: the link may have stalled silently
        if mono - self._last_heard > _SILENCE_KEEPALIVES * self._keepalive:
            return False  # not even a PING sent: the listener itself is not running
        ttl = self._cfg.refresh_after_seconds if entry.token else self._cfg.negative_ttl_seconds
        return now - entry.read_at < ttl

    def _stale_or_raise(self, secret_hash: str) -> Token | None:
        entry = self._entries.get(secret_hash)
        if entry is not None and self._stale_usable(entry):
            self.stats.stale_serves += 1
            return entry.token
        raise StoreUnavailable("token store unavailable and no recent cached answer")

    async def _read(self, secret_hash: str) -> Token | None:
        """One Redis read per hash at a time; every concurrent caller shares its result."""
        task = self._inflight.get(secret_hash)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(secret_hash))
            self._inflight[secret_hash] = task
            task.add_done_callback(lambda t: self._read_done(secret_hash, t))
        return await asyncio.shield(task)

    def _read_done(self, secret_hash: str, task: asyncio.Task[Token | None]) -> None:
        if self._inflight.get(secret_hash) is task:
            del self._inflight[secret_hash]
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned read never warns

    async def _fetch(self, secret_hash: str) -> Token | None:
        gen, epoch, started = self._gen, self._epoch, self._clock()
        self.stats.reads += 1
        t0 = time.perf_counter()
        try:
            token = await self._store.find_by_hash(secret_hash)
            if self._on_read is not None:
                self._on_read(time.perf_counter() - t0)
        except StoreUnavailable:
            self.stats.errors += 1
            raise
        except CorruptRecord:
            self.stats.errors += 1
            self._entries.pop(secret_hash, None)
            raise
        if self._epoch != epoch:
            gen = _NOT_FRESH  # an invalidation overlapped the read: it may predate it
        token = self._sticky(secret_hash, token)
        self._put(secret_hash, _Entry(token, started, gen))
        return token

    def _sticky(self, secret_hash: str, token: Token | None) -> Token | None:
        """Keep the earliest revoked_at / expires_at ever seen for this token."""
        if token is None:
            return None
        revoked, expires = [token.revoked_at], [token.expires_at]
        old = self._entries.get(secret_hash)
        if old is not None and old.token is not None and old.token.id == token.id:
            revoked.append(old.token.revoked_at)
            expires.append(old.token.expires_at)
        seen = self._revoked.get(secret_hash)
        if seen is not None and seen[0] == token.id:
            revoked.append(seen[1])
        revoked_at = min((r for r in revoked if r is not None), default=None)
        expires_at = min((e for e in expires if e is not None), default=None)
        if (revoked_at, expires_at) == (token.revoked_at, token.expires_at):
            return token
        return dataclasses.replace(token, revoked_at=revoked_at, expires_at=expires_at)

    def _put(self, secret_hash: str, entry: _Entry) -> None:
        self._entries[secret_hash] = entry
        self._entries.move_to_end(secret_hash)
        while len(self._entries) > self._cfg.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1

    # --- invalidation ------------------------------------------------------------------------

    def _on_subscribed(self) -> None:
        """Messages may have been missed before this point: nothing cached is fresh now."""
        self._gen += 1
        self._epoch += 1
        if self._ever_subscribed:
            self.stats.resubscribes += 1
        self._ever_subscribed = True
        self._subscribed = True
        self._subscribed_evt.set()

    def _on_unsubscribed(self) -> None:
        self._subscribed = False
        self._subscribed_evt.clear()

    def _on_message(self, data: Any) -> None:
        inv = parse_invalidation(data)
        if inv is None:
            self.stats.errors += 1
            log.warning("ignoring malformed message on %s", self._store.channel)
            return
        self.stats.invalidations += 1
        self._epoch += 1
        if inv.ts is not None:
            delay = max(0.0, time.time() - inv.ts)
            self.propagation_delays.append(delay)
            if self._on_propagation is not None:
                self._on_propagation(delay)
        if inv.op == "revoke":
            self._apply_revoke(inv)
        elif inv.op == "update":
            self._entries.pop(inv.hash, None)
        else:
            entry = self._entries.get(inv.hash)
            if entry is not None and (entry.token is None or entry.token.id != inv.id):
                del self._entries[inv.hash]

    def _apply_revoke(self, inv: Invalidation) -> None:
        at = inv.revoked_at if inv.revoked_at is not None else time.time()
        self._revoked[inv.hash] = (inv.id, at)
        self._revoked.move_to_end(inv.hash)
        while len(self._revoked) > self._cfg.max_entries:
            self._revoked.popitem(last=False)
        entry = self._entries.get(inv.hash)
        if entry is not None and entry.token is not None and entry.token.id == inv.id:
            entry.token = self._sticky(inv.hash, entry.token)

    # --- listener lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the invalidation listener (returns at once; see ``wait_subscribed``)."""
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(
                self._listen_forever(), name="token-cache-invalidation"
            )

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the subscription is up; False on timeout."""
        try:
            await asyncio.wait_for(self._subscribed_evt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the listener; lookups keep working, but always via Redis.

        Cancels repeatedly until the task has ended: redis-py can swallow a cancellation that
        lands while it is (re)connecting, and a single ``cancel()`` then leaves ``close()``
        waiting forever. The ``_closing`` flag ends the loop in any case.
        """
        self._closing = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
        self._on_unsubscribed()

    def resubscribe(self) -> None:
        """Drop the subscription and subscribe again (it may sit on a demoted master); entries
        become unconfirmed until re-read, as after any reconnect."""
        self._resubscribe_requested = True
        self._gen += 1
        self._epoch += 1

    async def _listen_forever(self) -> None:
        """Subscribe, and re-subscribe after any failure with jittered exponential backoff."""
        delay = self._reconnect_min
        while not self._closing:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.stats.errors += 1
                log.warning("invalidation subscription lost: %s: %s", type(e).__name__, e)
            if self._subscribed:
                delay = self._reconnect_min  # it worked for a while: retry promptly
            self._on_unsubscribed()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max)

    async def _listen_once(self) -> None:
        """One subscription session; returns or raises when the connection is gone.

        A PING every ``keepalive_seconds`` of silence, and a deadline for its answer, detect a
        connection that died without an error (a silent network partition).
        """
        pubsub = self._pubsub_client.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            last_seen, ping_sent = time.monotonic(), 0.0
            self._last_heard, self._ping_since = last_seen, 0.0
            while not self._closing:
                if self._resubscribe_requested:
                    self._resubscribe_requested = False
                    raise ConnectionError("resubscribing: the Redis master changed")
                msg = await pubsub.get_message(timeout=self._keepalive / 2)
                now = time.monotonic()
                if msg is not None:
                    last_seen, ping_sent = now, 0.0
                    self._last_heard, self._ping_since = now, 0.0
                    self._dispatch(msg)
                elif ping_sent and now - ping_sent > self._keepalive:
                    raise ConnectionError("invalidation subscription keepalive timed out")
                elif not ping_sent and now - last_seen >= self._keepalive:
                    ping_sent = self._ping_since = now
                    await pubsub.ping(_KEEPALIVE_MESSAGE)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if isinstance(kind, bytes):
            kind = kind.decode()
        if kind == "subscribe":
            self._on_subscribed()
        elif kind == "message":
            self._on_message(msg.get("data"))
