"""Open-loop HTTP/1.1 load generator: holds a fixed request rate, measures from the schedule.

Why not wrk or ``h2load --rps``: both are closed-loop (a slow answer delays the next send, so
a stall hides itself: "coordinated omission"), and h2load starts every client's timer together
(bursty arrivals). Here request *i* is due at ``t0 + i / rate`` whatever happened before, and
its latency runs from that due time to the last byte of the answer, so queueing in the client
(no idle connection), in Envoy or in the server all count.

It runs as its own process (``python -m bench.loadgen``) so its CPU is not the server's, and
reports its own CPU time and dispatch lateness: a generator that could not keep up is visible.
Plain asyncio protocols with pre-rendered request bytes cost ~20-40 µs of CPU per request,
well below the servers measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import selectors
import sys
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stats:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    lateness: array[float] = field(default_factory=lambda: array("d"))
    status: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    sent: int = 0
    done: int = 0
    all_done: int = 0
    """Including the warm-up: what the servers' CPU time is divided by."""


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0
        self.record = False
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, due: float, record: bool) -> None:
        self.busy, self.due, self.record = True, due, record
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy:
            end = self._complete()
            if end < 0:
                return
            status = int(self.buf[9:12])
            del self.buf[:end]
            self.busy = False
            self.gen.finished(self, status)

    def _complete(self) -> int:
        """Length of one whole response at the start of ``buf``, or -1."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return -1
        head = bytes(self.buf[:head_end]).lower()
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            n = int(head[i + 17 : j if j >= 0 else len(head)])
            end = head_end + 4 + n
            return end if len(self.buf) >= end else -1
        if b"\r\ntransfer-encoding: chunked" in head:
            k = self.buf.find(b"\r\n0\r\n\r\n", head_end)
            if k < 0:
                k = self.buf.find(b"0\r\n\r\n", head_end + 4)
                if k != head_end + 4:
                    return -1
                return k + 5
            return k + 7
        return head_end + 4

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:
            self.busy = False
            self.gen.failed(self)


class Generator:
    def __init__(self, host: str, port: int, requests: list[bytes], connections: int) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.n_conns = connections
        self.idle: list[Conn] = []
        self.pending: deque[tuple[float, bool]] = deque()
        self.stats = Stats()
        self.next_req = 0
        self.outstanding = 0
        self.drained = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.n_conns):
            _, proto = await loop.create_connection(lambda: Conn(self), self.host, self.port)
            self.idle.append(proto)

    def _request(self) -> bytes:
        r = self.requests[self.next_req]
        self.next_req = (self.next_req + 1) % len(self.requests)
        return r

    def dispatch(self, due: float, record: bool) -> None:
        self.outstanding += 1
        if record:
            self.stats.sent += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                if record:
                    self.stats.lateness.append(time.perf_counter() - due)
                conn.send(self._request(), due, record)
                return
        self.pending.append((due, record))

    def finished(self, conn: Conn, status: int) -> None:
        now = time.perf_counter()
        self.stats.all_done += 1
        if conn.record:
            self.stats.latencies.append(now - conn.due)
            self.stats.status[status] = self.stats.status.get(status, 0) + 1
            self.stats.done += 1
        self._next(conn)

    def failed(self, conn: Conn) -> None:
        if conn.record:
            self.stats.errors += 1
        self.outstanding -= 1
        asyncio.get_running_loop().create_task(self._replace())
        if not self.outstanding:
            self.drained.set()

    async def _replace(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(lambda: Conn(self), self.host, self.port)
        except OSError:
            return
        self._next(proto, finished=False)

    def _next(self, conn: Conn, *, finished: bool = True) -> None:
        if finished:
            self.outstanding -= 1
        if self.pending:
            due, record = self.pending.popleft()
            if record:
                self.stats.lateness.append(time.perf_counter() - due)
            conn.send(self._request(), due, record)
        else:
            self.idle.append(conn)
            if not self.outstanding:
                self.drained.set()

    async def run(self, rate: float, duration: float, warmup: float, drain: float) -> None:
        await self.connect()
        interval = 1.0 / rate
        total = int((warmup + duration) * rate)
        first_recorded = int(warmup * rate)
        t0 = time.perf_counter() + 0.05
        i = 0
        while i < total:
            now = time.perf_counter()
            due = t0 + i * interval
            if due > now:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            while i < total and t0 + i * interval <= now:
                self.dispatch(t0 + i * interval, i >= first_recorded)
                i += 1
        if self.outstanding:
            self.drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), drain)
        self.stats.errors += sum(1 for _, rec in self.pending if rec)


def render_requests(spec: list[dict[str, object]], host: str) -> list[bytes]:
    """Request dicts ``{method, path, headers}`` -> HTTP/1.1 bytes."""
    out = []
    for r in spec:
        lines = [f"{r['method']} {r['path']} HTTP/1.1", f"host: {host}"]
        headers = r.get("headers") or {}
        assert isinstance(headers, dict)
        lines += [f"{k}: {v}" for k, v in headers.items()]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode())
    return out


def percentiles(values: array[float] | list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds (nearest-rank)."""
    if not values:
        return {}
    s = sorted(values)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, max(0, int(p * n + 0.5) - 1))] * 1000

    return {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p99.9": q(0.999),
            "max": s[-1] * 1000, "mean": sum(s) / n * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--target", required=True, help="host:port (127.0.0.1 only)")
    p.add_argument("--requests", required=True, help="JSON file: [{method, path, headers}]")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--drain", type=float, default=5.0)
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host.startswith("127.") and host != "localhost":
        print("loadgen: only loopback targets", file=sys.stderr)
        return 2
    if not (0 < args.rate <= 20000 and 0 < args.duration <= 120):
        print("loadgen: rate must be in (0, 20000], duration in (0, 120] s", file=sys.stderr)
        return 2
    spec = json.loads(Path(args.requests).read_text())
    gen = Generator(host, int(port), render_requests(spec, host), args.connections)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    # select(2) takes a microsecond timeout; epoll rounds every timer up to a whole millisecond,
    # which made dispatch 0.5 ms late on average. Few sockets: select's cost does not matter.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(gen.run(args.rate, args.duration, args.warmup, args.drain))
    finally:
        loop.close()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    st = gen.stats
    result = {
        "rate": args.rate,
        "duration": args.duration,
        "sent": st.sent,
        "done": st.done,
        "all_done": st.all_done,
        "errors": st.errors,
        "achieved_rps": st.done / args.duration,
        "status": {str(k): v for k, v in sorted(st.status.items())},
        "latency_ms": percentiles(st.latencies),
        "dispatch_lateness_ms": percentiles(st.lateness),
        "client_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "wall_s": wall,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
