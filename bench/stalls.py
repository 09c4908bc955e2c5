"""Where the tail comes from: event-loop stalls, GC pauses and audit flushes under load.

``python -m bench.stalls --redis-url URL`` seeds tokens, runs the real ``Server`` in this
process behind a real Envoy (bench/envoy.py), drives it with the open-loop generator at a fixed
rate, and reports: event-loop lag (a 1 ms ticker's overshoot), every GC pause by generation,
and the time each audit flush held the loop. Diagnostic only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from authz.config import load_config
from authz.server import Server, settle_heap
from authz.stack.processes import find_envoy, free_port, http_ok_probe, wait_until
from bench import data, envoy
from bench.loadgen import percentiles

ROOT = Path(__file__).resolve().parents[1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = "stalls:"
    seeded = await data.seed(args.redis_url, prefix, args.tokens)
    workdir = Path(tempfile.mkdtemp(prefix="stalls-"))
    mix = workdir / "mix.json"
    mix.write_text(json.dumps([{k: r[k] for k in ("method", "path", "headers")}
                               for r in data.request_mix(seeded)]))
    check = free_port()
    os.environ.update({
        "JIRA_AUTHZ_REDIS_URL": args.redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": f"{prefix}audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{check}", "JIRA_AUTHZ_LISTEN_ADMIN": "",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_METRICS": f"127.0.0.1:{free_port()}",
    })
    server = Server(load_config())
    await server.start()
    settle_heap()  # as ``serve`` does

    gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - gc_started[0])

    flushes: list[float] = []
    audit = server.audit
    orig_write = audit._write

    async def timed_write(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = await orig_write(*args, **kwargs)
        flushes.append(time.perf_counter() - t0)
        return result

    audit._write = timed_write  # type: ignore[method-assign]
    lags: list[float] = []
    measuring = [False]

    async def ticker() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            if measuring[0]:
                lags.append(time.perf_counter() - t0 - 0.001)

    tick = asyncio.create_task(ticker())
    port, admin = free_port(), free_port()
    cfg = envoy.build(listener_port=port, admin_port=admin, authz_ports=[check])
    (workdir / "envoy.yaml").write_text(yaml.safe_dump(cfg))
    env_proc = subprocess.Popen([find_envoy(), "-c", str(workdir / "envoy.yaml"),
                                 "--disable-hot-restart", "--concurrency", "2",
                                 "--log-level", "error"], stdout=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        await asyncio.to_thread(wait_until, "envoy", http_ok_probe(
            f"http://127.0.0.1:{admin}/ready"), timeout=30)

        async def load(rate: int, duration: float) -> dict[str, Any]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", "--target", f"127.0.0.1:{port}",
                "--requests", str(mix), "--rate", str(rate), "--duration", str(duration),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            return dict(json.loads(out))

        await load(args.rate, 5)  # warm the cache
        if args.freeze:
            gc.collect()
            gc.freeze()
        gc.callbacks.append(on_gc)
        measuring[0] = True
        result = await load(args.rate, args.duration)
        measuring[0] = False
        gc.callbacks.remove(on_gc)
    finally:
        env_proc.terminate()
        env_proc.wait(10)
        tick.cancel()
        await server.stop(1)
    return {
        "rate": args.rate,
        "freeze": args.freeze,
        "latency_ms": result["latency_ms"],
        "loop_lag_ms": percentiles(lags),
        "loop_lag_over_2ms": sum(1 for x in lags if x > 0.002),
        "gc_pauses": {g: {"count": len(v), "total_ms": sum(v) * 1000,
                          "max_ms": max(v, default=0) * 1000} for g, v in gc_pauses.items()},
        "audit_flush_ms": percentiles(flushes),
        "audit_flushes": len(flushes),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.stalls")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--freeze", action="store_true",
                   help="also gc.freeze() after the warm-up (the cache included)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()
