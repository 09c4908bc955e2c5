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
from authz.domain.limits import programs as re2_programs


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(redis_url: str, prefix: str, hashes: list[str], max_entries: int,
                  trace: bool = True) -> dict:
    """``trace``: count the Python heap with tracemalloc (whose own bookkeeping then inflates
    RSS); without it, only RSS is measured, undisturbed."""
    client = create_client(RedisConfig(url=redis_url, socket_timeout_seconds=5.0))
    store = RedisTokenStore(client, prefix)
    cache = TokenCache(store, CacheConfig(max_entries=max_entries))
    await cache.lookup(hashes[0])  # warm imports, connection pool
    gc.collect()
    rss0 = _rss()
    if trace:
        tracemalloc.start()
    snap0 = tracemalloc.take_snapshot() if trace else None
    for h in hashes:  # nothing kept here: only what the cache holds stays allocated
        await cache.lookup(h)
    gc.collect()
    snap1 = tracemalloc.take_snapshot() if trace else None
    rss1 = _rss()
    cached = [e.token for e in cache._entries.values() if e.token is not None]
    for token in cached:
        limits_mod.compile_limits(token.limits)
    del cached
    gc.collect()
    snap2 = tracemalloc.take_snapshot() if trace else None
    tracemalloc.stop()
    rss2 = _rss()
    n = len(cache)

    def heap(a: tracemalloc.Snapshot | None, b: tracemalloc.Snapshot | None) -> float:
        if a is None or b is None:
            return float("nan")
        return sum(s.size_diff for s in b.compare_to(a, "filename"))

    await client.aclose()
    per = max(1, n)
    return {
        "tokens": len(hashes),
        "cached": n,
        "max_entries": max_entries,
        "entry_python_heap_bytes": heap(snap0, snap1) / per,
        "entry_rss_bytes": (rss1 - rss0) / per,
        "limits_python_heap_bytes": heap(snap1, snap2) / per,
        "limits_rss_bytes": (rss2 - rss1) / per,
        "rss_total_mb": rss2 / 2**20,
        "rss_before_fill_mb": rss0 / 2**20,
        "distinct_programs": len(re2_programs.PROGRAMS),
        "note": "entry: the cache's record of a token (Token, LRU slot, key); limits: its "
                "compiled restriction lines (LRU of cache.max_compiled_limits line sets in "
                "authz.domain.limits; RE2 programs are C++ memory, seen only in RSS)",
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--hashes", required=True, help="file: one secret hash per line")
    p.add_argument("--max-entries", type=int, default=100_000)
    p.add_argument("--no-trace", action="store_true", help="RSS only, without tracemalloc")
    args = p.parse_args()
    hashes = Path(args.hashes).read_text().split()
    print(json.dumps(asyncio.run(measure(args.redis_url, args.prefix, hashes,
                                         args.max_entries, not args.no_trace))))


if __name__ == "__main__":
    main()
