"""The framework ceiling: an ext_authz server that allows everything, on our gRPC stack.

``--mode aio`` is exactly what jira-authz runs (grpc.aio, same server options) with a handler
that does nothing; ``--mode threads`` is grpcio's synchronous server on a thread pool, the
alternative serving model the benchmark compares against. The answer is a constant
``CheckResponse`` (OK, no header changes), built once. ``--work-us N`` (aio) spins N µs per
Check first: the framework's cost as a function of handler time alone (``bench/breakdown.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

OPTIONS = [
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.so_reuseport", 0),
]
ALLOW = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AsyncAllow(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: object, context: object) -> external_auth_pb2.CheckResponse:
        return ALLOW


class AsyncBusyAllow(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows after spinning for a fixed time: what handler time alone does to the whole
    process's cost per Check, with none of jira-authz's code, objects or I/O."""

    def __init__(self, work_us: float) -> None:
        self.work = work_us / 1e6

    async def Check(self, request: object, context: object) -> external_auth_pb2.CheckResponse:
        until = time.perf_counter() + self.work
        while time.perf_counter() < until:
            pass
        return ALLOW


class SyncAllow(external_auth_pb2_grpc.AuthorizationServicer):
    def Check(self, request: object, context: object) -> external_auth_pb2.CheckResponse:
        return ALLOW


async def _serve_aio(addr: str, work_us: float = 0.0, http1: str = "") -> None:
    server = grpc.aio.server(options=OPTIONS)
    servicer = AsyncBusyAllow(work_us) if work_us > 0 else AsyncAllow()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    server.add_insecure_port(addr)
    await server.start()
    bridged = None
    if http1:
        # jira-authz's own HTTP/1.1 Check transport (authz.check_http1) answering a constant.
        from authz.check_http1 import CheckHttp1Server
        from authz.domain.network import split_hostport

        allow = ALLOW.SerializeToString()

        async def answer(request: object, metadata: object) -> bytes:
            return allow

        bridged = CheckHttp1Server(answer, lambda: True)
        await bridged.start(*split_hostport(http1))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    if bridged is not None:
        await bridged.stop(1)
    await server.stop(1)


def _serve_threads(addr: str, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(SyncAllow(), server)
    server.add_insecure_port(addr)
    server.start()
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    stop.wait()
    server.stop(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.allow_all")
    p.add_argument("--listen", required=True, help="host:port")
    p.add_argument("--mode", choices=["aio", "threads"], default="aio")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--work-us", type=float, default=0.0,
                   help="aio: spin this many microseconds in every Check before allowing")
    p.add_argument("--http1", default="",
                   help="aio: also answer the Check over HTTP/1.1 (Envoy's bridge) on host:port")
    p.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="aio: the loop (asyncio: the stock server; uvloop: jira-authz's lever)")
    args = p.parse_args(argv)
    if args.mode == "aio":
        from authz import event_loop

        event_loop.run(_serve_aio(args.listen, args.work_us, args.http1), args.event_loop)
    else:
        _serve_threads(args.listen, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
