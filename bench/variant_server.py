"""jira-authz with one component changed, to measure what that component costs.

* ``--no-audit``: the audit sink is a no-op (the "audit off" side of audit on vs off);
* ``--null-check``: Check answers a constant OK at once (everything else still runs: cache
  listener, audit task, readiness loop, metrics), to separate the handler's cost from the
  process's;
* ``--partial=translate|decide``: Check stops after translating the CheckRequest, or after
  deciding and queueing the audit event, and answers a constant (``bench/breakdown.py``);
* ``--gc=off|freeze``: the garbage collector disabled, or the start-up heap frozen;
* ``--hiredis-pack``: Redis commands are packed by hiredis (C) instead of redis-py's asyncio
  connection, which packs in Python (first round's proposal; superseded for the audit writer
  by one argument per event).

Everything else is the real server (``authz.server.Server``). Benchmark use only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from typing import Any

import hiredis
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from redis.asyncio.connection import Connection

from authz.config import load_config
from authz.envoyauth.request import to_http_request
from authz.server import AuthorizationServicer, Server

_ALLOW = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class NullAudit:
    def emit(self, event: dict[str, str], *, token_id: str | None = None,
             used: bool = False) -> bool:
        return True

    def would_accept(self) -> bool:
        return True


class HiredisPackConnection(Connection):
    """redis-py's synchronous client packs with hiredis when it is installed; the asyncio
    connection always packs in Python (one ``encode`` call per argument)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # Like redis-py: a multi-word command name ('SCRIPT EXISTS') is sent as separate words.
        first = args[0]
        sep = " " if isinstance(first, str) else b" "
        if isinstance(first, str | bytes) and sep in first:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


async def _null_check(self: Any, request: Any, context: Any) -> Any:
    return _ALLOW


_ALLOW_BYTES = _ALLOW.SerializeToString()


async def _null_answer_bytes(self: Any, request: Any, metadata: Any) -> bytes:
    return _ALLOW_BYTES


async def _translate_only(self: Any, request: Any, context: Any) -> Any:
    to_http_request(request, context.invocation_metadata())
    return _ALLOW


async def _decide_only(self: Any, request: Any, context: Any) -> Any:
    await self.service.check(to_http_request(request, context.invocation_metadata()))
    return _ALLOW


async def _main(no_audit: bool, hiredis_pack: bool, null_check: bool, partial: str,
                gc_mode: str) -> None:
    if null_check:
        AuthorizationServicer.Check = _null_check  # type: ignore[method-assign]
        AuthorizationServicer.answer_bytes = _null_answer_bytes  # type: ignore[method-assign]
    if partial:
        AuthorizationServicer.Check = {  # type: ignore[method-assign]
            "translate": _translate_only, "decide": _decide_only}[partial]
    server = Server(load_config())
    if gc_mode == "off":
        gc.disable()
    elif gc_mode == "freeze":
        gc.collect()
        gc.freeze()
    if no_audit:
        server.service.audit = NullAudit()
    if hiredis_pack:
        server.redis.connection_pool.connection_class = HiredisPackConnection
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.variant_server")
    p.add_argument("--no-audit", action="store_true")
    p.add_argument("--hiredis-pack", action="store_true")
    p.add_argument("--null-check", action="store_true")
    p.add_argument("--partial", choices=["translate", "decide"], default="",
                   help="Check runs only the translation, or translation + decision + audit, "
                        "and answers a constant")
    p.add_argument("--gc", choices=["on", "off", "freeze"], default="on",
                   help="garbage collector: as usual, disabled, or startup objects frozen")
    p.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="as `serve`: uvloop unless told")
    a = p.parse_args()
    from authz import event_loop

    event_loop.run(_main(a.no_audit, a.hiredis_pack, a.null_check, a.partial, a.gc),
                   a.event_loop)
