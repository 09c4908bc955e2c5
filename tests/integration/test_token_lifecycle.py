"""Token lifecycle against a real Redis: a store seeded with tokens in every state, the
lifecycle metrics (one owner across replicas), the list filters through operations, CLI and
admin API, and prune (dry run, apply, audited, audit history kept)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest
from test_admin_api import auth, cli, running_server, server_env

from authz._proto.jira_authz.admin.v1 import admin_pb2 as pb
from authz._proto.jira_authz.admin.v1 import admin_pb2_grpc
from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.admin.operations import AdminError, TokenAdmin
from authz.config import Config, load_config
from authz.domain.issuing import TokenRequest, issue
from authz.lifecycle_watch import LifecycleWatch

pytestmark = pytest.mark.integration

DAY = 86400.0
NOW = time.time()


def _env(redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
    env.update({"JIRA_AUTHZ_REDIS_URL": redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
                "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
                "JIRA_AUTHZ_LIFECYCLE_EXPIRING_WINDOW": "14d",
                "JIRA_AUTHZ_LIFECYCLE_UNUSED_AFTER": "30d"})
    return env


# label -> (request fields, revoke at (relative), last used (relative), expected state)
SEED = {
    "active-fresh": ({"user": "ann"}, None, -1 * DAY, "active"),
    "active-stale": ({"user": "ann"}, None, -45 * DAY, "active"),
    "never-used": ({"user": "bob", "created_at": NOW - 60 * DAY}, None, None, "active"),
    "expiring-3d": ({"user": "bob", "expires_at": NOW + 3 * DAY}, None, -DAY, "active"),
    "expiring-20d": ({"user": "bob", "expires_at": NOW + 20 * DAY}, None, -DAY, "active"),
    "rotating": ({"user": "cy", "expires_at": NOW + 5 * DAY}, +3600, -DAY, "rotating"),
    "expired-2d": ({"user": "cy", "expires_at": NOW - 2 * DAY}, None, -3 * DAY, "expired"),
    "expired-40d": ({"user": "cy", "expires_at": NOW - 40 * DAY,
                     "created_at": NOW - 90 * DAY}, None, None, "expired"),
    "revoked-1d": ({"user": "dee"}, -DAY, -2 * DAY, "revoked"),
    "revoked-60d": ({"user": "dee", "created_at": NOW - 100 * DAY}, -60 * DAY, None, "revoked"),
}


async def seed(cfg: Config) -> dict[str, str]:
    """Every state, written as the store holds them (times in the past need direct writes)."""
    client = create_client(cfg.redis)
    store = RedisTokenStore(client, cfg.redis.key_prefix)
    ids: dict[str, str] = {}
    try:
        for label, (fields, revoke, used, _state) in SEED.items():
            req = TokenRequest(label=label, **fields)  # type: ignore[arg-type]
            token, _ = issue(req, now=NOW, allow_expired=True)
            await store.create(token)
            if revoke is not None:
                await store.revoke(token.id, NOW + revoke)
            if used is not None:
                await store.record_use({token.id: (3, NOW + used)})
            ids[label] = token.id
    finally:
        await client.aclose()
    return ids


@asynccontextmanager
async def admin_for(cfg: Config) -> AsyncIterator[TokenAdmin]:
    client = create_client(cfg.redis)
    try:
        yield TokenAdmin(client, cfg, actor="lifecycle-test")
    finally:
        await client.aclose()


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not exposed")


async def test_metrics_on_a_store_with_every_state(redis_url: str, prefix: str) -> None:
    cfg = load_config(environ=_env(redis_url, prefix))
    await seed(cfg)
    client = create_client(cfg.redis)
    a, b = LifecycleWatch(client, cfg, owner_id="a"), LifecycleWatch(client, cfg, owner_id="b")
    try:
        await a.tick()
        await b.tick()
        # One owner: a computed, b read a's summary.
        assert a.owner and not b.owner and a.scans == 1 and b.scans == 0
        assert b.latest is not None and a.latest is not None
        assert b.latest.summary == a.latest.summary
        s = a.latest.summary
        assert s.by_state == {"active": 5, "rotating": 1, "expired": 2, "revoked": 2}
        assert s.total == 10
        assert s.expiring == 2  # expiring-3d and rotating (5d); not 20d, not expired ones
        assert s.unused == 2  # active-stale (45d), never-used (created 60d ago)
        a.start()
        try:
            text = generate_latest(REGISTRY).decode()
        finally:
            await a.stop()
        assert _metric(text, "jira_authz_tokens", 'state="rotating"') == 1
        assert _metric(text, "jira_authz_tokens", 'state="active"') == 5
        assert _metric(text, "jira_authz_tokens", 'state="expired"') == 2
        assert _metric(text, "jira_authz_tokens", 'state="revoked"') == 2
        assert _metric(text, "jira_authz_tokens_expiring_soon") == 2
        assert _metric(text, "jira_authz_tokens_expiring_window_seconds") == 14 * DAY
        assert _metric(text, "jira_authz_tokens_unused") == 2
        assert _metric(text, "jira_authz_tokens_unused_after_seconds") == 30 * DAY
        assert _metric(text, "jira_authz_lifecycle_scan_timestamp_seconds") > NOW - 60
        # a stopped and handed the lease over: b owns it on its next tick.
        await b.tick()
        assert b.owner and b.scans == 1
    finally:
        await client.aclose()


async def test_list_filters_through_operations_cli_and_api(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = _env(redis_url, prefix)
    cfg = load_config(environ=env)
    ids = await seed(cfg)

    def labels(tokens: list[object]) -> set[str]:
        return {t.label for t in tokens}  # type: ignore[attr-defined]

    async with admin_for(cfg) as admin:
        page, _ = await admin.list(expiring_within=14 * DAY)
        assert labels(page) == {"expiring-3d", "rotating"}
        page, _ = await admin.list(unused_for=30 * DAY)
        assert labels(page) == {"active-stale", "never-used"}
        page, _ = await admin.list(state="rotating")
        assert labels(page) == {"rotating"}
        page, _ = await admin.list(state="expired", user="CY")
        assert labels(page) == {"expired-2d", "expired-40d"}
        page, _ = await admin.list(expiring_within=30 * DAY, user="bob")
        assert labels(page) == {"expiring-3d", "expiring-20d"}
        with pytest.raises(AdminError):
            await admin.list(state="stale")
        with pytest.raises(AdminError):
            await admin.list(unused_for=-1)

    r = await asyncio.to_thread(cli, env, "token", "list", "--expiring", "14d", "--json")
    assert r.returncode == 0, r.stderr
    assert {t["label"] for t in json.loads(r.stdout)} == {"expiring-3d", "rotating"}
    r = await asyncio.to_thread(cli, env, "token", "list", "--unused-for", "30d")
    assert r.returncode == 0 and "active-stale" in r.stdout and "never-used" in r.stdout
    assert "active-fresh" not in r.stdout
    r = await asyncio.to_thread(cli, env, "token", "list", "--state", "rotating")
    assert r.returncode == 0 and "rotating" in r.stdout and "active-fresh" not in r.stdout
    r = await asyncio.to_thread(cli, env, "token", "show", ids["rotating"], "--json")
    assert json.loads(r.stdout)["state"] == "rotating"  # was "active" with a future revoked_at
    r = await asyncio.to_thread(cli, env, "token", "show", ids["rotating"])
    assert "rotating" in r.stdout
    r = await asyncio.to_thread(cli, env, "token", "list", "--expiring", "14")
    assert r.returncode == 1 and "--expiring" in r.stderr and "unit" in r.stderr

    token_file = tmp_path / "admin-token"
    token_file.write_text("admin-secret-for-tests-0123456789")
    senv = server_env(redis_url, prefix, token_file)
    async with running_server(senv), grpc.aio.insecure_channel(
        senv["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        got = await stub.ListTokens(pb.ListTokensRequest(expiring_within_seconds=14 * DAY),
                                    metadata=auth())
        assert {t.label for t in got.tokens} == {"expiring-3d", "rotating"}
        assert {t.state for t in got.tokens} == {pb.TOKEN_STATE_ACTIVE, pb.TOKEN_STATE_ROTATING}
        got = await stub.ListTokens(pb.ListTokensRequest(unused_for_seconds=30 * DAY),
                                    metadata=auth())
        assert {t.label for t in got.tokens} == {"active-stale", "never-used"}
        got = await stub.ListTokens(pb.ListTokensRequest(state=pb.TOKEN_STATE_ROTATING),
                                    metadata=auth())
        assert [t.label for t in got.tokens] == ["rotating"]
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ListTokens(pb.ListTokensRequest(unused_for_seconds=-5), metadata=auth())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # And the CLI through the admin API.
        renv = {**os.environ, "JIRA_AUTHZ_ADMIN_TOKEN": "admin-secret-for-tests-0123456789"}
        renv.pop("JIRA_AUTHZ_REDIS_URL", None)
        r = await asyncio.to_thread(cli, renv, "token", "list", "--admin-url",
                                    senv["JIRA_AUTHZ_LISTEN_ADMIN"], "--unused-for", "30d",
                                    "--json")
        assert r.returncode == 0, r.stderr
        assert {t["label"] for t in json.loads(r.stdout)} == {"active-stale", "never-used"}

    # rotate --grace takes a duration; the old token then lists as rotating.
    r = await asyncio.to_thread(cli, env, "token", "rotate", ids["active-fresh"], "--grace",
                                "1h", "--json")
    assert r.returncode == 0, r.stderr
    rotated = json.loads(r.stdout)
    assert rotated["previous"]["state"] == "rotating" and rotated["state"] == "active"
    r = await asyncio.to_thread(cli, env, "token", "list", "--state", "rotating", "--json")
    assert {t["label"] for t in json.loads(r.stdout)} == {"rotating", "active-fresh"}
    r = await asyncio.to_thread(cli, env, "token", "rotate", ids["active-stale"], "--grace",
                                "1 hour")
    assert r.returncode == 1 and "--grace" in r.stderr


async def test_prune_reports_then_removes_and_audits(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = _env(redis_url, prefix)
    cfg = load_config(environ=env)
    ids = await seed(cfg)
    client = create_client(cfg.redis)
    try:
        # A token call on the audit stream before the prune: its history must survive.
        await client.xadd(cfg.audit.stream, {"kind": "check", "token_id": ids["revoked-60d"],
                                             "decision": "allow"})
        r = await asyncio.to_thread(cli, env, "token", "prune", "--older-than", "30d")
        assert r.returncode == 0, r.stderr
        assert "Dry run" in r.stdout and "would remove" in r.stdout
        assert ids["revoked-60d"] in r.stdout and ids["expired-40d"] in r.stdout
        for keep in ("revoked-1d", "expired-2d", "rotating", "active-stale"):
            assert ids[keep] not in r.stdout
        assert await client.exists(f"{prefix}token:{ids['revoked-60d']}") == 1  # dry run

        r = await asyncio.to_thread(cli, env, "token", "prune", "--older-than", "30d",
                                    "--apply", "--json")
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["applied"] and {t["id"] for t in rep["tokens"] if t["removed"]} == {
            ids["revoked-60d"], ids["expired-40d"]}
        store = RedisTokenStore(client, prefix)
        for label in ("revoked-60d", "expired-40d"):
            tid = ids[label]
            assert await store.get(tid) is None
            assert not await client.sismember(f"{prefix}tokens", tid)
        # No secret key left pointing at a removed token.
        for key in [k async for k in client.scan_iter(match=f"{prefix}secret:*")]:
            assert _s(await client.get(key)) not in (ids["revoked-60d"], ids["expired-40d"])
        assert len(await store.list()) == len(SEED) - 2
        entries = await client.xrange(cfg.audit.stream)
        fields = [{_s(k): _s(v) for k, v in f.items()} for _, f in entries]
        assert any(f.get("kind") == "check" and f["token_id"] == ids["revoked-60d"]
                   for f in fields)  # history untouched
        pruned = {f["token_id"] for f in fields if f.get("action") == "prune"}
        assert pruned == {ids["revoked-60d"], ids["expired-40d"]}  # every removal audited
        # Nothing older than 30 days is left; 0s catches the recent ones (not the rotating).
        r = await asyncio.to_thread(cli, env, "token", "prune", "--older-than", "30d", "--json")
        assert json.loads(r.stdout)["tokens"] == []
        r = await asyncio.to_thread(cli, env, "token", "prune", "--older-than", "0s", "--json")
        assert {t["id"] for t in json.loads(r.stdout)["tokens"]} == {
            ids["revoked-1d"], ids["expired-2d"]}
        r = await asyncio.to_thread(cli, env, "token", "prune", "--older-than", "30")
        assert r.returncode == 1 and "unit" in r.stderr
    finally:
        await client.aclose()

    token_file = tmp_path / "admin-token"
    token_file.write_text("admin-secret-for-tests-0123456789")
    senv = server_env(redis_url, prefix, token_file)
    async with running_server(senv), grpc.aio.insecure_channel(
        senv["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        dry = await stub.PruneTokens(pb.PruneTokensRequest(older_than_seconds=0),
                                     metadata=auth())
        assert not dry.applied and {t.token.id for t in dry.tokens} == {
            ids["revoked-1d"], ids["expired-2d"]}
        assert not any(t.removed for t in dry.tokens)
        done = await stub.PruneTokens(pb.PruneTokensRequest(older_than_seconds=0, apply=True),
                                      metadata=auth())
        assert done.applied and all(t.removed for t in done.tokens)
        left = await stub.ListTokens(pb.ListTokensRequest(), metadata=auth())
        assert {t.label for t in left.tokens} == {
            "active-fresh", "active-stale", "never-used", "expiring-3d", "expiring-20d",
            "rotating"}
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.PruneTokens(pb.PruneTokensRequest(older_than_seconds=-1),
                                   metadata=auth())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
