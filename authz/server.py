"""The gRPC server: Envoy's Authorization/Check, the health service, the admin API, /metrics.

Wires the adapters (Redis store, cache, audit stream) to the CheckService from the config and
owns their lifecycle: start, readiness, SIGTERM drain, audit flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import start_http_server

from authz import metrics
from authz.adapters.audit_stream import AuditStream
from authz.adapters.redis_conn import create_client, create_pubsub_client
from authz.adapters.redis_store import RedisTokenStore, StoreUnavailable
from authz.adapters.sentinel_watch import watch_failovers
from authz.adapters.token_cache import TokenCache
from authz.admin.grpc_api import build_admin_server
from authz.check_http1 import CheckHttp1Server
from authz.config import Config
from authz.domain import limits
from authz.domain.model import Decision, HttpRequest
from authz.domain.network import split_hostport
from authz.envoyauth.request import to_http_request
from authz.envoyauth.response import ResponseBuilder
from authz.lifecycle_watch import LifecycleWatch
from authz.policies import decision_policy
from authz.service import CheckService, StoreUnavailableError
from authz.tracing import Tracing
from authz.webhooks import WebhookSender

log = logging.getLogger(__name__)
_R = TypeVar("_R")
access_log = logging.getLogger("authz.access")

CHECK_SERVICE = "envoy.service.auth.v3.Authorization"
LIVENESS_SERVICE = "liveness"
"""Always SERVING while the process runs: for liveness probes, which must not restart a pod
just because Redis is away (readiness, the overall status, reflects Redis)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, service: CheckService, responses: ResponseBuilder, tracing: Tracing,
                 access: bool) -> None:
        self.service = service
        self.responses = responses
        self.tracing = tracing
        self.access = access
        self.inflight = 0
        self.started = 0
        self.completed = 0

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return await self.answer(request, context.invocation_metadata(), self.responses.build)

    async def answer_bytes(self, request: external_auth_pb2.CheckRequest,
                           metadata: list[tuple[str, str]]) -> bytes:
        """The serialized answer, for the HTTP/1.1 port (authz.check_http1)."""
        return await self.answer(request, metadata, self.responses.serialized)

    def answer_bytes_now(self, request: external_auth_pb2.CheckRequest,
                         metadata: list[tuple[str, str]]) -> bytes | None:
        """``answer_bytes`` when the decision needs no I/O (CheckService.check_now), else None.

        The common case (a cached token) then costs no coroutine and no task. With tracing on
        every Check takes the awaited path, so each has exactly one span, timed whole."""
        if self.tracing.enabled:
            return None
        started = time.perf_counter()
        req = to_http_request(request, metadata)
        decision = self.service.check_now(req)
        if decision is None:
            return None
        response = self.responses.serialized(decision)
        self.started += 1
        self._completed(req, decision, started)
        return response

    async def answer(self, request: external_auth_pb2.CheckRequest, metadata: Any,
                     build: Callable[[Decision], _R]) -> _R:
        """Translate, decide, build the answer: every gRPC Check, and the HTTP/1.1 ones that
        need I/O (or a span)."""
        started = time.perf_counter()
        self.inflight += 1
        self.started += 1
        try:
            with self.tracing.check_span(metadata) as span:
                req = to_http_request(request, metadata)
                decision = await self.service.check(req)
                self.tracing.annotate(span, req, decision)
            response = build(decision)
        finally:
            self.inflight -= 1
        self._completed(req, decision, started)
        return response

    def _completed(self, req: HttpRequest, decision: Decision, started: float) -> None:
        self.completed += 1
        elapsed = time.perf_counter() - started
        metrics.CHECK_DURATION.observe(elapsed)
        if self.access:
            _log_access(req, decision, elapsed)


def _log_access(req: HttpRequest, decision: Decision, elapsed: float) -> None:
    access_log.info("decision", extra={
        "request_id": req.request_id, "trace_id": req.trace_id,
        "decision": decision.outcome.value, "reason": decision.reason.value,
        "status": decision.status, "token_id": decision.token.id if decision.token else "",
        "login": decision.login, "effective_user": decision.effective_user,
        "method": req.method, "path": req.path, "duration_ms": round(elapsed * 1000, 3),
    })


def _read_secret_file(path: str) -> str | None:
    if not path:
        return None
    value = Path(path).read_text(encoding="utf-8").strip()
    if not value or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{path}: upstream authorization value is empty or has control chars")
    return value


def _build_console(cfg: Config, redis: Any) -> Any:
    from authz.console.app import ConsoleServer  # aiohttp/Jinja2 only when the console runs

    secret = _read_secret_file(cfg.admin.token_file) if cfg.admin.token_file else None
    return ConsoleServer(cfg, redis, admin_secret=secret)


class Server:
    """Everything one ``jira-authz serve`` process runs."""

    def __init__(self, cfg: Config, *, span_processor: Any = None) -> None:
        self.cfg = cfg
        self.redis = create_client(cfg.redis)
        self.store = RedisTokenStore(self.redis, cfg.redis.key_prefix)
        self.pubsub_redis = create_pubsub_client(cfg.redis)
        self.cache = TokenCache(
            self.store, cfg.cache, pubsub_client=self.pubsub_redis,
            on_propagation=metrics.REVOCATION_PROPAGATION.observe,
            on_read=metrics.REDIS_LATENCY.observe,
        )
        self.audit = AuditStream(
            self.redis, cfg.audit, token_store_record_use=self.store.record_use
        )
        self.service = CheckService(
            decision_policy(cfg),
            self.cache,
            self.audit,
            unavailable=(StoreUnavailable, StoreUnavailableError),
            include_query=cfg.audit.include_query,
            strict_audit=cfg.audit.strict,
            # Compiled RE2 programs cost KBs a line: bounded on their own, owned by this server.
            compiled_limits=limits.CompiledLimits(cfg.cache.max_compiled_limits),
        )
        self.responses = ResponseBuilder(
            cfg.identity.header,
            cfg.auth.realm,
            _read_secret_file(cfg.identity.upstream_authorization_file),
        )
        self.tracing = Tracing(cfg.tracing, span_processor)
        self.health = HealthServicer()
        self.servicer = AuthorizationServicer(
            self.service, self.responses, self.tracing, cfg.log.access_log
        )
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.max_concurrent_streams", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.so_reuseport", 0),
            ]
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self.servicer, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.port = self.grpc.add_insecure_port(cfg.listen.check)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen.check}")
        self.check_http1 = (
            CheckHttp1Server(self.servicer.answer_bytes, lambda: self.ready,
                             answer_now=self.servicer.answer_bytes_now)
            if cfg.listen.check_http1 else None
        )
        self.admin = build_admin_server(self.redis, cfg) if cfg.listen.admin else None
        self.console = _build_console(cfg, self.redis) if cfg.console.listen else None
        self._unregister_metrics = metrics.register_runtime(self.cache, self.audit)
        # Token lifecycle: metrics (one owner across replicas) and webhooks, off the Check path.
        self.lifecycle = LifecycleWatch(self.redis, cfg)
        self.webhooks = WebhookSender(self.redis, cfg) if cfg.webhooks.url else None
        self._readiness: asyncio.Task[None] | None = None
        self._failovers: asyncio.Task[None] | None = None
        self._metrics_http: Any = None
        self.ready = False
        self.check_http1_port = 0

    async def start(self) -> None:
        if self.cfg.listen.metrics:
            host, port = split_hostport(self.cfg.listen.metrics)
            self._metrics_http = start_http_server(port, addr=host)
        await self.health.set(LIVENESS_SERVICE, SERVING)
        await self._set_ready(False)
        await self.cache.start()
        await self.audit.start()
        await self.grpc.start()
        if self.check_http1 is not None:
            host, port = split_hostport(self.cfg.listen.check_http1)
            self.check_http1_port = await self.check_http1.start(host, port)
        if self.admin is not None:
            await self.admin.start()
        self.lifecycle.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.console is not None:
            await self.console.start()
        self._readiness = asyncio.create_task(self._readiness_loop(), name="readiness")
        if self.cfg.redis.mode == "sentinel":
            self._failovers = asyncio.create_task(
                watch_failovers(self.cfg.redis, self._on_master_switch), name="sentinel-watch"
            )
        log.info("serving", extra={"listen": self.cfg.listen.check})

    async def _on_master_switch(self) -> None:
        self.cache.resubscribe()
        await self.redis.connection_pool.disconnect()

    async def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            log.info("ready" if ready else "not ready")
        self.ready = ready
        status = SERVING if ready else NOT_SERVING
        await self.health.set("", status)
        await self.health.set(CHECK_SERVICE, status)

    async def _readiness_loop(self) -> None:
        """Ready while Redis answers PING and the invalidation subscription is up (so cached
        answers are trustworthy); re-checked every ``readiness_interval_seconds``."""
        interval = self.cfg.server.readiness_interval_seconds
        while True:
            try:
                await asyncio.wait_for(self.redis.ping(), timeout=max(interval, 0.5))
                up = True
            except Exception:
                up = False
            metrics.REDIS_UP.set(1.0 if up else 0.0)
            await self._set_ready(up and self.cache.subscribed)
            await asyncio.sleep(interval)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight Checks finish within ``grace``, flush the audit."""
        grace = self.cfg.server.grace_seconds if grace is None else grace
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        for task in (self._readiness, self._failovers):
            if task is not None:
                # Python 3.11's asyncio.wait_for can swallow a cancellation that races the
                # result it waits for (the readiness PING): cancel again until it is done.
                while not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.1)
                if not task.cancelled():
                    with contextlib.suppress(Exception):
                        task.result()
        if self.console is not None:
            await self.console.stop()
        if self.admin is not None:
            await self.admin.stop(grace)
        if self.check_http1 is not None:
            await asyncio.gather(self.grpc.stop(grace), self.check_http1.stop(grace))
        else:
            await self.grpc.stop(grace)
        remaining = max(1.0, grace - (time.monotonic() - started))
        await self.audit.close(timeout=remaining)
        # After the drain and the audit flush: an event whose delivery is cut short stays
        # queued in Redis and is sent after the restart.
        await self.lifecycle.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.cache.close()
        self.tracing.shutdown()
        self._unregister_metrics()
        if self._metrics_http is not None:
            http_server, _thread = self._metrics_http
            http_server.shutdown()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.pubsub_redis is not None:
            with contextlib.suppress(Exception):
                await self.pubsub_redis.aclose()
        log.info("stopped", extra={
            "checks_started": self.servicer.started, "checks_completed": self.servicer.completed,
            "audit_dropped": self.audit.stats.dropped,
        })


def settle_heap() -> int:
    """Collect once, then move everything alive into the collector's permanent generation.

    What exists once the server is up (modules, protobuf descriptors, gRPC, Redis clients,
    config: ~50k objects) lives as long as the process; without this, every full collection
    walks it again, stalling the event loop (and every Check waiting on it) for tens of ms.
    Objects frozen here are still freed by reference counting; only a cycle among them that
    dies later would stay, a bounded one-off. Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(cfg: Config) -> None:
    server = Server(cfg)
    await server.start()
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"inflight": server.servicer.inflight})
    await server.stop()
