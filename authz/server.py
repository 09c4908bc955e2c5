"""The gRPC server: Envoy's Authorization/Check and the standard health service.

Wires the adapters (Redis store, cache, audit stream) to the CheckService from the config, and
owns their lifecycle: start, SIGTERM drain, audit flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import start_http_server

from authz import metrics
from authz.adapters.audit_stream import AuditStream
from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore, StoreUnavailable
from authz.adapters.token_cache import TokenCache
from authz.admin.grpc_api import build_admin_server
from authz.config import Config
from authz.domain.decide import Policy
from authz.envoyauth.request import to_http_request
from authz.envoyauth.response import ResponseBuilder
from authz.service import CheckService, StoreUnavailableError

log = logging.getLogger(__name__)

CHECK_SERVICE = "envoy.service.auth.v3.Authorization"


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, service: CheckService, responses: ResponseBuilder) -> None:
        self.service = service
        self.responses = responses

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        req = to_http_request(request, context.invocation_metadata())
        decision = await self.service.check(req)
        response = self.responses.build(decision)
        metrics.CHECK_DURATION.observe(time.perf_counter() - started)
        return response


def _read_secret_file(path: str) -> str | None:
    if not path:
        return None
    value = Path(path).read_text(encoding="utf-8").strip()
    if not value or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{path}: upstream authorization value is empty or has control chars")
    return value


class Server:
    """Everything one ``jira-authz serve`` process runs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.redis = create_client(cfg.redis)
        self.store = RedisTokenStore(self.redis, cfg.redis.key_prefix)
        self.cache = TokenCache(self.store, cfg.cache)
        self.audit = AuditStream(
            self.redis, cfg.audit, token_store_record_use=self.store.record_use
        )
        self.service = CheckService(
            Policy.from_config(cfg),
            self.cache,
            self.audit,
            unavailable=(StoreUnavailable, StoreUnavailableError),
            include_query=cfg.audit.include_query,
            strict_audit=cfg.audit.strict,
        )
        self.responses = ResponseBuilder(
            cfg.identity.header,
            cfg.auth.realm,
            _read_secret_file(cfg.identity.upstream_authorization_file),
        )
        self.health = HealthServicer()
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.max_concurrent_streams", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ]
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(self.service, self.responses), self.grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.port = self.grpc.add_insecure_port(cfg.listen.check)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen.check}")
        self.admin = build_admin_server(self.redis, cfg) if cfg.listen.admin else None

    async def start(self) -> None:
        if self.cfg.listen.metrics:
            host, _, port = self.cfg.listen.metrics.rpartition(":")
            start_http_server(int(port), addr=host)
        await self.cache.start()
        await self.audit.start()
        await self.grpc.start()
        if self.admin is not None:
            await self.admin.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(CHECK_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"listen": self.cfg.listen.check})

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight Checks finish within ``grace``, flush the audit."""
        await self.health.enter_graceful_shutdown()
        if self.admin is not None:
            await self.admin.stop(grace)
        await self.grpc.stop(grace)
        await self.audit.close(timeout=grace)
        await self.cache.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def serve(cfg: Config) -> None:
    server = Server(cfg)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await server.stop()
