"""Webhooks (issue 17) to a local HTTP receiver, through a real server and a real Redis:
signature verified, retried after a 500, nothing lost across a restart of the receiver (or of
the server), nothing secret in the payload, queue bounded and counted."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from test_admin_api import free_port, running_server

from authz.adapters.redis_conn import create_client
from authz.adapters.webhook_queue import WebhookQueue
from authz.admin.operations import TokenAdmin
from authz.config import load_config
from authz.domain import webhook_event as hooks
from authz.domain.issuing import TokenRequest
from authz.lifecycle_watch import LifecycleWatch

pytestmark = pytest.mark.integration

KEY = b"webhook-signing-secret-0123456789"
DAY = 86400.0


class Receiver:
    """A real HTTP server on a fixed port that can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        """Answers to give, in order; 200 once exhausted."""
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = owner.statuses.pop(0) if owner.statuses else 200
                owner.requests.append({"headers": dict(self.headers), "body": body,
                                       "status": status, "path": self.path})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["status"] == 200]


async def until(pred: Callable[[], bool | Awaitable[bool]], what: str,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def env_for(redis_url: str, prefix: str, secret_file: Path, port: int, **extra: str
            ) -> dict[str, str]:
    env = {
        "JIRA_AUTHZ_REDIS_URL": redis_url,
        "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{free_port()}",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_ADMIN": "",
        "JIRA_AUTHZ_LISTEN_METRICS": "",
        "JIRA_AUTHZ_WEBHOOKS_URL": f"http://127.0.0.1:{port}/hooks/jira-authz?src=test",
        "JIRA_AUTHZ_WEBHOOKS_SECRET_FILE": str(secret_file),
        "JIRA_AUTHZ_WEBHOOKS_MAX_BACKOFF": "2s",
        "JIRA_AUTHZ_POLICY_ALLOW_UNBOUND": "true",
    }
    env.update(extra)
    return env


def check_signed(req: dict[str, Any]) -> dict[str, Any]:
    h = {k.lower(): v for k, v in req["headers"].items()}
    ts, sig = h["x-jira-authz-timestamp"], h["x-jira-authz-signature"]
    assert hooks.verify(KEY, ts, req["body"], sig), "signature does not verify"
    assert abs(int(ts) - time.time()) < 600
    assert not hooks.verify(b"some-other-secret-0123456789", ts, req["body"], sig)
    event = json.loads(req["body"])
    assert h["x-jira-authz-event"] == event["type"]
    assert h["x-jira-authz-delivery"] == event["id"]
    assert req["path"] == "/hooks/jira-authz?src=test"
    return event


async def test_signed_retried_and_nothing_lost_across_restarts(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(KEY + b"\n")
    receiver = Receiver(free_port())
    receiver.statuses = [500]
    receiver.start()
    env = env_for(redis_url, prefix, secret_file, receiver.port)
    cfg = load_config(environ=env)
    # The CLI may run without the server's config: events still go out (the server's marker).
    bare = load_config(environ={k: v for k, v in env.items() if "WEBHOOKS" not in k})
    client = create_client(cfg.redis)
    secrets: list[str] = []
    try:
        async with running_server(env) as server:
            assert server.webhooks is not None
            admin = TokenAdmin(client, bare, actor="ops")
            await until(lambda: admin.webhooks.enabled(), "the server's webhook marker")
            token, secret = await admin.create(TokenRequest(
                user="alice", label="hooked", limits=[".*/rest/api/2/issue/SECRET-1"],
                ips=["10.9.8.0/24"]))
            secrets += [secret, token.secret_hash]
            await until(lambda: len(receiver.accepted()) == 1, "delivery after the 500")
            first, second = receiver.requests
            assert first["status"] == 500 and second["status"] == 200
            assert first["body"] == second["body"]  # the same event, retried
            event = check_signed(second)
            assert event["type"] == "token.created" and event["token"]["id"] == token.id
            assert event["actor"] == "ops" and event["token"]["user"] == "alice"
            assert server.webhooks.stats.failed >= 1
            text = generate_latest(REGISTRY).decode()
            assert 'jira_authz_webhook_deliveries_total{outcome="failed"}' in text

            # Receiver down: events wait in Redis, attempts fail and are counted.
            receiver.stop()
            failed = server.webhooks.stats.failed
            await admin.revoke(token.id)
            other, other_secret = await admin.create(TokenRequest(any_user=True, label="u"))
            secrets += [other_secret, other.secret_hash]
            await until(lambda: server.webhooks.stats.failed > failed, "a failed attempt")
            receiver.start()
            await until(lambda: len(receiver.accepted()) == 3, "the backlog after restart")
            kinds = [(e["type"], e["token"]["id"]) for e in receiver.accepted()[1:]]
            assert kinds == [("token.revoked", token.id), ("token.created", other.id)]

            # Now the server goes away with an event in flight, and comes back.
            receiver.stop()
            new, rot_secret, _old = await admin.rotate(other.id, grace_seconds=60)
            secrets += [rot_secret, new.secret_hash]
            await until(lambda: server.webhooks.stats.failed > 0
                        and server.webhooks.stats.depth >= 1, "the rotation queued")
        receiver.start()
        async with running_server(env):
            await until(lambda: len(receiver.accepted()) == 4, "delivery after server restart")
        rotated = receiver.accepted()[3]
        assert rotated["type"] == "token.rotated" and rotated["token"]["id"] == other.id
        assert rotated["token"]["state"] == "rotating"
        assert rotated["details"]["new_token_id"] == new.id
        ids = [e["id"] for e in receiver.accepted()]
        assert len(set(ids)) == len(ids)
        assert await WebhookQueue(client, prefix, 10).depth() == 0  # delivered ones leave

        # Nothing secret in any request we received (headers or body).
        for req in receiver.requests:
            blob = req["body"].decode() + json.dumps(req["headers"])
            for s in secrets:
                assert s not in blob
            for leak in ("SECRET-1", "10.9.8.0", "secret_hash", "limits"):
                assert leak not in blob
            check_signed(req)
    finally:
        await client.aclose()
        if receiver._server is not None:
            receiver.stop()


async def test_expiring_and_expired_once_per_token(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(KEY)
    env = env_for(redis_url, prefix, secret_file, free_port(),
                  JIRA_AUTHZ_LIFECYCLE_EXPIRING_WINDOW="7d")
    cfg = load_config(environ=env)
    client = create_client(cfg.redis)
    try:
        admin = TokenAdmin(client, cfg, actor="ops")
        soon, _ = await admin.create(TokenRequest(user="a", expires_at=time.time() + 2 * DAY))
        await admin.create(TokenRequest(user="a", expires_at=time.time() + 30 * DAY))
        short, _ = await admin.create(TokenRequest(user="b", expires_at=time.time() + 1.0))
        queue = WebhookQueue(client, prefix, 100)
        created = await queue.depth()
        assert created == 3
        await until(lambda: time.time() > (short.expires_at or 0), "the short token to expire")
        watch = LifecycleWatch(client, cfg, owner_id="w")
        await watch.tick()
        await watch.tick()  # a second pass sends nothing new
        entries = await client.xrange(f"{prefix}webhooks")
        events = [json.loads(f["event"] if "event" in f else f[b"event"])
                  for _, f in entries][created:]
        assert sorted((e["type"], e["token"]["id"]) for e in events) == sorted([
            ("token.expiring", soon.id), ("token.expired", short.id)])
        assert all(e["details"]["expires_in_seconds"] <= 2 * DAY for e in events)
    finally:
        await client.aclose()


async def test_queue_is_bounded_and_drops_are_counted(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(KEY)
    env = env_for(redis_url, prefix, secret_file, free_port(), JIRA_AUTHZ_WEBHOOKS_MAX_QUEUE="3")
    cfg = load_config(environ=env)
    client = create_client(cfg.redis)
    try:
        admin = TokenAdmin(client, cfg, actor="ops")
        for i in range(5):
            await admin.create(TokenRequest(user=f"u{i}"))  # the change itself never fails
        queue = WebhookQueue(client, prefix, 3)
        assert await queue.depth() == 3 and await queue.dropped() == 2
        await client.delete(queue.stream)
        t, _ = await admin.create(TokenRequest(user="v"))
        await admin.revoke(t.id)
        await admin.revoke(t.id)  # already revoked: no second event
        kinds = [json.loads(f["event"] if "event" in f else f[b"event"])["type"]
                 for _, f in await client.xrange(queue.stream)]
        assert kinds == ["token.created", "token.revoked"]
        assert len(await admin.store.list()) == 6
    finally:
        await client.aclose()


def test_config_refuses_webhooks_without_a_secret_or_with_a_bad_url() -> None:
    from authz.config import ConfigError

    with pytest.raises(ConfigError, match=r"webhooks\.secret_file"):
        load_config(environ={"JIRA_AUTHZ_WEBHOOKS_URL": "https://hooks.example.com/x"})
    with pytest.raises(ConfigError, match=r"webhooks\.url"):
        load_config(environ={"JIRA_AUTHZ_WEBHOOKS_URL": "ftp://x",
                             "JIRA_AUTHZ_WEBHOOKS_SECRET_FILE": "/x"})
    with pytest.raises(ConfigError, match=r"webhooks\.events"):
        load_config(environ={"JIRA_AUTHZ_WEBHOOKS_EVENTS": "token.created,token.leaked"})
    with pytest.raises(ConfigError, match=r"lifecycle\.expiring_window"):
        load_config(environ={"JIRA_AUTHZ_LIFECYCLE_EXPIRING_WINDOW": "14"})
    assert os.environ.get("JIRA_AUTHZ_WEBHOOKS_URL") is None


async def test_only_2xx_counts_as_delivered(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """A redirect is not followed (the signed body must not be replayed elsewhere), and any
    non-2xx answer or a refused connection is a failure to retry."""
    from authz.webhooks import WebhookSender

    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(KEY)
    receiver = Receiver(free_port())
    receiver.statuses = [302, 404, 503, 204]
    receiver.start()
    cfg = load_config(environ=env_for(redis_url, prefix, secret_file, receiver.port))
    client = create_client(cfg.redis)
    try:
        sender = WebhookSender(client, cfg, consumer="t")
        event = {"id": "e1", "type": "token.created", "token": {"id": "x"}}
        assert [await sender.deliver(event) for _ in range(4)] == [False, False, False, True]
        assert [r["status"] for r in receiver.requests] == [302, 404, 503, 204]
        receiver.stop()
        assert await sender.deliver(event) is False  # connection refused
    finally:
        await client.aclose()
        if receiver._server is not None:
            receiver.stop()
