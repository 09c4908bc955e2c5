"""Memory per cached token: fill a real TokenCache from Redis and measure what it grew by.

Run as its own process (``python -m bench.memory``) so nothing else allocates meanwhile.
Counts both the cache entry (Token record, LRU slot) and the compiled restriction lines that
deciding on the token needs (RE2 programs live outside the Python heap: hence RSS as well as
tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tracemalloc
from pathlib import Path

from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.adapters.token_cache import TokenCache
from authz.config import CacheConfig, RedisConfig
from authz.domain import limits as limits_mod


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(redis_url: str, prefix: str, hashes: list[str], max_entries: int) -> dict:
    client = create_client(RedisConfig(url=redis_url, socket_timeout_seconds=5.0))
    store = RedisTokenStore(client, prefix)
    cache = TokenCache(store, CacheConfig(max_entries=max_entries))
    await cache.lookup(hashes[0])  # warm imports, connection pool
    gc.collect()
    rss0 = _rss()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    tokens = [await cache.lookup(h) for h in hashes]
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    rss1 = _rss()
    for token in tokens:
        if token is not None:
            limits_mod.compile_limits(token.limits)
    gc.collect()
    snap2 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    rss2 = _rss()
    del tokens
    n = len(cache)

    def heap(a: tracemalloc.Snapshot, b: tracemalloc.Snapshot) -> int:
        return sum(s.size_diff for s in b.compare_to(a, "filename"))

    await client.aclose()
    per = max(1, n)
    return {
        "tokens": len(hashes),
        "cached": n,
        "max_entries": max_entries,
        "entry_python_heap_bytes": heap(snap0, snap1) / per,
        "entry_rss_bytes": (rss1 - rss0) / per,
        "limits_python_heap_bytes": heap(snap1, snap2) / len(hashes),
        "limits_rss_bytes": (rss2 - rss1) / len(hashes),
        "note": "entry: the cache's record of a token (Token, LRU slot, key); limits: its "
                "compiled restriction lines (lru_cache of 16384 line sets in "
                "authz.domain.limits; RE2 programs are C++ memory, seen only in RSS)",
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--hashes", required=True, help="file: one secret hash per line")
    p.add_argument("--max-entries", type=int, default=100_000)
    args = p.parse_args()
    hashes = Path(args.hashes).read_text().split()
    print(json.dumps(asyncio.run(measure(args.redis_url, args.prefix, hashes,
                                         args.max_entries))))


if __name__ == "__main__":
    main()
