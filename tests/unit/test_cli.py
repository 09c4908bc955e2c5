"""The command line's contract (issue 16 item 7): one line per error with exit 1 (2 for
usage), --version, help on every flag, one --json convention, absolute --expires-at, the
store it uses said out loud. No Redis needed: the errors come before any connection."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from authz.cli import store
from authz.cli.main import build_parser, main
from authz.config import ENV_PREFIX
from authz.domain import token_format
from authz.domain.model import Token
from authz.stack import state as stack_state


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith(ENV_PREFIX):
            monkeypatch.delenv(k)
    monkeypatch.setenv(stack_state.ENV_STACK_DIR, str(tmp_path / "no-stack"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_every_flag_has_help() -> None:
    missing: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, f"{path} {name}")
            elif not a.help:
                missing.append(f"{path}: {a.option_strings or a.dest}")

    walk(build_parser(), "jira-authz")
    assert not missing


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("jira-authz ") and out.split()[1][0].isdigit()


@pytest.mark.parametrize("argv", [["token", "create", "--bogus"], ["token"], ["nope"],
                                  ["token", "create", "--expires-in-days", "soon"],
                                  ["token", "test", "abc"]])
def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str],
                                          argv: list[str]) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and one_line(err) and "--help" in err, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["token", "list", "--redis-url", "http://localhost:6379"], "is not a Redis URL"),
        (["token", "list", "--redis-url", "redis://h:notaport/0"], "not a valid URL"),
        (["token", "create", "--expires-at", "2h"], "not an absolute ISO-8601"),
        (["token", "create", "--expires-at", "yesterday"], "not an absolute ISO-8601"),
        (["token", "list", "--admin-url", "http://localhost:9190/admin"], "--admin-url"),
        (["token", "list", "--admin-url", "localhost"], "expected host:port"),
        (["token", "test", "x", "--url", "/rest/x", "--header", "nocolon"], "Name: value"),
        (["config", "check"], "--config FILE"),
        (["config", "check", "--config", "/nonexistent.yaml"], "cannot read"),
        (["token", "create", "--expires-in-days", "-1"], "must be > 0"),
    ],
)
def test_argument_errors_are_one_line_exit_1(capsys: pytest.CaptureFixture[str],
                                             argv: list[str], says: str) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 1 and one_line(err) and says in err, err


def test_multiline_admin_token_file_is_one_line(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    f = tmp_path / "admin-token"
    f.write_text("first-line-secret\nsecond line\n")
    rc, _, err = run(capsys, "token", "list", "--admin-url", "127.0.0.1:1",
                     "--admin-token-file", str(f))
    assert rc == 1 and one_line(err) and "one line" in err, err
    rc, _, err = run(capsys, "token", "list", "--admin-url", "127.0.0.1:1",
                     "--admin-token-file", str(tmp_path / "missing"))
    assert rc == 1 and one_line(err) and "missing" in err, err


def test_unreachable_redis_is_named_with_where_it_came_from(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv(f"{ENV_PREFIX}REDIS_CONNECT_TIMEOUT_SECONDS", "0.5")
    rc, out, err = run(capsys, "token", "list")
    assert rc == 1 and one_line(err) and out == ""
    assert "redis://127.0.0.1:1/0" in err and f"{ENV_PREFIX}REDIS_URL" in err, err


def test_config_check_takes_config_like_everything_else(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("jira:\n  base_url: https://jira.acme.test\n")
    assert run(capsys, "config", "check", "--config", str(f))[:2] == (0, f"{f}: valid\n")
    assert run(capsys, "config", "check", str(f))[0] == 0
    f.write_text("jira:\n  base_url: jira.acme.test\n")
    rc, _, err = run(capsys, "config", "check", "--config", str(f))
    assert rc == 1 and "jira.base_url" in err


# --- which store ------------------------------------------------------------------------------


def ns(**kw: object) -> argparse.Namespace:
    base = {"config": None, "admin_url": None, "redis_url": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_store_default_is_said_out_loud() -> None:
    t = store.choose(ns(), environ={})
    assert t.cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert "default" in t.note and "redis://127.0.0.1:6379/0" in t.note


def test_store_explicit_choices_say_nothing() -> None:
    assert store.choose(ns(redis_url="redis://r:1/0"), environ={}).note == ""
    env = {f"{ENV_PREFIX}REDIS_URL": "redis://r:2/0"}
    t = store.choose(ns(), environ=env)
    assert t.note == "" and t.source == f"from {ENV_PREFIX}REDIS_URL"


def test_store_finds_a_running_local_stack(tmp_path: Path) -> None:
    st = stack_state.StackState(
        pid=os.getpid(), redis_url="redis://127.0.0.1:4242/0", key_prefix="p:",
        audit_stream="p:audit", jira_url="http://127.0.0.1:8000", admin_url="grpc://x:1",
        admin_token_file="/x", check_addr="x:2", metrics_url="http://x:3/metrics")
    stack_state.write(tmp_path, st)
    t = store.choose(ns(), environ={stack_state.ENV_STACK_DIR: str(tmp_path)})
    assert t.cfg.redis.url == st.redis_url and t.cfg.redis.key_prefix == "p:"
    assert t.cfg.audit.stream == "p:audit" and t.cfg.jira.base_url == "http://127.0.0.1:8000"
    assert "local stack" in t.note and "4242" in t.note


def test_store_ignores_a_stale_stack_file_and_says_so(tmp_path: Path) -> None:
    st = stack_state.StackState(
        pid=2**22 + 12345, redis_url="redis://127.0.0.1:4242/0", key_prefix="p:",
        audit_stream="p:audit", jira_url="http://127.0.0.1:8000", admin_url="grpc://x:1",
        admin_token_file="/x", check_addr="x:2", metrics_url="http://x:3/metrics")
    stack_state.write(tmp_path, st)
    t = store.choose(ns(), environ={stack_state.ENV_STACK_DIR: str(tmp_path)})
    assert t.cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert "is gone" in t.note and "default" in t.note


def test_masked_url_hides_the_password() -> None:
    assert store.masked_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"


# --- snippets -----------------------------------------------------------------------------------

from authz.cli import render  # noqa: E402


def token(*limits: str, user: str | None = "alice") -> Token:
    return Token(id="t", secret_hash=token_format.hash_secret("x"), user=user, limits=limits)


@pytest.mark.parametrize(
    ("limits", "method", "path"),
    [((), "GET", "/rest/api/2/myself"),
     (("[get].*/rest/api/2/issue/.*",), "GET", "/rest/api/2/issue/AAA-1"),
     (("[post].*/rest/api/2/issue/KANBAN-100/comment.*",), "POST",
      "/rest/api/2/issue/KANBAN-100/comment"),
     ((".*/rest/extender/1.0/customField/all.*",), "GET", "/rest/extender/1.0/customField/all"),
     (("[delete].*/rest/api/2/project.*",), "DELETE", "/rest/api/2/project")],
)
def test_snippet_request_is_one_the_lines_allow(limits: tuple[str, ...], method: str,
                                                path: str) -> None:
    assert render.sample_request(token(*limits), "https://j") == (method, path)
    parts = render.snippet_parts(token(*limits), None, "https://j")
    assert parts["url"] == "https://j" + path and parts["method"] == method and not parts["note"]


def test_snippet_without_an_allowed_sample_says_to_replace_the_url() -> None:
    parts = render.snippet_parts(token("[get].*/rest/api/2/issue/SCRUM-[1-2]{1}"), None, "https://j")
    assert parts["note"]


def test_snippets_exit_non_zero_on_deny_in_every_language() -> None:
    parts = render.snippet_parts(token("[get].*/rest/api/2/issue/.*"), "jat_x", "http://h:1")
    assert "--fail-with-body" in parts["curl"]
    assert "process.exit(1)" in parts["javascript"]
    assert "sys.exit(" in parts["python"]


def test_snippet_json_has_every_language(capsys: pytest.CaptureFixture[str]) -> None:
    data = render.snippets_json(token(), None, "https://j")
    assert {"curl", "javascript", "python", "url", "method", "id"} <= set(data)
    json.dumps(data)
