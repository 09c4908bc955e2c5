"""End-to-end fixtures: the real Envoy (shipped sidecar.yaml), jira-authz, Redis and a stub Jira.

Tokens are made with the real CLI (``python -m authz token create --json``) against the stack's
Redis, so the tests cover the same path an administrator uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from authz.config import ENV_PREFIX
from authz.stack.local import LocalStack
from authz.stack.processes import StackError, find_envoy, find_redis_server, tail

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import envoy_http
from envoy_http import Reply, basic

__all__ = ["Reply", "basic"]


def _require_binaries() -> None:
    try:
        find_envoy()
        find_redis_server()
    except StackError as e:
        pytest.skip(f"e2e needs Envoy and a Redis server: {e}")


def make_stack(workdir: Path, **kwargs: Any) -> LocalStack:
    """A stack with its own key prefix and none of the developer's JIRA_AUTHZ_* settings."""
    _require_binaries()
    return LocalStack(
        key_prefix=f"e2e-{uuid.uuid4().hex[:8]}:",
        workdir=workdir,
        inherit_config_env=False,
        **kwargs,
    )


def _dump_logs_on_failure(request: pytest.FixtureRequest, stack: LocalStack, failed: int) -> None:
    if request.session.testsfailed > failed:
        for name, path in stack.logs.items():
            print(f"----- {name} ({path}) -----\n{tail(Path(path), 60)}")


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """One stack per test module; tests that stop parts of it use ``fault_stack``."""
    s = make_stack(tmp_path_factory.mktemp("stack"))
    failed = request.session.testsfailed
    with s:
        yield s
        _dump_logs_on_failure(request, s, failed)


@pytest.fixture(scope="module")
def workers_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A stack whose server runs ``--workers 2`` (Envoy: one endpoint per worker port)."""
    s = make_stack(tmp_path_factory.mktemp("workers-stack"), workers=2)
    failed = request.session.testsfailed
    with s:
        yield s
        _dump_logs_on_failure(request, s, failed)


@pytest.fixture
def fault_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A private stack for tests that stop and restart Redis or the server."""
    s = make_stack(tmp_path_factory.mktemp("fault-stack"))
    failed = request.session.testsfailed
    with s:
        yield s
        _dump_logs_on_failure(request, s, failed)


# --- CLI --------------------------------------------------------------------------------------


def _cli_env(stack: LocalStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(stack.client_env())
    # These stacks exercise unbound tokens too (policy.allow_unbound is off by default).
    env["JIRA_AUTHZ_POLICY_ALLOW_UNBOUND"] = "true"
    return env


def run_cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        env=_cli_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_token(stack: LocalStack, *args: str) -> dict[str, Any]:
    """``jira-authz token create --json ARGS`` against the stack; the parsed JSON (id, secret)."""
    res = run_cli(stack, "token", "create", "--json", *args)
    assert res.returncode == 0, f"token create {args} failed: {res.stderr}"
    data: dict[str, Any] = json.loads(res.stdout)
    assert data["id"] and data["secret"], data
    return data


def revoke_token(stack: LocalStack, token_id: str) -> None:
    res = run_cli(stack, "token", "revoke", token_id)
    assert res.returncode == 0, f"token revoke {token_id} failed: {res.stderr}"


# --- HTTP -------------------------------------------------------------------------------------


def send(
    stack: LocalStack,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> Reply:
    """One request through the stack's Envoy with the path and headers sent exactly as given."""
    return envoy_http.send(stack.envoy_port, path, headers, method=method, body=body)


class Api:
    """The helpers above, handed to tests as the ``api`` fixture.

    Test modules cannot reliably ``import conftest`` (several test directories have one), so
    they reach these through a fixture instead.
    """

    create_token = staticmethod(create_token)
    revoke_token = staticmethod(revoke_token)
    run_cli = staticmethod(run_cli)
    send = staticmethod(send)
    basic = staticmethod(basic)


@pytest.fixture(scope="session")
def api() -> type[Api]:
    return Api
