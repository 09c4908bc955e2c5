"""Load tools, process accounting (/proc), Redis and Prometheus snapshots for the benchmark."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterable

TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client"}
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def ensure_tools() -> dict[str, str]:
    """wrk and h2load from Debian, installed with apt-get when missing (root, as here)."""
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        print(f"bench: installing {' '.join(missing)} with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                       timeout=600, stdout=subprocess.DEVNULL)
    out = {}
    for tool in TOOLS:
        path = shutil.which(tool)
        if path is None:
            raise RuntimeError(f"{tool} is not installed and apt-get could not install it")
        out[tool] = path
    return out


def tool_versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        text = (r.stdout or r.stderr).strip().splitlines()
        return text[0] if text else "?"

    return {"wrk": first(["wrk", "--version"]), "h2load": first(["h2load", "--version"])}


# --- /proc -------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


def system_busy_seconds() -> float:
    """CPU seconds every process on the machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


# --- Redis and Prometheus ----------------------------------------------------------------------


def commandstats(redis_url: str) -> dict[str, int]:
    """``INFO commandstats``: command -> calls."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def commandstats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = set(before) | set(after)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in sorted(delta.items()) if v}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as printed)."""
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local http only
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def per_worker(samples: dict[str, float], name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name:
            m = re.search(r'worker="(\d+)"', rest)
            w = m.group(1) if m else "0"
            out[w] = out.get(w, 0.0) + value
    return out


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str,
                       q: float) -> float | None:
    """Prometheus-style ``histogram_quantile`` over the bucket deltas of ``name`` (summed over
    all label sets, e.g. workers): linear interpolation inside the bucket, in seconds."""
    buckets: dict[float, float] = {}
    for key, value in after.items():
        base, _, rest = key.partition("{")
        if base != f"{name}_bucket":
            continue
        m = re.search(r'le="([^"]+)"', rest)
        if not m:
            continue
        le = float(m.group(1))
        buckets[le] = buckets.get(le, 0.0) + value - before.get(key, 0.0)
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return prev_le
