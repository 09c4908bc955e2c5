"""Build the redis.asyncio client every adapter shares, from ``RedisConfig``.

One place decides timeouts, pool size and retries so that a slow or dead Redis turns into a
fast, bounded error (which the store maps to ``StoreUnavailable`` and the service to 503)
instead of requests hanging. Standalone ``redis://`` / ``rediss://`` / ``unix://`` URLs only,
credentials in the URL; Sentinel and Cluster come later.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from authz.config import RedisConfig

DEFAULT_HEALTH_CHECK_INTERVAL = 10.0
"""Seconds a pooled connection may sit idle before it is PINGed on reuse."""


def create_client(
    cfg: RedisConfig,
    *,
    health_check_interval: float = DEFAULT_HEALTH_CHECK_INTERVAL,
    client_name: str = "jira-authz",
    decode_responses: bool = True,
) -> Redis:
    """A client owning a bounded, blocking pool.

    The pool blocks (up to the connect timeout) when all ``max_connections`` are busy rather
    than failing at once, so a burst queues briefly instead of turning into 503s. One retry
    with a short backoff hides a single dead pooled connection after a Redis restart; more
    would only delay the 503 while Redis is really down.
    """
    pool = BlockingConnectionPool.from_url(
        cfg.url,
        max_connections=cfg.max_connections,
        timeout=cfg.connect_timeout_seconds,
        socket_timeout=cfg.socket_timeout_seconds,
        socket_connect_timeout=cfg.connect_timeout_seconds,
        health_check_interval=health_check_interval,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        client_name=client_name,
        decode_responses=decode_responses,
    )
    return Redis.from_pool(pool)


def redacted_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced by ``***``: safe to log."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}" if sep else k
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )
