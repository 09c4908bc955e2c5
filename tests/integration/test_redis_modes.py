"""Redis Cluster and Sentinel modes against real topologies started here (3-node cluster; a
master, a replica and a Sentinel), through the real server: Check, revocation, audit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from redis.asyncio import Redis
from redis_server import find_server_binary
from test_admin_api import free_port
from test_operations import check_request

from authz.adapters.redis_conn import create_client
from authz.admin.operations import TokenAdmin
from authz.config import ConfigError, load_config
from authz.domain.issuing import TokenRequest
from authz.server import Server

pytestmark = pytest.mark.integration


class Node:
    """One redis-server (or Sentinel) process with arbitrary arguments, always killed."""

    def __init__(self, workdir: Path, *args: str, sentinel_conf: str | None = None,
                 bus_port: int = 0, tls: bool = False) -> None:
        self.port = free_port()
        self.bus_port = bus_port
        if bus_port:
            args = (*args, "--cluster-port", str(bus_port))
        self.dir = workdir / f"n{self.port}"
        self.dir.mkdir()
        cmd = [find_server_binary()]
        if sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\n{sentinel_conf}")
            cmd += [str(conf), "--sentinel"]
        elif tls:
            # The TLS port is in args (--port 0 turns plain TCP off); wait for that one.
            self.port = int(args[args.index("--tls-port") + 1])
            cmd += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.dir), *args]
        else:
            cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.dir), *args]
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis node on {self.port} did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for n in started:
        n.kill()


async def _until(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await pred():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _cluster(nodes: list[Node], tmp_path: Path) -> str:
    for _ in range(3):
        # The bus port defaults to port + 10000, which a high free port overflows.
        nodes.append(Node(tmp_path, "--cluster-enabled", "yes", "--cluster-config-file",
                          "nodes.conf", bus_port=free_port()))
    clients = [Redis(port=n.port, decode_responses=True) for n in nodes]
    try:
        for c in clients[1:]:
            await c.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port,
                                    nodes[0].bus_port)
        bounds = [(0, 5460), (5461, 10922), (10923, 16383)]
        for c, (lo, hi) in zip(clients, bounds, strict=True):
            await c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)

        async def ok() -> bool:
            infos = [await c.execute_command("CLUSTER", "INFO") for c in clients]
            return all("cluster_state:ok" in i for i in infos)

        await _until(ok)
    finally:
        for c in clients:
            await c.aclose()
    return f"redis://127.0.0.1:{nodes[0].port}/0"


def _env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "JIRA_AUTHZ_REDIS_URL": url,
        "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{free_port()}",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_ADMIN": "",
        "JIRA_AUTHZ_LISTEN_METRICS": "",
        "JIRA_AUTHZ_SERVER_READINESS_INTERVAL_SECONDS": "0.1",
        "JIRA_AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS": "0.01",
        **extra,
    }


def _basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


async def _exercise(env: dict[str, str]) -> None:
    """Two replicas: allow, revoke seen by both, audit written, use counted."""
    cfg = load_config(environ=env)
    a, b = Server(cfg), Server(load_config(environ={**env, "JIRA_AUTHZ_LISTEN_CHECK":
                                                    f"127.0.0.1:{free_port()}"}))
    await a.start()
    await b.start()
    admin_client = create_client(cfg.redis)
    try:
        await _until(lambda: _both_ready(a, b))
        admin = TokenAdmin(admin_client, cfg, actor="test")
        token, secret = await admin.create(TokenRequest(user="alice"))
        stubs = []
        channels = [grpc.aio.insecure_channel(s.cfg.listen.check) for s in (a, b)]
        stubs = [external_auth_pb2_grpc.AuthorizationStub(ch) for ch in channels]
        for stub in stubs:
            r = await stub.Check(check_request(_basic("alice", secret)))
            assert r.status.code == 0, r
        await admin.revoke(token.id)

        async def both_deny() -> bool:
            codes = [(await s.Check(check_request(_basic("alice", secret)))).status.code
                     for s in stubs]
            return all(c == 16 for c in codes)

        await _until(both_deny, timeout=2.0)
        for ch in channels:
            await ch.close()

        async def audited() -> bool:
            return await admin_client.xlen(cfg.audit.stream) >= 5  # 2 allow + 2 deny + admin

        await _until(audited)
        events = await admin_client.xrange(cfg.audit.stream)
        allows = sum(1 for _, f in events
                     if f.get("token_id") == token.id and f.get("decision") == "allow")
        assert allows >= 2

        async def counted() -> bool:
            stored = await admin.get(token.id)
            return stored.use_count == allows and stored.last_used_at is not None

        await _until(counted)
    finally:
        await a.stop(grace=1)
        await b.stop(grace=1)
        await admin_client.aclose()


async def _both_ready(*servers: Server) -> bool:
    return all(s.ready for s in servers)


async def test_cluster_mode(nodes: list[Node], tmp_path: Path) -> None:
    url = await _cluster(nodes, tmp_path)
    await _exercise(_env(url, "{ja-test}:", JIRA_AUTHZ_REDIS_MODE="cluster"))


def test_cluster_mode_requires_a_hash_tag() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(environ={"JIRA_AUTHZ_REDIS_MODE": "cluster",
                             "JIRA_AUTHZ_REDIS_KEY_PREFIX": "jira-authz:"})
    assert e.value.key == "redis.key_prefix"


async def test_sentinel_mode_follows_a_failover(nodes: list[Node], tmp_path: Path) -> None:
    master = Node(tmp_path, "--repl-diskless-sync-delay", "0")
    nodes.append(master)
    replica = Node(tmp_path, "--replicaof", "127.0.0.1", str(master.port))
    nodes.append(replica)
    sentinel = Node(tmp_path, sentinel_conf=(
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 5000\n"
    ))
    nodes.append(sentinel)
    env = _env("redis://unused/0", "sent:", JIRA_AUTHZ_REDIS_MODE="sentinel",
               JIRA_AUTHZ_REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}")
    rs = Redis(port=replica.port, decode_responses=True)
    sc = Redis(port=sentinel.port, decode_responses=True)
    try:
        async def replica_known() -> bool:
            reps = await sc.execute_command("SENTINEL", "REPLICAS", "mymaster")
            return any(r["flags"] == "slave" and r["master-link-status"] == "ok" for r in reps)

        await _until(replica_known)
        await _exercise(env)

        # A server that keeps running across the failover.
        cfg = load_config(environ={**env, "JIRA_AUTHZ_REDIS_KEY_PREFIX": "sent2:",
                                   "JIRA_AUTHZ_AUDIT_STREAM": "sent2:audit"})
        server = Server(cfg)
        await server.start()
        try:
            await _until(lambda: _both_ready(server))
            await sc.execute_command("SENTINEL", "FAILOVER", "mymaster")

            async def promoted() -> bool:
                # Over when the Sentinel's master entry (what clients discover) is the replica.
                m = await sc.execute_command("SENTINEL", "MASTER", "mymaster")
                return int(m["port"]) == replica.port and m["flags"] == "master"

            await _until(promoted)
            fresh = create_client(cfg.redis)
            try:
                assert (await fresh.info("server"))["tcp_port"] == replica.port
                admin = TokenAdmin(fresh, cfg, actor="test")
                token, secret = await admin.create(TokenRequest(user="alice"))
                async with grpc.aio.insecure_channel(cfg.listen.check) as ch:
                    stub = external_auth_pb2_grpc.AuthorizationStub(ch)

                    async def allowed() -> bool:
                        r = await stub.Check(check_request(_basic("alice", secret)))
                        return r.status.code == 0

                    await _until(allowed)

                    async def audited_on_new_master() -> bool:
                        events = await fresh.xrange(cfg.audit.stream)
                        return any(f.get("token_id") == token.id for _, f in events)

                    await _until(audited_on_new_master)
                    await admin.revoke(token.id)

                    async def denied() -> bool:
                        r = await stub.Check(check_request(_basic("alice", secret)))
                        return r.status.code == 16

                    # The server followed the failover (+switch-master): its subscription is
                    # on the new master, so the revocation is seen at once.
                    await _until(denied, timeout=2)
            finally:
                await fresh.aclose()
        finally:
            await server.stop(grace=1)
    finally:
        await rs.aclose()
        await sc.aclose()


def _tls_material(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "server.crt")
    return d / "ca.crt", d / "server.crt", d / "server.key"


async def test_tls_and_auth_url(nodes: list[Node], tmp_path: Path) -> None:
    """rediss:// with a password: the server verifies Redis's certificate against the CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available to make test certificates")
    ca, crt, key = _tls_material(tmp_path)
    tls = Node(tmp_path, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file",
               str(crt), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
               "--tls-auth-clients", "no", "--requirepass", "s3cret-redis-pw", tls=True)
    nodes.append(tls)
    url = (f"rediss://:s3cret-redis-pw@127.0.0.1:{tls.port}/0"
           f"?ssl_ca_certs={ca}&ssl_cert_reqs=required")
    await _exercise(_env(url, "tls:"))
    # Without the password, or without trusting the CA, nothing works (fail closed).
    for bad in (url.replace(":s3cret-redis-pw@", ":wrong@"),
                url.replace(f"ssl_ca_certs={ca}&", "")):
        client = create_client(load_config(environ=_env(bad, "tls:")).redis)
        try:
            with pytest.raises(Exception):  # noqa: B017 (auth or certificate error)
                await client.ping()
        finally:
            await client.aclose()
