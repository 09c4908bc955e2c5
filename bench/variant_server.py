"""jira-authz with the audit sink replaced by a no-op: the "audit off" side of the comparison.

Everything else is the real server (``authz.server.Server``): config, cache, metrics, gRPC.
Only for measuring what emitting audit events costs a decision; never a deployment mode.
"""

from __future__ import annotations

import asyncio
import signal

from authz.config import load_config
from authz.server import Server


class NullAudit:
    def emit(self, event: dict[str, str], *, token_id: str | None = None,
             used: bool = False) -> bool:
        return True

    def would_accept(self) -> bool:
        return True


async def _main() -> None:
    server = Server(load_config())
    server.service.audit = NullAudit()
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
