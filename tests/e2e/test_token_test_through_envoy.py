"""Issue 16 item 2, through the real Envoy: each request the old tester called ALLOW gets the
same answer from ``jira-authz token test`` as from Envoy + the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e


def judged(stack: LocalStack, api: Any, token_id: str, path: str, *extra: str) -> dict[str, Any]:
    r = api.run_cli(stack, "token", "test", token_id, "--url", stack.envoy_url + path,
                    "--json", *extra)
    assert r.returncode in (0, 3), r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    assert (r.returncode == 0) == data["allowed"]
    return data


def test_tester_and_envoy_agree_on_the_issues_examples(stack: LocalStack, api: Any,
                                                       tmp_path: Path) -> None:
    issue = "/rest/api/2/issue/A-1"
    revoked = api.create_token(stack, "--user", "alice")
    api.revoke_token(stack, revoked["id"])
    ip = api.create_token(stack, "--user", "alice", "--ip", "10.9.9.0/24")
    plain = api.create_token(stack, "--user", "alice")
    path_only = api.create_token(stack, "--user", "alice", "--limit", "[get]/rest/api/2/issue/.*")
    export = tmp_path / "expired.json"
    export.write_text(json.dumps({"tokens": [
        {"label": "expired", "user": "alice", "token": "expired-imported-t0ken-e2e",
         "limitTo": "", "ip": "", "validUntil": 1630476718964, "dateCreated": 1622700718964,
         "counter": 1}]}))
    r = api.run_cli(stack, "token", "import", str(export), "--apply", "--json")
    assert r.returncode == 0, r.stderr
    expired_id = json.loads(r.stdout)["tokens"][0]["id"]
    cases = [
        (revoked["id"], revoked["secret"], issue, 401, "revoked"),
        (expired_id, "expired-imported-t0ken-e2e", issue, 401, "expired"),
        (ip["id"], ip["secret"], issue, 403, "ip_not_allowed"),
        (plain["id"], plain["secret"], "/secure/Dashboard.jspa", 403, "unsupported_path"),
        (path_only["id"], path_only["secret"], issue, 403, "no_limit_matched"),
    ]
    for token_id, secret, path, status, code in cases:
        reply = api.send(stack, path, [("Authorization", api.basic("alice", secret))])
        assert reply.status == status and not reply.from_jira, (code, reply.status, reply.body)
        t = judged(stack, api, token_id, path)
        assert (t["allowed"], t["status"], t["code"]) == (False, status, code), t
        assert t["reason"] == reply.json()["reason"]
    # And an allowed one: the same user reaches Jira.
    reply = api.send(stack, issue, [("Authorization", api.basic("alice", plain["secret"]))])
    t = judged(stack, api, plain["id"], issue)
    assert reply.status == 200 and t["allowed"]
    assert reply.echo["headers"]["contextuser"] == t["effective_user"] == "alice"
