"""Sentinel mode: follow a failover at once instead of on the next connection error.

After a failover the invalidation subscription may still sit on the old master, which misses
every PUBLISH until it has resynchronised as a replica (seconds): a revocation could go unseen.
Sentinels announce ``+switch-master``; on it the cache resubscribes (through the new master,
treating every cached entry as unconfirmed) and pooled connections are dropped so that reads
and writes go to the new master.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from authz.config import RedisConfig
from authz.domain.network import split_hostport

log = logging.getLogger(__name__)

SWITCH_CHANNEL = "+switch-master"


async def watch_failovers(
    cfg: RedisConfig,
    on_switch: Callable[[], Awaitable[None]],
    *,
    backoff_max: float = 2.0,
) -> None:
    """Run until cancelled: listen to the Sentinels in turn, call ``on_switch`` per failover."""
    sentinels = [split_hostport(s) for s in cfg.sentinels]
    delay = 0.05
    i = 0
    while True:
        host, port = sentinels[i % len(sentinels)]
        i += 1
        client = Redis(host=host, port=port, socket_connect_timeout=cfg.connect_timeout_seconds,
                       decode_responses=True)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(SWITCH_CHANNEL)
            delay = 0.05
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                name = str(msg.get("data", "")).split(" ", 1)[0]
                if name == cfg.sentinel_master:
                    log.warning("redis master switched", extra={"event": str(msg["data"])})
                    await on_switch()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("sentinel watch on %s:%s lost: %s", host, port, type(e).__name__)
        finally:
            await pubsub.aclose()
            await client.aclose()
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, backoff_max)
