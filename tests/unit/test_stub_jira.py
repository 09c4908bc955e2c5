"""The stub Jira answers what client libraries call by themselves in Jira's shape, and still
echoes what it received (the e2e tests' proof of what Envoy let through)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from authz.stack import stub_jira
from authz.stack.stub_jira import make_server


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    srv = make_server("127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def call(port: int, method: str, path: str, body: bytes | None = None,
         user: str | None = "alice") -> tuple[int, Any, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"contextUser": user} if user else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    data = json.loads(raw)
    echo = stub_jira.echo_of({k.lower(): v for k, v in resp.getheaders()}, raw)
    conn.close()
    assert resp.getheader("X-Stub-Jira") == "1"
    return resp.status, data, echo


def test_server_info(port: int) -> None:
    status, data, echo = call(port, "GET", "/rest/api/2/serverInfo")
    assert status == 200 and data["versionNumbers"][0] >= 8 and "baseUrl" in data
    assert echo["path"] == "/rest/api/2/serverInfo" and echo["method"] == "GET"


def test_fields_is_an_array_and_its_echo_is_in_a_header(port: int) -> None:
    status, data, echo = call(port, "GET", "/rest/api/2/field")
    assert status == 200 and isinstance(data, list) and {"id", "name"} <= set(data[0])
    assert echo["headers"]["contextuser"] == "alice"


def test_myself_is_the_identity_header_user(port: int) -> None:
    _, data, echo = call(port, "GET", "/rest/api/2/myself", user="bob")
    assert data["name"] == "bob" and echo["headers"]["contextuser"] == "bob"
    # Without an identity header: the plain echo (pass-through requests keep their contract).
    status, data, _ = call(port, "GET", "/rest/api/2/myself", user=None)
    assert status == 200 and "name" not in data and data["path"] == "/rest/api/2/myself"


def test_issue_search_and_comment(port: int) -> None:
    _, issue, _ = call(port, "GET", "/rest/api/2/issue/ABC-12?fields=*all")
    assert issue["key"] == "ABC-12" and issue["fields"]["summary"] and issue["query"]
    _, found, _ = call(port, "GET", "/rest/api/latest/search?jql=project%3DABC")
    assert found["total"] == len(found["issues"]) and found["issues"][0]["key"]
    status, comment, echo = call(port, "POST", "/rest/api/2/issue/ABC-12/comment",
                                 json.dumps({"body": "hello"}).encode())
    assert status == 200 and comment["body"] == "hello"  # Jira's key wins over the echo's
    assert json.loads(echo["body"]) == {"body": "hello"}
    _, listed, _ = call(port, "GET", "/rest/api/2/issue/ABC-12/comment")
    assert listed["comments"] and listed["path"] == "/rest/api/2/issue/ABC-12/comment"


def test_everything_else_is_the_plain_echo(port: int) -> None:
    status, data, _ = call(port, "POST", "/rest/api/2/issue", b'{"fields":{}}')
    assert status == 200 and data["body"] == '{"fields":{}}' and "key" not in data
    status, data, _ = call(port, "GET", "/secure/Dashboard.jspa")
    assert status == 200 and set(data) == {"method", "path", "query", "headers", "body"}


def test_a_large_echo_travels_in_the_body_not_a_header(port: int) -> None:
    """A 70 KB issue update: no header line over 64 KiB (clients refuse those), and the
    echo is still complete."""
    body = json.dumps({"fields": {"description": "x" * 70 * 1024}}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("PUT", "/rest/api/2/issue/ABC-1", body=body,
                 headers={"Content-Type": "application/json", "contextUser": "alice"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    assert all(len(v) <= stub_jira.MAX_ECHO_HEADER for v in hdrs.values())
    echo = stub_jira.echo_of(hdrs, raw)
    assert echo["body"].encode() == body and echo["method"] == "PUT"
