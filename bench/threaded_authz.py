"""jira-authz behind grpcio's thread-pool server: the serving-model alternative, measured.

The decision core (token cache, pub/sub invalidation, audit writer) is asyncio code; a thread
pool front end has to hand every Check to that event loop (``run_coroutine_threadsafe``) and
wait for the answer. This is that front end, so the benchmark can compare the two models on
the real handler and not only on an allow-all one. Benchmark use only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.config import load_config
from authz.envoyauth.request import to_http_request
from authz.server import Server
from bench.allow_all import OPTIONS


class ThreadedCheck(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    def Check(self, request: Any, context: Any) -> external_auth_pb2.CheckResponse:
        req = to_http_request(request, context.invocation_metadata())
        decision = asyncio.run_coroutine_threadsafe(
            self.server.service.check(req), self.loop).result(timeout=5)
        return self.server.responses.build(decision)


def main() -> None:
    cfg = load_config()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Server] = {}

    # The Server's own grpc.aio port (never started) is moved aside: the thread pool answers
    # on the configured port.
    inner = dataclasses.replace(cfg, listen=dataclasses.replace(
        cfg.listen, check="127.0.0.1:0", admin="", metrics=""))

    async def start() -> None:
        server = Server(inner)
        await server.cache.start()
        await server.audit.start()
        await server.cache.wait_subscribed(10)
        holder["server"] = server
        ready.set()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    threading.Thread(target=run_loop, daemon=True, name="asyncio-core").start()
    ready.wait(30)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        ThreadedCheck(holder["server"], loop), grpc_server)
    grpc_server.add_insecure_port(cfg.listen.check)
    grpc_server.start()
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    stop.wait()
    grpc_server.stop(1)


if __name__ == "__main__":
    main()
