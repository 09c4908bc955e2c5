"""The console's HTTP server: an aiohttp application in the server's own event loop.

Started and stopped by ``authz.server.Server`` next to the gRPC services; it shares the
process's Redis client, so the console adds no connection pool and no thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from authz.config import Config
from authz.console import security
from authz.console.views import Console
from authz.domain.network import split_hostport

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PREFIX = web.AppKey("prefix", str)
CONSOLE = web.AppKey("console", Console)


@web.middleware
async def _headers(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as e:  # 404/405 from the router: a plain page, same headers
        resp = web.Response(status=e.status, text=f"{e.status} {e.reason}\n",
                            content_type="text/plain")
    security.add_headers(resp, static=request.path.startswith(
        request.app[PREFIX] + "static/"))
    return resp


def build_app(cfg: Config, redis: Redis, *, admin_secret: str | None = None,
              clock: Callable[[], float] = time.time) -> web.Application:
    console = Console(cfg, redis, admin_secret=admin_secret, clock=clock)
    # client_max_size bounds every body (forms, import files) before a handler sees it.
    app = web.Application(middlewares=[_headers], client_max_size=2 * 1024 * 1024)
    app[PREFIX] = cfg.console.path_prefix
    app[CONSOLE] = console
    app.add_routes(console.routes())
    app.router.add_static(cfg.console.path_prefix + "static/", STATIC, follow_symlinks=False)

    async def _close(_: web.Application) -> None:
        await console.jira.close()

    app.on_cleanup.append(_close)
    return app


class ConsoleServer:
    """``console.listen``: start/stop with the rest of ``jira-authz serve``."""

    def __init__(self, cfg: Config, redis: Redis, *, admin_secret: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.app = build_app(cfg, redis, admin_secret=admin_secret, clock=clock)
        # No access log: paths are harmless, but a log line per page adds nothing the
        # decisions' audit needs, and query strings (filters) may name users.
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self) -> None:
        host, port = split_hostport(self.cfg.console.listen)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("console serving", extra={"listen": f"{host}:{self.port}",
                                            "prefix": self.cfg.console.path_prefix})

    async def stop(self) -> None:
        await self.runner.cleanup()
