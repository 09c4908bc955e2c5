"""Real Jira clients against the local stack (issue 16 item 1 and 5): the ``jira`` and
``atlassian-python-api`` libraries with their default constructors, and the printed snippets
(Node fetch, Python requests, curl) run as printed. Allowed calls reach Jira as the right user;
on a deny the library's own error carries our reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authz.domain import token_format
from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e

jira = pytest.importorskip("jira")
atlassian = pytest.importorskip("atlassian")

# What the jira library calls by itself: serverInfo (constructor), field (search_issues).
CLIENT_LINES = [
    "[get].*/rest/api/2/(serverInfo|myself|field|search)",
    "[get].*/rest/api/2/issue/[A-Z]+-[0-9]+",
    "[post].*/rest/api/2/issue/[A-Z]+-[0-9]+/comment",
]


def limits(*lines: str) -> list[str]:
    return [a for line in lines for a in ("--limit", line)]


@pytest.fixture(scope="module")
def client_token(stack: LocalStack, api: Any) -> dict[str, Any]:
    return api.create_token(stack, "--label", "clients", "--user", "alice", *limits(*CLIENT_LINES))


def test_jira_library_default_constructor_and_calls_run_as_alice(
        stack: LocalStack, client_token: dict[str, Any]) -> None:
    j = jira.JIRA(stack.envoy_url, basic_auth=("alice", client_token["secret"]))
    assert j.server_info()["versionNumbers"]
    assert j.myself()["name"] == "alice"
    issue = j.issue("AAA-1")
    assert issue.key == "AAA-1" and issue.raw["headers"]["contextuser"] == "alice"
    assert "authorization" not in issue.raw["headers"]
    assert [i.key for i in j.search_issues("project = AAA")] == ["AAA-1"]
    comment = j.add_comment("AAA-1", "from the jira library")
    assert comment.body == "from the jira library"
    assert comment.raw["headers"]["contextuser"] == "alice"


def _jira_error(fn: Any) -> Any:
    with pytest.raises(jira.JIRAError) as e:
        fn()
    return e.value


def test_jira_library_errors_carry_the_reason(stack: LocalStack, api: Any,
                                              client_token: dict[str, Any]) -> None:
    secret = client_token["secret"]
    # Wrong login: the constructor's serverInfo call is refused with 401.
    e = _jira_error(lambda: jira.JIRA(stack.envoy_url, basic_auth=("bob", secret)))
    assert e.status_code == 401 and e.text == "API token does not belong to this login"
    # 403 from a line that does not allow the call (DELETE of an issue).
    j = jira.JIRA(stack.envoy_url, basic_auth=("alice", secret))
    e = _jira_error(lambda: j.issue("AAA-1").delete())
    assert e.status_code == 403 and "is not allowed by" in e.text
    # A token for issues only: the default constructor itself is refused, and says why.
    only = api.create_token(stack, "--user", "alice", *limits("[get].*/rest/api/2/issue/.*"))
    e = _jira_error(lambda: jira.JIRA(stack.envoy_url, basic_auth=("alice", only["secret"])))
    assert e.status_code == 403 and e.text == "URL matches no limit line"
    api.revoke_token(stack, only["id"])
    e = _jira_error(lambda: jira.JIRA(stack.envoy_url, basic_auth=("alice", only["secret"]),
                                      get_server_info=False).issue("AAA-1"))
    assert e.status_code == 401 and e.text == "API token has been revoked"


def test_atlassian_library_calls_and_errors(stack: LocalStack, api: Any,
                                            client_token: dict[str, Any]) -> None:
    from requests import HTTPError

    a = atlassian.Jira(url=stack.envoy_url, username="alice",
                       password=client_token["secret"])
    assert a.myself()["name"] == "alice"
    got = a.issue("AAA-1")
    assert got["key"] == "AAA-1" and got["headers"]["contextuser"] == "alice"
    assert a.jql("project = AAA")["total"] == 1
    with pytest.raises(HTTPError) as e:
        a.delete_issue("AAA-1")
    assert e.value.response.status_code == 403 and "is not allowed by" in str(e.value)
    wrong = atlassian.Jira(url=stack.envoy_url, username="bob",
                           password=client_token["secret"])
    with pytest.raises(HTTPError) as e:
        wrong.issue("AAA-1")
    assert e.value.response.status_code == 401
    assert str(e.value) == "API token does not belong to this login"


def test_libraries_show_the_reason_of_a_503(fault_stack: LocalStack) -> None:
    from requests import HTTPError

    fault_stack.stop_redis()
    unknown = token_format.generate_secret()  # well-formed, never cached: needs the store
    e = _jira_error(lambda: jira.JIRA(fault_stack.envoy_url, basic_auth=("alice", unknown)))
    assert e.status_code == 503 and "unavailable" in e.text
    with pytest.raises(HTTPError) as he:
        atlassian.Jira(url=fault_stack.envoy_url, username="alice",
                       password=unknown).issue("AAA-1")
    assert he.value.response.status_code == 503 and "unavailable" in str(he.value)


# --- snippets, run as printed ------------------------------------------------------------------


def snippet(stack: LocalStack, api: Any, token: dict[str, Any]) -> dict[str, Any]:
    r = api.run_cli(stack, "token", "snippet", token["id"], "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    # The stack told the server its base URL; snippets of the CLI in this env use --base-url
    # from the stack file only when run in the stack's directory, so check the default here.
    return data


def fill(text: str, secret: str, stack: LocalStack, base: str) -> str:
    return text.replace("<TOKEN-SECRET>", secret).replace(base, stack.envoy_url)


@pytest.fixture(scope="module")
def readme_token(stack: LocalStack, api: Any) -> dict[str, Any]:
    """The README's token: issues only. Its snippets must call an issue URL, not /myself."""
    return api.create_token(stack, "--label", "snippets", "--user", "alice",
                            *limits("[get].*/rest/api/2/issue/.*"))


def run_snippets(stack: LocalStack, api: Any, token: dict[str, Any], tmp_path: Path
                 ) -> dict[str, subprocess.CompletedProcess[str]]:
    data = snippet(stack, api, token)
    base = data["base_url"]
    assert data["url"].endswith("/rest/api/2/issue/AAA-1"), data
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    js = tmp_path / "first-call.mjs"
    js.write_text(fill(data["javascript"], token["secret"], stack, base))
    if shutil.which("node"):
        out["node"] = subprocess.run(["node", str(js)], capture_output=True, text=True,
                                     timeout=60)
    py = tmp_path / "first_call.py"
    py.write_text(fill(data["python"], token["secret"], stack, base))
    out["python"] = subprocess.run([sys.executable, str(py)], capture_output=True, text=True,
                                   timeout=60)
    curl_lines = fill(data["curl"], token["secret"], stack, base).splitlines()
    out["curl"] = subprocess.run(["bash", "-c", curl_lines[0]], capture_output=True, text=True,
                                 timeout=60)
    out["curl bearer"] = subprocess.run(["bash", "-c", curl_lines[1]], capture_output=True,
                                        text=True, timeout=60)
    return out


def test_snippets_work_as_printed_and_fail_on_deny(stack: LocalStack, api: Any,
                                                  readme_token: dict[str, Any],
                                                  tmp_path: Path) -> None:
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    ok = run_snippets(stack, api, readme_token, tmp_path)
    for lang, r in ok.items():
        assert r.returncode == 0, (lang, r.stdout, r.stderr)
        assert "'contextuser': 'alice'" in r.stdout or '"contextuser": "alice"' in r.stdout, \
            (lang, r.stdout)
    api.revoke_token(stack, readme_token["id"])
    denied = run_snippets(stack, api, readme_token, tmp_path)
    for lang, r in denied.items():
        assert r.returncode != 0, (lang, r.stdout, r.stderr)
        assert "API token has been revoked" in r.stdout + r.stderr, (lang, r.stdout, r.stderr)
        assert "401" in r.stdout + r.stderr or lang.startswith("curl"), (lang, r.stderr)
