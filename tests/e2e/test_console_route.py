"""The console's route on every shipped Envoy config, through a real Envoy: no Check runs on it
(the authz cluster is dead, yet the request is answered), and the identity header and
Authorization never reach the console; other paths still need the (dead) Check."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_http import envoy_or_skip, stub_and_envoy

from authz.stack import envoy_config
from authz.stack.processes import (
    free_port,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[envoy_config.SIDECAR, envoy_config.GATEWAY])
def envoy_port(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    envoy_bin = envoy_or_skip()
    work: Path = tmp_path_factory.mktemp("console-route")
    echo, port, admin = free_port(), free_port(), free_port()
    path = envoy_config.local_config(
        name=request.param, listener_port=port, admin_port=admin, path=work / "envoy.yaml",
        # The console's cluster points at the echo server, so what reaches "the console" shows.
        # The Check's HTTP/1.1 endpoint is dead (behind the shipped bridge, kept as is).
        clusters={"jira": ("127.0.0.1", echo),
                  envoy_config.CHECK_CLUSTER: ("127.0.0.1", free_port()),
                  envoy_config.CONSOLE_CLUSTER: ("127.0.0.1", echo)})
    with stub_and_envoy(envoy_bin, path, work, stub_port=echo, admin_port=admin,
                        listener_port=port):
        yield port


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("identity", ["contextUser", "CONTEXTUSER", "contextuser"])
def test_console_route_has_no_check_and_strips_identity(envoy_port: int, identity: str) -> None:
    status, headers, body = _get(envoy_port, "/jira-authz/login", {
        identity: "admin", "Authorization": "Basic YWRtaW46YWRtaW4=", "X-Test": "1"})
    assert status == 200, body  # the Check would have failed (503): none ran
    echo = json.loads(body)
    assert echo["path"] == "/jira-authz/login"
    assert echo["headers"]["x-test"] == "1"
    assert "contextuser" not in echo["headers"]
    assert "authorization" not in echo["headers"]
    # The affinity cookie that pins a browser to one console pod is set by Envoy.
    assert "jira_authz_affinity=" in headers.get("set-cookie", "")


TOKEN_CALL = {"Authorization": "Basic YWxpY2U6eA=="}


def test_other_paths_still_need_the_check(envoy_port: int) -> None:
    # With credentials (only those reach the Check since issue 15; authz is down here: 503).
    status, headers, _ = _get(envoy_port, "/rest/api/2/myself", TOKEN_CALL)
    assert status == 503 and "x-stub-jira" not in headers
    # A look-alike of the prefix is not the console.
    status, headers, _ = _get(envoy_port, "/jira-authzX/login", TOKEN_CALL)
    assert status == 503 and "x-stub-jira" not in headers
    # Normalisation runs first: a dot-segment way out of the prefix is not the console route.
    status, headers, _ = _get(envoy_port, "/jira-authz/../rest/api/2/myself", TOKEN_CALL)
    assert status == 503 and "x-stub-jira" not in headers
