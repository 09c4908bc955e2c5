"""Webhook delivery: signed POSTs from the Redis queue to ``webhooks.url``, never on the Check
path.

Each server runs one sender that takes one event at a time from the shared consumer group
(``adapters/webhook_queue.py``), signs it (HMAC-SHA256 with the secret read from
``webhooks.secret_file``; headers in ``domain/webhook_event.py``) and POSTs it. Any answer but
2xx, a timeout or a refused connection is a failure: counted, logged and retried with
exponential backoff (1 s doubling up to ``webhooks.max_backoff``) until the receiver takes it;
the event stays in Redis meanwhile, so a restart of the receiver or of this server loses
nothing. Deliveries are at least once (a receiver de-duplicates on ``X-Jira-Authz-Delivery``).
The HTTP call runs in a thread so a slow receiver never holds the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from authz.adapters.webhook_queue import WebhookQueue
from authz.config import Config
from authz.domain import webhook_event as hooks
from authz.domain.lifecycle import parse_duration
from authz.lifecycle_watch import stop_task

log = logging.getLogger(__name__)

USER_AGENT = "jira-authz-webhooks/1"
MIN_BACKOFF = 1.0


def read_secret(path: str) -> bytes:
    value = Path(path).read_bytes().strip()
    if len(value) < 16:
        raise ValueError(f"{path}: webhook secret must be at least 16 bytes")
    return value


@dataclass
class Stats:
    delivered: int = 0
    failed: int = 0
    """Failed attempts (each retried)."""
    skipped: int = 0
    """Events of a type this server is not configured to send, or unreadable ones."""
    depth: int = 0
    dropped: int = 0
    """Shared counter in Redis: events refused by a full queue."""


def post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """One POST; the HTTP status (no redirects followed: a 3xx is a failure)."""
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    port = u.port
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "", port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(u.hostname or "", port, timeout=timeout)
    try:
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(65536)
        return resp.status
    finally:
        conn.close()


class WebhookSender:
    def __init__(self, client: Redis, cfg: Config, *, consumer: str | None = None) -> None:
        w = cfg.webhooks
        self.cfg = cfg
        self.url = w.url
        self.secret = read_secret(w.secret_file)
        self.queue = WebhookQueue(client, cfg.redis.key_prefix, w.max_queue)
        self.timeout = parse_duration(w.timeout)
        self.max_backoff = parse_duration(w.max_backoff)
        self.claim_after_ms = int(parse_duration(w.claim_after) * 1000)
        # Stable across a restart of the same pod/port: its own pending events come first.
        self.consumer = consumer or f"{socket.gethostname()}:{cfg.listen.check}"
        self.stats = Stats()
        self._task: asyncio.Task[None] | None = None
        self._marked = 0.0
        self._stopping = asyncio.Event()

    def _headers(self, event: dict[str, Any], body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            hooks.EVENT_HEADER: str(event.get("type", "")),
            hooks.DELIVERY_HEADER: str(event.get("id", "")),
            hooks.TIMESTAMP_HEADER: ts,
            hooks.SIGNATURE_HEADER: hooks.sign(self.secret, ts, body),
        }

    async def deliver(self, event: dict[str, Any]) -> bool:
        body = hooks.encode(event)
        try:
            status = await asyncio.to_thread(post, self.url, self._headers(event, body), body,
                                             self.timeout)
        except (OSError, http.client.HTTPException) as e:
            log.warning("webhook delivery failed", extra={
                "event": event.get("type"), "delivery": event.get("id"),
                "error": f"{type(e).__name__}: {e}"})
            return False
        if 200 <= status < 300:
            return True
        log.warning("webhook delivery refused", extra={
            "event": event.get("type"), "delivery": event.get("id"), "status": status})
        return False

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._marked >= 30:
            await self.queue.mark_enabled()
            self._marked = now
        self.stats.depth = await self.queue.depth()
        self.stats.dropped = await self.queue.dropped()

    async def run_once(self, *, block_ms: int = 1000) -> bool:
        """Deliver the next event (retrying it until it is taken); False when none came."""
        await self._housekeeping()
        entry = await self.queue.next_entry(self.consumer, claim_after_ms=self.claim_after_ms,
                                            block_ms=block_ms)
        if entry is None:
            return False
        entry_id, event = entry
        if not event or event.get("type") not in self.cfg.webhooks.events:
            self.stats.skipped += 1
            await self.queue.done(entry_id)
            return True
        backoff = MIN_BACKOFF
        while not await self.deliver(event):
            self.stats.failed += 1
            if self._stopping.is_set():
                return True  # still pending in Redis: sent after the restart
            await self._pause(backoff)
            backoff = min(backoff * 2, self.max_backoff)
            await self._housekeeping()
        self.stats.delivered += 1
        await self.queue.done(entry_id)
        return True

    async def run(self) -> None:
        await self.queue.ensure_group()
        pause = MIN_BACKOFF
        while not self._stopping.is_set():
            try:
                await self.run_once()
                pause = MIN_BACKOFF
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: the events wait in Redis
                log.warning("webhook queue unavailable", extra={
                    "error": f"{type(e).__name__}: {e}"})
                await self._pause(pause)
                pause = min(pause * 2, self.max_backoff)
                with contextlib.suppress(Exception):
                    await self.queue.ensure_group()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def start(self) -> None:
        COLLECTOR.senders.append(self)
        self._task = asyncio.create_task(self.run(), name="webhook-sender")

    async def stop(self) -> None:
        """An event being delivered stays pending in Redis and is sent again after restart."""
        if self in COLLECTOR.senders:
            COLLECTOR.senders.remove(self)
        if self._task is not None:
            # The blocking read returns within a second; a delivery within webhooks.timeout.
            await stop_task(self._task, self._stopping, finish_within=self.timeout + 1.5)


class _Collector(Collector):
    def __init__(self) -> None:
        self.senders: list[WebhookSender] = []

    def collect(self) -> Iterator[Any]:
        """Declared even without webhooks (no samples then), so the names are stable."""
        senders = list(self.senders)
        fam = CounterMetricFamily("jira_authz_webhook_deliveries",
                                  "Webhook delivery attempts by outcome (failed ones are retried)",
                                  labels=["outcome"])
        depth = GaugeMetricFamily("jira_authz_webhook_queue_depth",
                                  "Webhook events waiting in Redis (shared by every replica)")
        dropped = CounterMetricFamily(
            "jira_authz_webhook_dropped",
            "Webhook events refused because the queue was full (shared by every replica)")
        if senders:
            for outcome in ("delivered", "failed", "skipped"):
                fam.add_metric([outcome], float(sum(getattr(s.stats, outcome) for s in senders)))
            depth.add_metric([], float(max(s.stats.depth for s in senders)))
            dropped.add_metric([], float(max(s.stats.dropped for s in senders)))
        yield from (fam, depth, dropped)


COLLECTOR = _Collector()
REGISTRY.register(COLLECTOR)
