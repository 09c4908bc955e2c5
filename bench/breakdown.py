"""Where a Check's CPU goes inside the real server process, phase by phase.

``python -m bench.breakdown [--reps 3]`` starts Redis (2,000 tokens), the allow-all server (also
spinning 30 and 60 µs per Check: handler time without any of our code) and jira-authz
variants that stop after a given phase (``bench/variant_server.py``), and drives each with the
direct Check load of the main benchmark (h2load, four recorded CheckRequests, cache hits),
interleaved per repetition. It prints Check/s and server CPU per Check for: allow-all (b);
allow-all spinning; the jira-authz process answering a constant; + translating the
CheckRequest; + deciding and queueing the audit event; the full handler. In-process timings
(``bench.hotpath``) are several times smaller than these in-situ costs, which include the
cache and allocator effects of running beside gRPC's own work on the same cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from bench.run import Bench, Settings

BUSY_US = (30, 60)
"""Handler time alone, no jira-authz code: what the framework's cost does with it."""

VARIANTS = [
    ("null", "constant answer", "--null-check"),
    ("translate", "+ translate", "--partial=translate"),
    ("decide", "+ decide + audit", "--partial=decide"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    b = Bench(Settings(tokens=2000, sat_duration=args.duration))
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        b.start_redis()
        b.prepare_data()
        targets = [("b1", "(b) allow-all", b.add_allow_all("b1", "allow-all", 1))]
        for us in BUSY_US:
            targets.append((f"busy{us}", f"(b) allow-all spinning {us} µs per Check",
                            b.add_allow_all(f"busy{us}", "allow-all", 1, work_us=us)))
        for name, label, flag in VARIANTS:
            targets.append((name, label, b.add_authz(name, label, 1, variant=flag)))
        targets.append(("full", "full handler (c)", b.add_authz("full", "jira-authz", 1)))
        for _, _, t in targets[1:]:
            b.direct(t)  # warm the caches
        for rep in range(args.reps):
            b.log(f"repetition {rep + 1}/{args.reps}")
            for name, _, t in targets:
                r = b.direct(t)
                rows.setdefault(name, []).append((r["rps"], r["server_cpu_s_per_1k"]))
    finally:
        b.close()
    base = statistics.median(x for x, _ in rows["b1"])
    print("| server | Check/s | vs (b) | server CPU µs per Check |")
    print("|---|---|---|---|")
    out = {}
    for name, label, _ in targets:
        rps = statistics.median(x for x, _ in rows[name])
        cpu = statistics.median(c for _, c in rows[name]) * 1000
        out[name] = {"label": label, "rps": rows[name], "rps_median": rps, "cpu_us": cpu}
        print(f"| {label} | {rps:.0f} | {rps / base:.2f} | {cpu:.0f} |")
    json.dump(out, sys.stderr)
    print(file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
