"""Build the redis.asyncio client every adapter shares, from ``RedisConfig``.

One place decides timeouts, pool size and retries so that a slow or dead Redis turns into a
fast, bounded error (which the store maps to ``StoreUnavailable`` and the service to 503)
instead of requests hanging. Standalone, Sentinel (the master found through the Sentinels) and
Cluster modes; credentials, db and TLS always come from the URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlsplit as _split

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from authz.config import RedisConfig
from authz.domain.network import split_hostport

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
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1)
    if cfg.mode == "cluster":
        return RedisCluster.from_url(  # type: ignore[return-value]
            cfg.url,
            max_connections=cfg.max_connections,
            socket_timeout=cfg.socket_timeout_seconds,
            socket_connect_timeout=cfg.connect_timeout_seconds,
            health_check_interval=health_check_interval,
            retry=retry,
            client_name=client_name,
            decode_responses=decode_responses,
        )
    if cfg.mode == "sentinel":
        return _sentinel_master(cfg, health_check_interval, client_name, decode_responses)
    pool = BlockingConnectionPool.from_url(
        cfg.url,
        max_connections=cfg.max_connections,
        timeout=cfg.connect_timeout_seconds,
        socket_timeout=cfg.socket_timeout_seconds,
        socket_connect_timeout=cfg.connect_timeout_seconds,
        health_check_interval=health_check_interval,
        retry=retry,
        client_name=client_name,
        decode_responses=decode_responses,
    )
    return Redis.from_pool(pool)


def _sentinel_master(
    cfg: RedisConfig, health_check_interval: float, client_name: str, decode_responses: bool
) -> Redis:
    """The current master as the Sentinels report it; a failover is followed on reconnect."""
    parts = _split(cfg.url)
    common: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout_seconds,
        "socket_connect_timeout": cfg.connect_timeout_seconds,
    }
    sentinels = [split_hostport(x) for x in cfg.sentinels]
    sentinel = Sentinel(sentinels, sentinel_kwargs=dict(common), **common)
    db = int(parts.path.strip("/") or 0) if parts.path.strip("/").isdigit() else 0
    return sentinel.master_for(
        cfg.sentinel_master,
        password=parts.password,
        username=parts.username or None,
        db=db,
        ssl=parts.scheme == "rediss",
        max_connections=cfg.max_connections,
        health_check_interval=health_check_interval,
        client_name=client_name,
        decode_responses=decode_responses,
    )


def create_pubsub_client(cfg: RedisConfig) -> Redis | None:
    """A client for the invalidation subscription, when the main one cannot hold it.

    In Cluster mode a PUBLISH reaches every node, so subscribing on the node named in the URL
    hears every change (redis-py's cluster pub/sub mishandles keepalive PINGs). None: use the
    main client."""
    if cfg.mode != "cluster":
        return None
    return Redis.from_url(
        cfg.url,
        socket_timeout=None,
        socket_connect_timeout=cfg.connect_timeout_seconds,
        client_name="jira-authz-pubsub",
        decode_responses=True,
    )


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


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
