"""Operations (product.md §9): metrics move, readiness follows Redis, SIGTERM drains, spans continue
Envoy's trace, and no secret reaches logs, metrics or spans."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis_server import RedisServer
from test_admin_api import free_port

from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.config import load_config
from authz.domain.issuing import TokenRequest, issue
from authz.server import Server

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def env_for(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "JIRA_AUTHZ_REDIS_URL": redis_url,
        "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{free_port()}",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_ADMIN": "",
        "JIRA_AUTHZ_LISTEN_METRICS": "",
        "JIRA_AUTHZ_SERVER_READINESS_INTERVAL_SECONDS": "0.1",
        "JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS": "0.3",
        "JIRA_AUTHZ_REDIS_CONNECT_TIMEOUT_SECONDS": "0.3",
        **extra,
    }


async def make_token(redis_url: str, prefix: str, **kw: object) -> tuple[str, str]:
    cfg = load_config(environ=env_for(redis_url, prefix))
    client = create_client(cfg.redis)
    try:
        token, secret = issue(TokenRequest(**kw), now=time.time())  # type: ignore[arg-type]
        await RedisTokenStore(client, prefix).create(token)
    finally:
        await client.aclose()
    return token.id, secret


def check_request(auth: str | None, path: str = "/rest/api/2/issue/A-1",
                  query: str = "", headers: dict[str, str] | None = None,
                  ) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.host, http.scheme = "GET", "jira.local", "https"
    http.path = path + (f"?{query}" if query else "")
    hdrs = {":method": "GET", ":path": http.path, "x-request-id": "req-1", **(headers or {})}
    if auth:
        hdrs["authorization"] = auth
    http.headers.update(hdrs)
    req.attributes.source.address.socket_address.address = "127.0.0.1"
    return req


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        got = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(",") if kv)
        if metric == name and {k: v.strip('"') for k, v in got.items()} == labels:
            return float(value)
    return 0.0


async def wait_until(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_metrics_move_with_decisions(redis_url: str, prefix: str) -> None:
    port = free_port()
    env = env_for(redis_url, prefix, JIRA_AUTHZ_LISTEN_METRICS=f"127.0.0.1:{port}")
    _tid, secret = await make_token(redis_url, prefix, user="alice",
                                   limits=["[get].*/rest/api/2/issue/.*"])
    server = Server(load_config(environ=env))
    await server.start()
    try:
        before = await asyncio.to_thread(scrape, port)
        async with grpc.aio.insecure_channel(env["JIRA_AUTHZ_LISTEN_CHECK"]) as ch:
            stub = external_auth_pb2_grpc.AuthorizationStub(ch)
            for _ in range(3):
                await stub.Check(check_request(basic("alice", secret)))
            await stub.Check(check_request(basic("bob", secret)))
            await stub.Check(check_request(None))
        await wait_until(lambda: _flushed(server))
        after = await asyncio.to_thread(scrape, port)
    finally:
        await server.stop(grace=1)
    for name in ("jira_authz_decisions_total", "jira_authz_check_duration_seconds_bucket",
                 "jira_authz_cache_lookups_total", "jira_authz_cache_entries",
                 "jira_authz_audit_queue_depth", "jira_authz_audit_events_total",
                 "jira_authz_audit_dropped_total", "jira_authz_invalidations_total",
                 "jira_authz_redis_errors_total", "jira_authz_redis_latency_seconds_bucket",
                 "jira_authz_revocation_propagation_seconds_bucket", "jira_authz_build_info",
                 "jira_authz_pubsub_subscribed", "jira_authz_redis_up"):
        assert name in after, name
    def delta(name: str, **lb: str) -> float:
        return sample(after, name, **lb) - sample(before, name, **lb)
    assert delta("jira_authz_decisions_total", result="allow", reason="ok") == 3
    assert delta("jira_authz_decisions_total", result="deny", reason="wrong_user") == 1
    assert delta("jira_authz_decisions_total", result="pass", reason="no_credentials") == 1
    assert delta("jira_authz_check_duration_seconds_count") == 5
    # Four token lookups of one secret: the first is a miss, the rest hit unless the
    # subscription looked quiet at that moment (then a re-read: a miss, never a wrong answer).
    lookups = (delta("jira_authz_cache_lookups_total", result="hit")
               + delta("jira_authz_cache_lookups_total", result="miss"))
    assert lookups == 4
    assert delta("jira_authz_cache_lookups_total", result="hit") >= 1
    assert sample(after, "jira_authz_audit_events_total", outcome="flushed") >= 4
    assert secret not in after


async def _flushed(server: Server) -> bool:
    return server.audit.stats.depth == 0 and server.audit.stats.flushed >= 4


async def test_readiness_follows_redis(private_redis: RedisServer, prefix: str) -> None:
    env = env_for(private_redis.url, prefix)
    server = Server(load_config(environ=env))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(env["JIRA_AUTHZ_LISTEN_CHECK"]) as ch:
            health = health_pb2_grpc.HealthStub(ch)

            async def status(service: str = "") -> int:
                r = await health.Check(health_pb2.HealthCheckRequest(service=service))
                return r.status

            async def serving() -> bool:
                return await status() == health_pb2.HealthCheckResponse.SERVING

            async def not_serving() -> bool:
                return await status() == health_pb2.HealthCheckResponse.NOT_SERVING

            await wait_until(serving)
            await asyncio.to_thread(private_redis.stop)
            await wait_until(not_serving)
            # Liveness stays up: a pod must not be restarted because Redis is away.
            assert await status("liveness") == health_pb2.HealthCheckResponse.SERVING
            await asyncio.to_thread(private_redis.start)
            await wait_until(serving, timeout=15)
    finally:
        await server.stop(grace=1)


async def test_span_continues_envoy_trace_and_holds_no_secret(redis_url: str,
                                                              prefix: str) -> None:
    env = env_for(redis_url, prefix)
    _, secret = await make_token(redis_url, prefix, user="alice")
    exporter = InMemorySpanExporter()
    server = Server(load_config(environ=env), span_processor=SimpleSpanProcessor(exporter))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(env["JIRA_AUTHZ_LISTEN_CHECK"]) as ch:
            stub = external_auth_pb2_grpc.AuthorizationStub(ch)
            await stub.Check(check_request(basic("alice", secret), query=f"x={secret}"),
                             metadata=[("traceparent", TRACEPARENT)])
    finally:
        await server.stop(grace=1)
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    span = spans[0]
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes["jira_authz.decision"] == "allow"
    assert secret not in json.dumps(dict(span.attributes)) + span.name


SERVE_LOAD = r"""
import asyncio, base64, sys, json
import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
sys.path.insert(0, sys.argv[3])
from test_operations import check_request, basic
async def main(addr, secret):
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        await stub.Check(check_request(basic("alice", secret)), timeout=5)
        print("warm", flush=True)
        async def one(i):
            try:
                r = await stub.Check(check_request(basic("alice", secret)), timeout=10)
                return "ok" if r.status.code == 0 else f"deny:{r.status.code}"
            except grpc.aio.AioRpcError as e:
                return "rpc:" + e.code().name
        results = []
        tasks = []
        for i in range(400):
            tasks.append(asyncio.ensure_future(one(i)))
            if i == 150:
                print("sigterm-now", flush=True)
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*tasks)
        print(json.dumps(results), flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_sigterm_under_load_loses_no_decision_and_no_audit_event(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Checks accepted before SIGTERM all get answers, and every answered token call is in the
    audit stream once the process has exited."""
    env = {**os.environ, **env_for(redis_url, prefix,
                                   JIRA_AUTHZ_SERVER_GRACE_SECONDS="10",
                                   JIRA_AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS="2")}
    _, secret = asyncio.run(make_token(redis_url, prefix, user="alice"))
    serve = subprocess.Popen([sys.executable, "-m", "authz", "serve", "--workers", "1"], env=env,
                             stderr=open(tmp_path / "serve.log", "w"))  # noqa: SIM115
    try:
        _wait_port(env["JIRA_AUTHZ_LISTEN_CHECK"])
        load = subprocess.Popen(
            [sys.executable, "-c", SERVE_LOAD, env["JIRA_AUTHZ_LISTEN_CHECK"], secret,
             str(Path(__file__).parent)],
            stdout=subprocess.PIPE, text=True, env={**os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1])])},
        )
        assert load.stdout is not None
        lines = iter(load.stdout.readline, "")
        assert next(lines).strip() == "warm"
        assert next(lines).strip() == "sigterm-now"
        serve.send_signal(signal.SIGTERM)
        results = json.loads(next(lines))
        load.wait(timeout=30)
        assert serve.wait(timeout=30) == 0
    finally:
        for p in (serve,):
            if p.poll() is None:
                p.kill()
    answered = results.count("ok")
    refused = [r for r in results if r != "ok"]
    log_lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                 if line.startswith("{")]
    stopped = next(e for e in log_lines if e["message"] == "stopped")
    # No in-flight decision lost: every Check the server began, it finished, and the client
    # got it (+1: the warm-up call).
    assert stopped["checks_started"] == stopped["checks_completed"] == answered + 1, stopped
    assert stopped["audit_dropped"] == 0
    # Calls after the drain began are refused (UNAVAILABLE on a new stream, CANCELLED on one
    # the stopping server no longer takes), never answered wrongly; Envoy turns both into 503.
    # Every call that got an answer was a correct allow.
    assert all(r in ("rpc:UNAVAILABLE", "rpc:CANCELLED") for r in refused), set(refused)
    assert answered >= 50  # the drain began with many calls in flight or queued
    client_env = env_for(redis_url, prefix)

    async def count() -> int:
        c = create_client(load_config(environ=client_env).redis)
        try:
            return await c.xlen(prefix + "audit")
        finally:
            await c.aclose()

    # +1 for the warm-up call: the audit buffer (2 s flush interval) was flushed at exit.
    assert asyncio.run(count()) == answered + 1
    log_text = (tmp_path / "serve.log").read_text()
    assert secret not in log_text
    assert '"message":"stopping"' in log_text and '"message":"stopped"' in log_text


def _wait_port(addr: str, timeout: float = 15.0) -> None:
    import socket

    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{addr} never listened")


async def test_no_secret_in_logs_metrics_or_spans(redis_url: str, prefix: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A burst with secrets in every position: header, query, body, user agent, bad headers."""
    port = free_port()
    env = env_for(redis_url, prefix, JIRA_AUTHZ_LISTEN_METRICS=f"127.0.0.1:{port}",
                  JIRA_AUTHZ_LOG_ACCESS_LOG="true")
    _, secret = await make_token(redis_url, prefix, user="alice",
                                 limits=["[get].*/rest/api/2/issue/.*"])
    password = "hunter2-jira-password-xyz"
    exporter = InMemorySpanExporter()
    server = Server(load_config(environ=env), span_processor=SimpleSpanProcessor(exporter))
    caplog.set_level(logging.DEBUG)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(env["JIRA_AUTHZ_LISTEN_CHECK"]) as ch:
            stub = external_auth_pb2_grpc.AuthorizationStub(ch)
            variants = [
                check_request(basic("alice", secret)),
                check_request(basic("bob", secret)),
                check_request(basic("alice", secret), query=f"token={secret}"),
                check_request(basic("alice", secret), headers={"user-agent": secret}),
                check_request("Bearer " + secret),
                check_request("Bearer " + secret[:-1] + "x"),
                check_request(basic("alice", password)),
                check_request("Basic " + base64.b64encode(secret.encode()).decode()),
                check_request(basic("alice", secret), path="/rest/../x"),
                check_request(f"Bearer {secret}, Basic abc"),
            ]
            for r in variants:
                r.attributes.request.http.body = json.dumps({"password": secret})
                await stub.Check(r, metadata=[("traceparent", TRACEPARENT)])
        await wait_until(lambda: _drained(server))
        metrics_text = await asyncio.to_thread(scrape, port)
    finally:
        await server.stop(grace=1)
    logs = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    spans = json.dumps([dict(s.attributes) | {"name": s.name} for s in
                        exporter.get_finished_spans()])
    assert len(exporter.get_finished_spans()) == len(variants)
    assert '"decision"' in logs  # the access log ran
    for text, where in ((logs, "logs"), (metrics_text, "metrics"), (spans, "spans")):
        for s in (secret, secret[4:20], password):
            assert s not in text, f"secret fragment found in {where}"


async def _drained(server: Server) -> bool:
    return server.audit.stats.depth == 0
