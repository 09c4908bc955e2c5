"""After a run through the whole stack, no secret is anywhere: every Redis key and value (tokens,
secret index, audit stream, admin events), the server's and Envoy's logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e


def _dump_redis(url: str) -> str:
    """Every key and every value in the database, whatever its type."""
    r = redis.Redis.from_url(url, decode_responses=False)
    out: list[str] = []
    try:
        for key in r.scan_iter(count=1000):
            kind = r.type(key).decode()
            if kind == "string":
                val: Any = r.get(key)
            elif kind == "hash":
                val = r.hgetall(key)
            elif kind == "set":
                val = sorted(r.smembers(key))
            elif kind == "list":
                val = r.lrange(key, 0, -1)
            elif kind == "zset":
                val = r.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                val = r.xrange(key)
            else:
                val = f"<{kind}>"
            out.append(repr(key) + " " + repr(val))
    finally:
        r.close()
    return "\n".join(out)


def test_no_secret_in_redis_or_logs_after_a_run(
    stack: LocalStack, api: Any, tmp_path: Path
) -> None:
    secrets: list[str] = []
    made = api.create_token(stack, "--user", "alice", "--limit", "[get].*/rest/api/2/issue/.*")
    secrets.append(made["secret"])
    imported = "imported-extender-secret-0123456789"
    api.create_token(stack, "--user", "bob", "--secret", imported)
    secrets.append(imported)
    unbound = api.create_token(stack, "--any-user")
    secrets.append(unbound["secret"])

    for secret, login in ((made["secret"], "alice"), (imported, "bob"),
                          (unbound["secret"], "carol")):
        auth = ("Authorization", api.basic(login, secret))
        api.send(stack, "/rest/api/2/issue/A-1", [auth])
        api.send(stack, f"/rest/api/2/issue/A-1?token={secret}", [auth])
        api.send(stack, "/rest/api/2/issue/A-1", [auth, ("User-Agent", f"script {secret}")])
        api.send(stack, "/rest/api/2/issue/A-1", [("Authorization", api.basic("mallory", secret))])
        api.send(stack, "/rest/api/2/issue/A-1", [("Authorization", f"Bearer {secret}")])
        api.send(stack, "/rest/api/2/project/P", [auth], method="DELETE")
        api.send(stack, "/rest/api/2/issue", [auth, ("Content-Type", "application/json")],
                 method="POST", body=json.dumps({"secret": secret}).encode())
    rotated = json.loads(api.run_cli(stack, "token", "rotate", made["id"], "--json").stdout)
    secrets.append(rotated["secret"])
    api.send(stack, "/rest/api/2/issue/A-1",
             [("Authorization", api.basic("alice", rotated["secret"]))])
    api.revoke_token(stack, rotated["id"])
    listed = api.run_cli(stack, "token", "list", "--json").stdout
    audit = api.run_cli(stack, "audit", "--json", "--limit", "1000").stdout
    assert len(json.loads(audit)) >= 20  # the calls above were audited

    dump = _dump_redis(stack.redis_url)
    assert "secret:" in dump and "audit" in dump  # the scan saw the real keys
    # The stub Jira is the upstream: a client that puts its secret in a query string sends it to
    # Jira by its own choice; everything of ours (authz, Envoy, Redis) must not keep it.
    logs = {name: Path(p).read_text(errors="replace") for name, p in stack.logs.items()
            if name != "stub-jira"}
    assert {"authz", "envoy"} <= set(logs), set(logs)

    places = {"redis": dump, "token list": listed, "audit query": audit, **logs}
    for secret in secrets:
        for where, text in places.items():
            for fragment in (secret, secret[-16:]):
                assert fragment not in text, f"secret fragment in {where}"
