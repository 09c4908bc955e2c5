"""The CLI against a real Redis (issue 16 items 3, 4, 7): lint warnings where lines are
written (create, edit, import), one --json convention, snippet --json, the store said out
loud when it was found rather than given, and the local stack's state file used by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authz.config import ENV_PREFIX
from authz.stack import state as stack_state

pytestmark = pytest.mark.integration

NEVER = "[get]/rest/api/2/issue/.*"
WIDE = ".*/rest/api/2/issue/ALLOWED-1.*"


def cli(env: dict[str, str], *args: str, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    e.update({f"{ENV_PREFIX}REDIS_URL": redis_url, f"{ENV_PREFIX}REDIS_KEY_PREFIX": prefix,
              f"{ENV_PREFIX}AUDIT_STREAM": prefix + "audit",
              stack_state.ENV_STACK_DIR: str(tmp_path / "none")})
    return e


def test_lint_warnings_on_create_edit_and_import(env: dict[str, str], tmp_path: Path) -> None:
    r = cli(env, "token", "create", "--user", "alice", "--limit", NEVER, "--limit", WIDE,
            "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert len(made["warnings"]) == 2
    assert "line 1" in made["warnings"][0] and "can never match" in made["warnings"][0]
    assert "line 2" in made["warnings"][1] and "ALLOWED-10" in made["warnings"][1]
    assert r.stderr.count("warning: limit line") == 2
    r = cli(env, "token", "edit", made["id"], "--limit", ".*/rest/api/2/issue/A-1(/.*)?",
            "--limit", "a", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["warnings"][0].startswith("line 2: ")
    assert "warning: limit line 2" in r.stderr
    r = cli(env, "token", "edit", made["id"], "--limit", ".*[Foo::a==b]")
    assert r.returncode == 1 and "unknown clause" in r.stderr
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"tokens": [
        {"label": "old style", "user": "carol", "token": "extender-style-secret-0001",
         "limitTo": "[get]/rest/api/2/project.*<br>.*/rest/api/2/myself", "ip": "",
         "validUntil": None, "dateCreated": 1622700718964, "counter": 0}]}))
    r = cli(env, "token", "import", str(export), "--json")
    assert r.returncode == 0, r.stderr
    item = json.loads(r.stdout)["tokens"][0]
    assert len(item["warnings"]) == 1 and item["warnings"][0].startswith("line 1: ")
    assert "token #1 (old style): limit line 1" in r.stderr


def test_json_is_one_document_everywhere(env: dict[str, str]) -> None:
    made = json.loads(cli(env, "token", "create", "--user", "dave", "--json").stdout)
    for args in (("token", "list"), ("token", "show", made["id"]), ("audit",),
                 ("token", "snippet", made["id"])):
        r = cli(env, *args, "--json")
        assert r.returncode == 0, (args, r.stderr)
        doc: Any = json.loads(r.stdout)  # one document: a second one would not parse
        assert doc, args
    snip = json.loads(cli(env, "token", "snippet", made["id"], "--json").stdout)
    assert snip["id"] == made["id"] and "<TOKEN-SECRET>" in snip["curl"]
    assert made["secret"] not in json.dumps(snip)
    assert isinstance(json.loads(cli(env, "audit", "--json").stdout), list)


def test_cli_finds_a_running_stack_and_says_so(env: dict[str, str], redis_url: str,
                                               prefix: str, tmp_path: Path) -> None:
    work = tmp_path / ".local-stack"
    work.mkdir()
    stack_state.write(work, stack_state.StackState(
        pid=os.getpid(), redis_url=redis_url, key_prefix=prefix, audit_stream=prefix + "audit",
        jira_url="http://127.0.0.1:8123", admin_url="grpc://127.0.0.1:1",
        admin_token_file=str(work / "admin-token"), check_addr="127.0.0.1:2",
        metrics_url="http://127.0.0.1:3/metrics"))
    made = json.loads(cli(env, "token", "create", "--user", "erin", "--json").stdout)
    found = {k: v for k, v in env.items() if k != f"{ENV_PREFIX}REDIS_URL"}
    found.pop(stack_state.ENV_STACK_DIR)
    r = cli(found, "token", "list", cwd=tmp_path)
    assert r.returncode == 0 and made["id"] in r.stdout
    assert r.stderr.strip() == (f"jira-authz: using the local stack in .local-stack "
                                f"(Redis {redis_url})")
    # The snippets point at the stack's Envoy without being told.
    r = cli(found, "token", "snippet", made["id"], cwd=tmp_path)
    assert "http://127.0.0.1:8123/rest/api/2/myself" in r.stdout
    # An explicit store is used without comment.
    r = cli(env, "token", "list", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == ""
