"""Lifecycle metrics and the time-driven webhook events, computed off the Check path.

One pass over every token costs O(tokens) Redis reads, so it is done by **one replica at a
time**: every ``lifecycle.scan_interval`` each server tries to take (or renew) the
``{prefix}lifecycle:owner`` lease; the owner SSCANs the token set, reads six short fields per
token with pipelined HMGETs (no limit lines, no decoding of the whole record), counts with
``domain.lifecycle.Summary`` and writes the result to ``{prefix}lifecycle:summary``. Every
replica reads that summary and exposes the same gauges, so dashboards and alerts take
``max()`` and any replica's scrape is right. The owner also queues ``token.expiring`` (once
per token: marked with ``HSETNX notified_expiring``) and ``token.expired`` (once, for tokens
that expired within the last ``expiring_window``) when webhooks are on.

The scan yields to the event loop after every batch, so Checks on the owner wait at most one
batch (``bench/lifecycle_scan.py`` prints the cost at 100,000 tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from authz.adapters.redis_store import RedisTokenStore, redis_errors
from authz.adapters.webhook_queue import WebhookQueue
from authz.config import Config
from authz.domain import lifecycle
from authz.domain import webhook_event as hooks
from authz.domain.model import Token

log = logging.getLogger(__name__)

BATCH = 200
"""Ids per SSCAN and per HMGET pipeline: redis-py parses a pipeline's replies in one go on the
event loop, ~25 µs per token here, so a batch holds the loop ~5 ms (1000 held it ~30 ms)."""
_FIELDS = ("user", "label", "created_by", "created_at", "expires_at", "revoked_at",
           "last_used_at", "notified_expiring", "notified_expired")

# KEYS: lease. ARGV: owner id, ttl ms. 1 when this owner holds the lease afterwards.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS: token. ARGV: field, value. Marks once, never creates a hash for a pruned token.
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
"""


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else v)


def _f(v: Any) -> float | None:
    try:
        x = float(_s(v))
    except ValueError:
        return None
    return x if x == x and abs(x) != float("inf") else None


async def stop_task(task: asyncio.Task[None], stopping: asyncio.Event,
                    finish_within: float = 2.0) -> None:
    """Ask a loop to stop between Redis calls, cancel it only if it does not. A cancellation
    landing inside redis-py's pool wait can be swallowed (seen here: the task stays
    "cancelling" for ever), so no wait is unbounded."""
    stopping.set()
    done, _ = await asyncio.wait({task}, timeout=finish_within)
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            log.warning("background task did not stop", extra={"task": task.get_name()})
            return
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task failed", extra={"task": task.get_name(),
                                                      "error": repr(task.exception())})


@dataclass
class ScanResult:
    summary: lifecycle.Summary
    computed_at: float
    duration: float
    events: int = 0
    skipped: int = 0
    """Records whose times could not be read (counted nowhere else; logged)."""

    def to_json(self) -> str:
        return json.dumps({
            "by_state": self.summary.by_state, "expiring": self.summary.expiring,
            "unused": self.summary.unused, "total": self.summary.total,
            "computed_at": self.computed_at, "duration": self.duration,
            "skipped": self.skipped,
        })

    @classmethod
    def from_json(cls, text: str) -> ScanResult | None:
        try:
            d = json.loads(text)
            summary = lifecycle.Summary({s: int(d["by_state"].get(s, 0))
                                         for s in lifecycle.STATES},
                                        int(d["expiring"]), int(d["unused"]), int(d["total"]))
            return cls(summary, float(d["computed_at"]), float(d["duration"]),
                       skipped=int(d.get("skipped", 0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class LifecycleScanner:
    """The pass over every token; used by the watcher and by the benchmark."""

    def __init__(self, client: Redis, cfg: Config, queue: WebhookQueue | None = None) -> None:
        self.client = client
        self.cfg = cfg
        self.store = RedisTokenStore(client, cfg.redis.key_prefix)
        self.queue = queue
        self._mark = client.register_script(_MARK)
        self.max_pause = 0.0
        """Longest stretch of event-loop time one batch took (bench)."""

    async def scan(self, now: float | None = None) -> ScanResult:
        now = time.time() if now is None else now
        window = self.cfg.lifecycle.expiring_window_seconds
        unused_after = self.cfg.lifecycle.unused_after_seconds
        summary = lifecycle.Summary.empty()
        started = time.perf_counter()
        result = ScanResult(summary, now, 0.0)
        cursor: int | str = 0
        seen: set[str] = set()
        while True:
            with redis_errors(self.store.set_key):
                cursor, ids = await self.client.sscan(self.store.set_key, cursor, count=BATCH)
            batch = [i for i in map(_s, ids) if i and i not in seen]  # SSCAN may repeat
            seen.update(batch)
            if batch:
                with redis_errors(self.store.set_key):
                    async with self.client.pipeline(transaction=False) as pipe:
                        for tid in batch:
                            pipe.hmget(self.store.token_key(tid), _FIELDS)
                        replies = await pipe.execute()
                t0 = time.perf_counter()
                due = self._count(batch, replies, now, window, unused_after, result)
                self.max_pause = max(self.max_pause, time.perf_counter() - t0)
                for kind, token, field in due:
                    await self._event(kind, token, field, now, result)
            if int(cursor) == 0:
                break
        result.duration = time.perf_counter() - started
        if result.skipped:
            log.warning("lifecycle scan skipped unreadable records",
                        extra={"skipped": result.skipped})
        return result

    def _count(
        self, batch: list[str], replies: list[Any], now: float, window: float,
        unused_after: float, result: ScanResult,
    ) -> list[tuple[str, Token, str]]:
        due: list[tuple[str, Token, str]] = []
        hooks_on = self.queue is not None
        for tid, vals in zip(batch, replies, strict=True):
            user, label, by, created, exp, rev, used, n_exp, n_dead = vals
            created_at = _f(created)
            if created_at is None:
                if any(v is not None for v in vals):
                    result.skipped += 1
                continue  # id left in the set without a record
            token = Token(
                id=tid, secret_hash="", user=_s(user) or None, label=_s(label),
                created_by=_s(by), created_at=created_at, expires_at=_f(exp),
                revoked_at=_f(rev), last_used_at=_f(used),
            )
            state = result.summary.add(token, now, window=window, unused_after=unused_after)
            if not hooks_on:
                continue
            if n_exp is None and lifecycle.expiring(token, now, window):
                due.append(("token.expiring", token, "notified_expiring"))
            elif (n_dead is None and state == lifecycle.EXPIRED and token.expires_at is not None
                  and token.expires_at > now - window):
                due.append(("token.expired", token, "notified_expired"))
        return due

    async def _event(
        self, kind: str, token: Token, field: str, now: float, result: ScanResult
    ) -> None:
        assert self.queue is not None
        if kind not in self.cfg.webhooks.events:
            return
        with redis_errors(self.store.token_key(token.id)):
            first = await self._mark(keys=[self.store.token_key(token.id)],
                                     args=[field, repr(now)])
        if first:
            details = {"expires_in_seconds": round((token.expires_at or now) - now)}
            await self.queue.enqueue(hooks.build_event(kind, token, now=now, actor="jira-authz",
                                                       **details))
            result.events += 1


class LifecycleWatch:
    """The periodic loop of one server; ``COLLECTOR`` exposes its numbers."""

    def __init__(self, client: Redis, cfg: Config, *, owner_id: str | None = None) -> None:
        self.client = client
        self.cfg = cfg
        prefix = cfg.redis.key_prefix
        self.lease_key = f"{prefix}lifecycle:owner"
        self.summary_key = f"{prefix}lifecycle:summary"
        self.owner_id = owner_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        queue = (WebhookQueue(client, prefix, cfg.webhooks.max_queue)
                 if cfg.webhooks.url else None)
        self.scanner = LifecycleScanner(client, cfg, queue)
        self._lease = client.register_script(_LEASE)
        self.latest: ScanResult | None = None
        self.owner = False
        self.scans = 0
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def tick(self) -> None:
        """Take or renew the lease; the owner scans and publishes, the others read."""
        interval = self.cfg.lifecycle.scan_interval_seconds
        ttl_ms = int(max(interval * 3, 10) * 1000)
        with redis_errors(self.lease_key):
            self.owner = bool(await self._lease(keys=[self.lease_key],
                                                args=[self.owner_id, ttl_ms]))
        if self.owner:
            result = await self.scanner.scan()
            with redis_errors(self.summary_key):
                await self.client.set(self.summary_key, result.to_json())
            self.latest = result
            self.scans += 1
            return
        with redis_errors(self.summary_key):
            raw = await self.client.get(self.summary_key)
        if raw:
            self.latest = ScanResult.from_json(_s(raw)) or self.latest

    async def run(self) -> None:
        interval = self.cfg.lifecycle.scan_interval_seconds
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception as e:  # Redis away: keep the last numbers, try again later
                self.errors += 1
                log.warning("lifecycle scan failed", extra={"error": f"{type(e).__name__}: {e}"})
            # Non-owners re-read the summary more often than the owner recomputes it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(),
                                       interval if self.owner else min(interval, 30.0))

    def start(self) -> None:
        COLLECTOR.watches.append(self)
        self._task = asyncio.create_task(self.run(), name="lifecycle-watch")

    async def stop(self) -> None:
        if self in COLLECTOR.watches:
            COLLECTOR.watches.remove(self)
        if self._task is not None:
            await stop_task(self._task, self._stopping)
        if self.owner:  # hand over at once instead of after the lease's TTL
            with contextlib.suppress(Exception):
                if _s(await self.client.get(self.lease_key)) == self.owner_id:
                    await self.client.delete(self.lease_key)

    def families(self) -> Iterator[Any]:
        yield from families(self.latest, self.cfg.lifecycle.expiring_window_seconds,
                            self.cfg.lifecycle.unused_after_seconds)


def families(r: ScanResult | None, window: float, after: float) -> Iterator[Any]:
    """The lifecycle series; without a result yet, the families without samples (so every
    name is always declared, and a dashboard shows "no data" rather than a wrong zero)."""
    states = GaugeMetricFamily("jira_authz_tokens", "Tokens by state (whole store; the same "
                               "on every replica: aggregate with max)", labels=["state"])
    gauges = {
        "jira_authz_tokens_expiring_soon": (
            "Usable tokens expiring within lifecycle.expiring_window "
            "(jira_authz_tokens_expiring_window_seconds)", lambda r: r.summary.expiring),
        "jira_authz_tokens_expiring_window_seconds": (
            "lifecycle.expiring_window", lambda r: window),
        "jira_authz_tokens_unused": (
            "Usable tokens unused (never used: since creation) for lifecycle.unused_after "
            "(jira_authz_tokens_unused_after_seconds)", lambda r: r.summary.unused),
        "jira_authz_tokens_unused_after_seconds": ("lifecycle.unused_after", lambda r: after),
        "jira_authz_lifecycle_scan_timestamp_seconds": (
            "When the lifecycle counts were computed", lambda r: r.computed_at),
        "jira_authz_lifecycle_scan_duration_seconds": (
            "Wall time of the last pass over every token", lambda r: r.duration),
    }
    if r is not None:
        for s in lifecycle.STATES:
            states.add_metric([s], float(r.summary.by_state.get(s, 0)))
    yield states
    for name, (doc, value) in gauges.items():
        fam = GaugeMetricFamily(name, doc)
        if r is not None:
            fam.add_metric([], float(value(r)))
        yield fam


class _Collector(Collector):
    """One for the process (tests run several servers in one): the freshest numbers."""

    def __init__(self) -> None:
        self.watches: list[LifecycleWatch] = []

    def collect(self) -> Iterator[Any]:
        have = [w for w in self.watches if w.latest is not None]
        if not have:
            yield from families(None, 0.0, 0.0)
            return
        best = max(have, key=lambda w: w.latest.computed_at if w.latest else 0.0)
        yield from best.families()


COLLECTOR = _Collector()
REGISTRY.register(COLLECTOR)
