"""The admin gRPC API and the CLI's --admin-url mode, through a real server and real Redis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from authz._proto.jira_authz.admin.v1 import admin_pb2 as pb
from authz._proto.jira_authz.admin.v1 import admin_pb2_grpc
from authz.config import load_config
from authz.server import Server

pytestmark = pytest.mark.integration

ADMIN_SECRET = "admin-secret-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(redis_url: str, prefix: str, token_file: Path) -> dict[str, str]:
    return {
        "JIRA_AUTHZ_REDIS_URL": redis_url,
        "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
        "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
        "JIRA_AUTHZ_LISTEN_CHECK": f"127.0.0.1:{free_port()}",
        "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
        "JIRA_AUTHZ_LISTEN_ADMIN": f"127.0.0.1:{free_port()}",
        "JIRA_AUTHZ_LISTEN_METRICS": "",
        "JIRA_AUTHZ_ADMIN_TOKEN_FILE": str(token_file),
    }


@asynccontextmanager
async def running_server(env: dict[str, str]) -> AsyncIterator[Server]:
    server = Server(load_config(environ=env))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


@pytest.fixture
def admin_env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_SECRET + "\n")
    return server_env(redis_url, prefix, token_file)


def auth(secret: str = ADMIN_SECRET) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}"), ("x-jira-authz-actor", "tester")]


async def test_admin_api_refuses_missing_or_wrong_credential(admin_env: dict[str, str]) -> None:
    async with running_server(admin_env), grpc.aio.insecure_channel(
        admin_env["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        for md in ([], auth("wrong-secret-wrong-secret"), [("authorization", ADMIN_SECRET)]):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListTokens(pb.ListTokensRequest(), metadata=md, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.CreateToken(pb.CreateTokenRequest(label="x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await stub.ListTokens(pb.ListTokensRequest(), metadata=auth(), timeout=5)
        assert list(ok.tokens) == []


async def test_admin_api_is_not_served_without_a_credential(redis_url: str, prefix: str) -> None:
    env = server_env(redis_url, prefix, Path("/nonexistent"))
    env["JIRA_AUTHZ_ADMIN_TOKEN_FILE"] = ""
    async with running_server(env) as server:
        assert server.admin is None
        host, _, port = env["JIRA_AUTHZ_LISTEN_ADMIN"].rpartition(":")
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
            pass


async def test_every_admin_method(admin_env: dict[str, str]) -> None:
    async with running_server(admin_env) as server, grpc.aio.insecure_channel(
        admin_env["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        md = auth()
        created = await stub.CreateToken(pb.CreateTokenRequest(
            label="nightly", user="alice", logins=["alice@example.com"],
            limits=["[get].*/rest/api/2/issue/.*"], ips=["10.0.0.0/8"],
        ), metadata=md)
        tid = created.token.id
        assert created.secret.startswith("jat_")
        assert created.token.state == pb.TOKEN_STATE_ACTIVE
        assert created.token.created_by.startswith("tester")

        got = await stub.GetToken(pb.GetTokenRequest(id=tid), metadata=md)
        assert got.label == "nightly" and list(got.limits) == ["[get].*/rest/api/2/issue/.*"]
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetToken(pb.GetTokenRequest(id="000000000000"), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        # Invalid creation is refused with the line number, nothing stored.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.CreateToken(pb.CreateTokenRequest(limits=[".*ok.*", "(?=x)"]), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "limit line 2" in e.value.details()

        # Paging and filters.
        for i in range(5):
            await stub.CreateToken(pb.CreateTokenRequest(label=f"batch-{i}", user="bob"),
                                   metadata=md)
        page1 = await stub.ListTokens(pb.ListTokensRequest(page_size=4), metadata=md)
        assert len(page1.tokens) == 4 and page1.next_page_token
        page2 = await stub.ListTokens(
            pb.ListTokensRequest(page_size=4, page_token=page1.next_page_token), metadata=md)
        assert len(page2.tokens) == 2 and not page2.next_page_token
        ids = [t.id for t in [*page1.tokens, *page2.tokens]]
        assert len(set(ids)) == 6
        bobs = await stub.ListTokens(pb.ListTokensRequest(user="BOB"), metadata=md)
        assert len(bobs.tokens) == 5
        labelled = await stub.ListTokens(pb.ListTokensRequest(label="NIGHT"), metadata=md)
        assert [t.id for t in labelled.tokens] == [tid]

        # Edit: a bad line is refused with its number and nothing changes.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.UpdateToken(pb.UpdateTokenRequest(
                id=tid, label="renamed", replace_limits=True, limits=[".*a.*", "[gte].*"]),
                metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "limit line 2" in e.value.details()
        unchanged = await stub.GetToken(pb.GetTokenRequest(id=tid), metadata=md)
        assert unchanged.label == "nightly"
        edited = await stub.UpdateToken(pb.UpdateTokenRequest(
            id=tid, label="renamed", replace_limits=True,
            limits=["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]), metadata=md)
        assert edited.label == "renamed"
        assert list(edited.limits) == ["[post].*/rest/api/2/issue/KANBAN-100/comment.*"]

        # Test limits without traffic.
        t = await stub.TestLimits(pb.TestLimitsRequest(
            id=tid, method="POST", url="https://j/rest/api/2/issue/KANBAN-100/comment",
            client_ip="10.1.2.3"), metadata=md)
        assert t.allowed and t.matched_line.startswith("[post]")
        t = await stub.TestLimits(pb.TestLimitsRequest(
            id=tid, method="GET", url="https://j/rest/api/2/issue/KANBAN-100/comment",
            client_ip="10.1.2.3"), metadata=md)
        assert not t.allowed and "GET" in t.reason
        # The whole decision, not only the lines: the token's IP list applies too.
        t = await stub.TestLimits(pb.TestLimitsRequest(
            id=tid, method="POST", url="https://j/rest/api/2/issue/KANBAN-100/comment"),
            metadata=md)
        assert not t.allowed and (t.status, t.code) == (403, "ip_not_allowed")

        # Rotate with a grace period: old still active until then, new one active now.
        rot = await stub.RotateToken(pb.RotateTokenRequest(id=tid, grace_seconds=3600),
                                     metadata=md)
        assert rot.secret.startswith("jat_") and rot.secret != created.secret
        assert rot.token.id != tid and list(rot.token.limits) == list(edited.limits)
        assert rot.previous.state == pb.TOKEN_STATE_ROTATING  # works until revoked_at
        assert rot.previous.revoked_at > time.time() + 3000

        # Revoke now.
        rev = await stub.RevokeToken(pb.RevokeTokenRequest(id=rot.token.id), metadata=md)
        assert rev.state == pb.TOKEN_STATE_REVOKED

        # Audit query: admin changes are events too, with the actor.
        audit = await stub.QueryAudit(pb.QueryAuditRequest(token_id=tid), metadata=md)
        actions = {e.fields.get("action") for e in audit.events}
        assert {"create", "update", "rotate"} <= actions
        assert all("tester" in e.fields.get("actor", "") for e in audit.events)
        assert all(created.secret not in json.dumps(dict(e.fields)) for e in audit.events)

        # The servicer never leaks a secret hash through the API.
        assert "secret_hash" not in pb.Token.DESCRIPTOR.fields_by_name
        assert server.admin is not None


EXTENDER_EXPORT = {
    "tokens": [
        {"label": "Token name", "user": "admin", "token": "ip9ul19f8jenb92tji8lo34qt7tb1meo",
         "limitTo": "[post].*/rest/api/2/issue/KANBAN-100/comment.*<br>"
                    ".*/rest/api/2/issue/SCRUM-[1-2]{1}/comment.*",
         "ip": "", "validUntil": 4102444800000, "dateCreated": 1622700718964, "counter": 100},
        {"label": "Token name two", "user": "jankowalski", "token": "okf8a73basc74nasc9n32",
         "limitTo": ".*/rest/api/2/issue.*\n[get].*/rest/api/2/project.*", "ip": "192.168.1.1",
         "validUntil": 0, "dateCreated": 1622700718964, "counter": 123456},
        {"label": "old one", "user": "carol", "token": "zz8a73basc74nasc9n32qq",
         "limitTo": "", "ip": "", "validUntil": 1630476718964, "dateCreated": 1622700718964,
         "counter": 1},
    ],
    "status": "ok",
}


async def test_import_dry_run_apply_idempotent_and_all_or_nothing(
    admin_env: dict[str, str]
) -> None:
    async with running_server(admin_env), grpc.aio.insecure_channel(
        admin_env["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        md = auth()
        data = json.dumps(EXTENDER_EXPORT).encode()
        dry = await stub.ImportTokens(pb.ImportTokensRequest(extender_json=data), metadata=md)
        assert not dry.applied
        assert [t.status for t in dry.tokens] == ["new", "new", "expired"]
        assert not (await stub.ListTokens(pb.ListTokensRequest(), metadata=md)).tokens

        bad = dict(EXTENDER_EXPORT)
        bad["tokens"] = [*EXTENDER_EXPORT["tokens"],
                         {"label": "broken", "user": "x", "token": "abcdefghijklmnop",
                          "limitTo": ".*ok.*<br>.*(?!x)"}]
        refused = await stub.ImportTokens(pb.ImportTokensRequest(
            extender_json=json.dumps(bad).encode(), apply=True), metadata=md)
        assert not refused.applied
        broken = refused.tokens[-1]
        assert broken.status == "invalid" and broken.label == "broken"
        assert any("limit line 2" in p for p in broken.problems)
        assert not (await stub.ListTokens(pb.ListTokensRequest(), metadata=md)).tokens

        applied = await stub.ImportTokens(pb.ImportTokensRequest(extender_json=data, apply=True),
                                          metadata=md)
        assert applied.applied and all(t.id for t in applied.tokens)
        tokens = {t.label: t for t in
                  (await stub.ListTokens(pb.ListTokensRequest(), metadata=md)).tokens}
        assert tokens["Token name"].limits == [
            "[post].*/rest/api/2/issue/KANBAN-100/comment.*",
            ".*/rest/api/2/issue/SCRUM-[1-2]{1}/comment.*",
        ]
        assert tokens["Token name two"].ips == ["192.168.1.1"]
        assert tokens["Token name two"].use_count == 123456
        assert tokens["old one"].state == pb.TOKEN_STATE_EXPIRED

        again = await stub.ImportTokens(pb.ImportTokensRequest(extender_json=data, apply=True),
                                        metadata=md)
        assert [t.status for t in again.tokens] == ["exists", "exists", "exists"]
        assert len((await stub.ListTokens(pb.ListTokensRequest(), metadata=md)).tokens) == 3


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )


async def test_cli_through_the_admin_api(admin_env: dict[str, str], tmp_path: Path) -> None:
    async with running_server(admin_env):
        env = {**os.environ, "JIRA_AUTHZ_ADMIN_TOKEN": ADMIN_SECRET}
        # The CLI must not reach Redis itself in this mode.
        env.pop("JIRA_AUTHZ_REDIS_URL", None)
        remote = ["--admin-url", admin_env["JIRA_AUTHZ_LISTEN_ADMIN"]]

        r = await _acli(env, "token", "create", *remote, "--label", "cli", "--user", "dave",
                        "--limit", "[get].*/rest/api/2/issue/.*", "--json")
        assert r.returncode == 0, r.stderr
        made = json.loads(r.stdout)
        tid, secret = made["id"], made["secret"]

        r = await _acli(env, "token", "list", *remote)
        assert r.returncode == 0 and tid in r.stdout and "dave" in r.stdout
        assert secret not in r.stdout
        r = await _acli(env, "token", "show", *remote, tid, "--json")
        assert json.loads(r.stdout)["limits"] == ["[get].*/rest/api/2/issue/.*"]
        r = await _acli(env, "token", "edit", *remote, tid, "--limit", "[gte].*")
        assert r.returncode == 1 and "limit line 1" in r.stderr and "\n" not in r.stderr.strip()
        r = await _acli(env, "token", "edit", *remote, tid, "--label", "renamed", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["label"] == "renamed"
        r = await _acli(env, "token", "test", *remote, tid, "--method", "GET",
                        "--url", "https://j/rest/api/2/issue/A-1")
        assert r.returncode == 0 and r.stdout.startswith("ALLOW")
        r = await _acli(env, "token", "test", *remote, tid, "--method", "DELETE",
                        "--url", "https://j/rest/api/2/issue/A-1")
        assert r.returncode == 3 and r.stdout.startswith("DENY")
        r = await _acli(env, "token", "snippet", *remote, tid)
        assert r.returncode == 0 and "<TOKEN-SECRET>" in r.stdout and secret not in r.stdout
        assert "curl" in r.stdout and "fetch(" in r.stdout and "requests.get" in r.stdout
        export = tmp_path / "export.json"
        export.write_text(json.dumps(EXTENDER_EXPORT))
        r = await _acli(env, "token", "import", *remote, str(export))
        assert r.returncode == 0 and "Dry run" in r.stdout
        r = await _acli(env, "token", "import", *remote, str(export), "--apply")
        assert r.returncode == 0 and "Imported 3" in r.stdout
        r = await _acli(env, "token", "rotate", *remote, tid, "--json")
        rotated = json.loads(r.stdout)
        assert rotated["previous"]["state"] == "revoked" and rotated["id"] != tid
        r = await _acli(env, "token", "revoke", *remote, rotated["id"])
        assert r.returncode == 0 and "Revoked" in r.stdout
        r = await _acli(env, "audit", *remote, "--token", tid, "--json")
        assert r.returncode == 0
        events = json.loads(r.stdout)  # one JSON document, like every --json
        assert {e["extra"]["action"] for e in events} >= {"create", "update", "rotate"}

        bad_env = {**env, "JIRA_AUTHZ_ADMIN_TOKEN": "not-the-admin-secret-xx"}
        r = await _acli(bad_env, "token", "list", *remote)
        assert r.returncode == 1 and "unauthenticated" in r.stderr
        r = await _acli(env, "token", "show", *remote, "ffffffffffff")
        assert r.returncode == 1 and "no token" in r.stderr and "Traceback" not in r.stderr


async def _acli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the event loop the in-process server runs on."""
    import asyncio

    return await asyncio.to_thread(cli, env, *args)


def test_cli_direct_mode_errors_are_one_line(redis_url: str, prefix: str) -> None:
    env = {**os.environ, "JIRA_AUTHZ_REDIS_URL": redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix}
    r = cli(env, "token", "create", "--expires-at", "yesterday")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--expires-at" in r.stderr
    r = cli(env, "token", "create", "--ip", "10.0.0.300/8", "--limit", "")
    assert r.returncode == 1 and "10.0.0.300/8" in r.stderr and "limit line 1" in r.stderr
    r = cli({**env, "JIRA_AUTHZ_REDIS_URL": "redis://127.0.0.1:1/0"}, "token", "list")
    assert r.returncode == 1 and "cannot reach Redis" in r.stderr
    r = cli(env, "token", "revoke", "abcdefabcdef")
    assert r.returncode == 1 and "no token" in r.stderr
