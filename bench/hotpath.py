"""Microseconds per phase of one Check on a cache hit, in-process (no gRPC, no Envoy).

``python -m bench.hotpath --redis-url URL`` seeds a few tokens under a private prefix, warms the
cache, then times each phase over the benchmark's request shapes. ``--profile`` prints a
cProfile of the whole Check instead. Used to find where the hot path's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import uuid
from typing import Any

from authz import metrics
from authz.adapters.audit_stream import AuditStream
from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.adapters.token_cache import TokenCache
from authz.config import AuditConfig, Config, RedisConfig
from authz.envoyauth.request import to_http_request
from authz.envoyauth.response import ResponseBuilder
from authz.policies import decision_policy
from authz.server import AuthorizationServicer
from authz.service import CheckService
from authz.tracing import Tracing
from bench import data
from bench.checks import check_request


class _Ctx:
    def invocation_metadata(self) -> tuple[()]:
        return ()


async def run(redis_url: str, n: int, profile: bool) -> dict[str, float]:
    prefix = f"hot{uuid.uuid4().hex[:8]}:"
    seeded = await data.seed(redis_url, prefix, count=200)
    mix = [r for r in data.request_mix(seeded, n=2000) if "authorization" in r["headers"]]
    reqs = [check_request(str(r["method"]), str(r["path"]), r["headers"]) for r in mix]
    client = create_client(RedisConfig(url=redis_url))
    store = RedisTokenStore(client, prefix)
    cache = TokenCache(store)
    await cache.start()
    await cache.wait_subscribed(5)
    cfg = Config()
    audit = AuditStream(client, AuditConfig(stream=f"{prefix}audit"),
                        token_store_record_use=store.record_use)
    await audit.start()
    service = CheckService(decision_policy(cfg), cache, audit)
    responses = ResponseBuilder("contextUser", "Jira")
    servicer = AuthorizationServicer(service, responses, Tracing(cfg.tracing), False)
    ctx = _Ctx()
    for r in reqs:  # warm: every token cached
        await servicer.Check(r, ctx)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    out: dict[str, float] = {}

    def timed(name: str, fn: Any, items: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        res = [fn(x) for x in items]
        out[name] = (time.perf_counter() - t0) / len(items) * 1e6
        return res

    items = (reqs * (n // len(reqs) + 1))[:n]
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for r in items:
            await servicer.Check(r, ctx)  # type: ignore[arg-type]
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    else:
        https = timed("to_http_request", to_http_request, items)
        t0 = time.perf_counter()
        decisions = [await service.decide(h) for h in https]
        out["decide (screen+lookup+judge)"] = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        for h in https:
            await service.check(h)
        out["service.check (decide+audit+metrics)"] = (time.perf_counter() - t0) / n * 1e6
        timed("response build", responses.build, decisions)
        timed("histogram observe", lambda _: metrics.CHECK_DURATION.observe(0.001), items)
        t0 = time.perf_counter()
        for r in items:
            await servicer.Check(r, ctx)  # type: ignore[arg-type]
        out["servicer.Check total"] = (time.perf_counter() - t0) / n * 1e6
    await audit.close()
    await cache.close()
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath")
    p.add_argument("--redis-url", required=True)
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    res = asyncio.run(run(args.redis_url, args.n, args.profile))
    for k, v in res.items():
        print(f"{k:40s} {v:8.1f} µs")


if __name__ == "__main__":
    main()
