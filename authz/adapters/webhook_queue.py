"""The webhook queue: a bounded Redis Stream with one consumer group shared by every replica.

Events are queued by whoever makes the change (the CLI against Redis, the admin API, the
console, the lifecycle scan) and delivered by the servers. Redis holds the queue, so nothing
is lost when a receiver, a replica or the CLI goes away: an entry leaves the stream only once
a receiver accepted it (XACK + XDEL), an entry a dead replica held is claimed by another after
``claim_after``. The stream's length is the backlog; at ``max_queue`` new events are refused,
counted in ``{prefix}webhooks:dropped`` (a metric on every replica) and logged.

| key | type | content |
|---|---|---|
| ``{prefix}webhooks`` | stream | one entry per undelivered event, field ``event`` (JSON) |
| ``{prefix}webhooks:dropped`` | string | events refused because the queue was full |
| ``{prefix}webhooks:enabled`` | string | set (with a TTL) by servers that deliver webhooks |
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from authz.adapters.redis_store import redis_errors

log = logging.getLogger(__name__)

GROUP = "jira-authz-webhooks"
ENABLED_TTL_SECONDS = 120

# KEYS: stream, dropped counter. ARGV: max length, event JSON.
_ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[2])
  return 0
end
redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
return 1
"""


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class WebhookQueue:
    def __init__(self, client: Redis, prefix: str, max_queue: int) -> None:
        self.client = client
        self.stream = f"{prefix}webhooks"
        self.dropped_key = f"{prefix}webhooks:dropped"
        self.enabled_key = f"{prefix}webhooks:enabled"
        self.max_queue = max_queue
        self._enqueue = client.register_script(_ENQUEUE)

    async def enabled(self) -> bool:
        """A server delivering webhooks is running (its marker is set)."""
        with redis_errors(self.enabled_key):
            return bool(await self.client.exists(self.enabled_key))

    async def mark_enabled(self) -> None:
        with redis_errors(self.enabled_key):
            await self.client.set(self.enabled_key, "1", ex=ENABLED_TTL_SECONDS)

    async def enqueue(self, event: dict[str, Any]) -> bool:
        """False (counted, logged) when the queue is full."""
        data = json.dumps(event, sort_keys=True, ensure_ascii=False)
        with redis_errors(self.stream):
            ok = await self._enqueue(keys=[self.stream, self.dropped_key],
                                     args=[self.max_queue, data])
        if not ok:
            log.error("webhook queue full: event dropped",
                      extra={"event": event.get("type"), "token_id": event["token"].get("id"),
                             "max_queue": self.max_queue})
        return bool(ok)

    async def ensure_group(self) -> None:
        with redis_errors(self.stream):
            try:
                # From the start: events queued before any server ran are delivered too.
                await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def next_entry(
        self, consumer: str, *, claim_after_ms: int, block_ms: int
    ) -> tuple[str, dict[str, Any]] | None:
        """The next event to deliver: this consumer's own unacknowledged one first (after a
        restart), then one abandoned by another consumer, then a new one (blocking)."""
        with redis_errors(self.stream):
            own = await self.client.xreadgroup(GROUP, consumer, {self.stream: "0"}, count=1)
            entry = _first(own)
            if entry is None:
                claimed = await self.client.xautoclaim(
                    self.stream, GROUP, consumer, min_idle_time=claim_after_ms, count=1)
                msgs = claimed[1] if claimed else []
                entry = _decode(msgs[0]) if msgs else None
            if entry is None:
                fresh = await self.client.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms)
                entry = _first(fresh)
        return entry

    async def done(self, entry_id: str) -> None:
        with redis_errors(self.stream):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, entry_id)
                pipe.xdel(self.stream, entry_id)
                await pipe.execute()

    async def depth(self) -> int:
        with redis_errors(self.stream):
            return int(await self.client.xlen(self.stream))

    async def dropped(self) -> int:
        with redis_errors(self.dropped_key):
            return int(await self.client.get(self.dropped_key) or 0)


def _first(reply: Any) -> tuple[str, dict[str, Any]] | None:
    if not reply:
        return None
    streams = reply.items() if isinstance(reply, dict) else reply
    for _name, msgs in streams:
        if isinstance(msgs, list) and msgs and msgs[0]:
            return _decode(msgs[0])
    return None


def _decode(msg: Any) -> tuple[str, dict[str, Any]] | None:
    entry_id, fields = msg
    if not fields:  # deleted while pending
        return (_s(entry_id), {})
    raw = {_s(k): _s(v) for k, v in fields.items()}
    try:
        event = json.loads(raw.get("event", ""))
    except ValueError:
        event = {}
    return (_s(entry_id), event if isinstance(event, dict) else {})
