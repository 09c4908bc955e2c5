"""Token policy (issue 17): every rule refused with its name through the CLI, the admin API and
import, against a real Redis; rotation is held to the same rules; import stays all-or-nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_admin_api import auth, cli, running_server, server_env

from authz._proto.jira_authz.admin.v1 import admin_pb2 as pb
from authz._proto.jira_authz.admin.v1 import admin_pb2_grpc
from authz.adapters.redis_conn import create_client
from authz.admin.operations import AdminError, TokenAdmin
from authz.config import load_config
from authz.domain.issuing import TokenRequest

pytestmark = pytest.mark.integration

DAY = 86400.0
ADMIN_SECRET = "admin-secret-for-tests-0123456789"

NEVER_MATCHES = "[get]/rest/api/2/issue/.*"  # lint: can never match scheme://host/path
WIDENING = ".*/rest/api/2/issue/ALLOWED-1.*"  # lint: also allows ALLOWED-10

# (rule, policy env, CLI args, CreateTokenRequest fields, extender export entry)
RULES: list[tuple[str, dict[str, str], list[str], dict[str, Any], dict[str, Any]]] = [
    ("any_user", {"ALLOW_UNBOUND": "true"}, ["--label", "x"], {"label": "x"}, {}),
    ("policy.allow_unbound", {}, ["--any-user"], {"any_user": True},
     {"user": ""}),
    ("policy.require_expiry", {"REQUIRE_EXPIRY": "true"}, ["--user", "ann"], {"user": "ann"},
     {"user": "ann", "validUntil": None}),
    ("policy.max_lifetime_days", {"MAX_LIFETIME_DAYS": "7"},
     ["--user", "ann", "--expires-in", "30d"], {"user": "ann", "expires_at": "+30d"},
     {"user": "ann", "validUntil": "+30d"}),
    ("policy.allow_unrestricted", {"ALLOW_UNRESTRICTED": "false"}, ["--user", "ann"],
     {"user": "ann"}, {"user": "ann", "limitTo": ""}),
    ("policy.max_active_tokens_per_user", {"MAX_ACTIVE_TOKENS_PER_USER": "1"},
     ["--user", "Ann"], {"user": "ANN"}, {"user": "ann"}),
    ("policy.refuse_limit_warnings", {"REFUSE_LIMIT_WARNINGS": "true"},
     ["--user", "ann", "--limit", NEVER_MATCHES], {"user": "ann", "limits": [NEVER_MATCHES]},
     {"user": "ann", "limitTo": NEVER_MATCHES}),
]
IDS = [r[0] for r in RULES]


def _env(redis_url: str, prefix: str, policy: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
    env.update({"JIRA_AUTHZ_REDIS_URL": redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
                "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit"})
    env.update({f"JIRA_AUTHZ_POLICY_{k}": v for k, v in policy.items()})
    return env


async def _seed_for(rule: str, redis_url: str, prefix: str) -> None:
    """The cap rule needs one usable token of the user already (created under no cap)."""
    if rule != "policy.max_active_tokens_per_user":
        return
    cfg = load_config(environ=_env(redis_url, prefix, {}))
    client = create_client(cfg.redis)
    try:
        admin = TokenAdmin(client, cfg, actor="seed")
        await admin.create(TokenRequest(user="ann", label="first"))
        old, _ = await admin.create(TokenRequest(user="ann", label="revoked one"))
        await admin.revoke(old.id)  # revoked tokens do not count
    finally:
        await client.aclose()


def _when(v: Any) -> Any:
    return time.time() + 30 * DAY if v == "+30d" else v


@pytest.mark.parametrize(("rule", "policy", "args", "_api", "_imp"), RULES, ids=IDS)
async def test_cli_refuses_naming_the_rule(
    redis_url: str, prefix: str, rule: str, policy: dict[str, str], args: list[str],
    _api: dict[str, Any], _imp: dict[str, Any],
) -> None:
    await _seed_for(rule, redis_url, prefix)
    env = _env(redis_url, prefix, policy)
    r = await asyncio.to_thread(cli, env, "token", "create", *args)
    assert r.returncode == 1, r.stdout
    assert f"{rule}:" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1  # one line
    assert "Secret" not in r.stdout


@pytest.mark.parametrize(("rule", "policy", "_cli", "fields", "_imp"), RULES, ids=IDS)
async def test_admin_api_refuses_naming_the_rule(
    redis_url: str, prefix: str, tmp_path: Path, rule: str, policy: dict[str, str],
    _cli: list[str], fields: dict[str, Any], _imp: dict[str, Any],
) -> None:
    await _seed_for(rule, redis_url, prefix)
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_SECRET)
    env = server_env(redis_url, prefix, token_file)
    env.update({f"JIRA_AUTHZ_POLICY_{k}": v for k, v in policy.items()})
    async with running_server(env), grpc.aio.insecure_channel(
        env["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        req = pb.CreateTokenRequest(**{k: _when(v) for k, v in fields.items()})
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.CreateToken(req, metadata=auth(), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{rule}:" in (e.value.details() or "")


def _export(entry: dict[str, Any]) -> bytes:
    base = {"label": "imported", "user": "ann", "token": "extender-secret-0123456789abcdef",
            "limitTo": ".*/rest/api/2/myself", "validUntil": "+10d", "dateCreated": 0}
    good = {"label": "innocent", "user": "zed", "token": "another-extender-secret-0123456",
            "limitTo": ".*/rest/api/2/myself", "validUntil": "+3d"}
    out = []
    for e in ({**base, **entry}, good):
        e = dict(e)
        for k in ("validUntil",):
            v = e.get(k)
            if isinstance(v, str) and v.startswith("+"):
                e[k] = int((time.time() + float(v[1:-1]) * DAY) * 1000)
        out.append(e)
    return json.dumps({"tokens": out}).encode()


@pytest.mark.parametrize(("rule", "policy", "_cli", "_api", "entry"), RULES[1:], ids=IDS[1:])
async def test_import_reports_per_token_and_stays_all_or_nothing(
    redis_url: str, prefix: str, tmp_path: Path, rule: str, policy: dict[str, str],
    _cli: list[str], _api: dict[str, Any], entry: dict[str, Any],
) -> None:
    """Through the CLI (direct Redis) and the admin API; an unbound Extender token is unbound
    on purpose, so only policy.allow_unbound decides for it."""
    await _seed_for(rule, redis_url, prefix)
    data = _export(entry)
    path = tmp_path / "export.json"
    path.write_bytes(data)
    env = _env(redis_url, prefix, policy)
    r = await asyncio.to_thread(cli, env, "token", "import", str(path), "--apply", "--json")
    assert r.returncode == 1, r.stdout
    report = json.loads(r.stdout)
    assert report["applied"] is False
    first, second = report["tokens"]
    assert first["status"] == "invalid" and any(p.startswith(f"{rule}:")
                                                for p in first["problems"]), first
    assert second["status"] == "new" and second["problems"] == []

    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_SECRET)
    senv = server_env(redis_url, prefix, token_file)
    senv.update({f"JIRA_AUTHZ_POLICY_{k}": v for k, v in policy.items()})
    async with running_server(senv), grpc.aio.insecure_channel(
        senv["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        rep = await stub.ImportTokens(pb.ImportTokensRequest(extender_json=data, apply=True),
                                      metadata=auth(), timeout=10)
        assert not rep.applied
        assert [t.status for t in rep.tokens] == ["invalid", "new"]
        assert any(p.startswith(f"{rule}:") for p in rep.tokens[0].problems)
        listed = await stub.ListTokens(pb.ListTokensRequest(user="zed"), metadata=auth())
        assert list(listed.tokens) == []  # nothing half-imported


async def test_what_the_policy_allows_goes_through_with_a_warning(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    strict = {"REQUIRE_EXPIRY": "true", "MAX_LIFETIME_DAYS": "30", "ALLOW_UNRESTRICTED": "false",
              "MAX_ACTIVE_TOKENS_PER_USER": "2", "ALLOW_UNBOUND": "true"}
    env = _env(redis_url, prefix, strict)
    ok = ["--expires-in", "29d", "--limit", "[get].*/rest/api/2/myself", "--json"]
    r = await asyncio.to_thread(cli, env, "token", "create", "--user", "bo", *ok)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["warnings"] == [] and "warning" not in r.stderr
    r = await asyncio.to_thread(cli, env, "token", "create", "--any-user", *ok)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["user"] is None and "ANY Jira login" in made["warnings"][0]
    assert "warning" in r.stderr and "ANY Jira login" in r.stderr
    r = await asyncio.to_thread(cli, env, "token", "create", "--any-user", "--user", "x", *ok)
    assert r.returncode == 1 and "any_user:" in r.stderr
    r = await asyncio.to_thread(cli, env, "token", "create", "--user", "bo", "--expires-in",
                                "30", "--limit", "x")
    assert r.returncode == 1 and "--expires-in" in r.stderr and "unit" in r.stderr

    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_SECRET)
    senv = server_env(redis_url, prefix, token_file)
    senv.update({f"JIRA_AUTHZ_POLICY_{k}": v for k, v in strict.items()})
    async with running_server(senv), grpc.aio.insecure_channel(
        senv["JIRA_AUTHZ_LISTEN_ADMIN"]
    ) as ch:
        stub = admin_pb2_grpc.TokenAdminStub(ch)
        made_pb = await stub.CreateToken(pb.CreateTokenRequest(
            any_user=True, expires_at=time.time() + DAY, limits=[".*/rest/api/2/myself"]),
            metadata=auth(), timeout=10)
        assert made_pb.token.user == "" and "ANY Jira login" in made_pb.warnings[0]
        # The CLI through the admin API: the server's policy, not the CLI's, decides.
        renv = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
        renv["JIRA_AUTHZ_ADMIN_TOKEN"] = ADMIN_SECRET
        remote = ["--admin-url", senv["JIRA_AUTHZ_LISTEN_ADMIN"]]
        r = await asyncio.to_thread(cli, renv, "token", "create", *remote, "--user", "bo")
        assert r.returncode == 1 and "policy.require_expiry:" in r.stderr, r.stderr
        r = await asyncio.to_thread(cli, renv, "token", "create", *remote, "--any-user", *ok)
        assert r.returncode == 0, r.stderr
        assert "ANY Jira login" in r.stderr and json.loads(r.stdout)["user"] is None
        r = await asyncio.to_thread(cli, renv, "token", "create", *remote, "--user", "BO", *ok)
        assert r.returncode == 0, r.stderr  # bo's second usable token: the maximum
        r = await asyncio.to_thread(cli, renv, "token", "create", *remote, "--user", "bo", *ok)
        assert r.returncode == 1 and "policy.max_active_tokens_per_user:" in r.stderr


async def test_rotation_is_held_to_the_policy(redis_url: str, prefix: str) -> None:
    lax = load_config(environ=_env(redis_url, prefix, {"ALLOW_UNBOUND": "true"}))
    client = create_client(lax.redis)
    try:
        admin = TokenAdmin(client, lax, actor="t")
        forever, _ = await admin.create(TokenRequest(user="cy"))
        unbound, _ = await admin.create(TokenRequest(any_user=True))
        strict = load_config(environ=_env(redis_url, prefix, {"REQUIRE_EXPIRY": "true"}))
        with pytest.raises(AdminError) as e:
            await TokenAdmin(client, strict, actor="t").rotate(forever.id)
        assert "policy.require_expiry:" in str(e.value)
        default = load_config(environ=_env(redis_url, prefix, {}))
        with pytest.raises(AdminError) as e:
            await TokenAdmin(client, default, actor="t").rotate(unbound.id)
        assert "policy.allow_unbound:" in str(e.value)
        # The replaced token does not count against the cap, even while it is rotating.
        capped = load_config(environ=_env(redis_url, prefix, {"MAX_ACTIVE_TOKENS_PER_USER": "1"}))
        capped_admin = TokenAdmin(client, capped, actor="t")
        new, _, old = await capped_admin.rotate(forever.id, grace_seconds=3600)
        assert old.state(time.time()) == "rotating" and new.state(time.time()) == "active"
        with pytest.raises(AdminError) as e:
            await capped_admin.create(TokenRequest(user="cy"))
        assert "policy.max_active_tokens_per_user:" in str(e.value) and "2 usable" in str(e.value)
        with pytest.raises(AdminError) as e:
            await capped_admin.rotate(old.id)
        assert e.value.code == "failed_precondition" and "rotating" in str(e.value)
    finally:
        await client.aclose()


@pytest.mark.parametrize("line", [NEVER_MATCHES, WIDENING])
async def test_edits_are_held_to_the_line_rules(redis_url: str, prefix: str, line: str) -> None:
    """Editing limit lines meets the same policy as creating them: lines lint warns about
    are refused when policy.refuse_limit_warnings is set, and so is removing every line
    when policy.allow_unrestricted is false (through operations and the CLI)."""
    env = _env(redis_url, prefix, {"REFUSE_LIMIT_WARNINGS": "true",
                                   "ALLOW_UNRESTRICTED": "false"})
    cfg = load_config(environ=env)
    client = create_client(cfg.redis)
    try:
        admin = TokenAdmin(client, cfg, actor="test")
        token, _ = await admin.create(TokenRequest(
            user="ann", label="ok", limits=[".*/rest/api/2/issue/ALLOWED-1"]))
        for lines, rule in (([line], "policy.refuse_limit_warnings"),
                            ([], "policy.allow_unrestricted")):
            with pytest.raises(AdminError) as e:
                await admin.update(token.id, limits=lines)
            assert rule in str(e.value)
        assert (await admin.get(token.id)).limits == (".*/rest/api/2/issue/ALLOWED-1",)
    finally:
        await client.aclose()
    r = await asyncio.to_thread(cli, env, "token", "edit", token.id, "--limit", line)
    assert r.returncode == 1 and "policy.refuse_limit_warnings" in r.stderr, r.stderr
