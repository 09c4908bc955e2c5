"""Pure parts of the web console: sessions, the Origin rule, Jira's answer, config checks,
and the stub Jira's login redirect."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from authz.config import ConfigError, load_config
from authz.console import security
from authz.console.jira import _identity, jira_cookies
from authz.console.sessions import SECRET_SHOWN_FOR, SessionStore
from authz.stack.stub_jira_auth import _safe_destination


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_ids_are_new_on_sign_in_and_sessions_expire() -> None:
    clock = Clock()
    store = SessionStore(lifetime=100, max_sessions=10, clock=clock)
    anon_sid, anon = store.new()
    sid, sess = store.sign_in(anon_sid, user="alice", display_name="A", admin=False,
                              via="jira-login", recheck_after=10)
    assert sid != anon_sid and store.get(anon_sid) is None  # no fixation
    assert store.get(sid) is sess and sess.signed_in and sess.csrf != anon.csrf
    clock.now += 100
    assert store.get(sid) is None


def test_session_store_is_bounded_and_rejects_junk_ids() -> None:
    store = SessionStore(lifetime=100, max_sessions=3, clock=Clock())
    sids = [store.new()[0] for _ in range(5)]
    assert len(store) == 3 and store.get(sids[0]) is None and store.get(sids[-1]) is not None
    assert store.get("") is None and store.get("x" * 1000) is None


def test_anonymous_flood_does_not_sign_anyone_out() -> None:
    store = SessionStore(lifetime=100, max_sessions=3, clock=Clock())
    sid, _ = store.sign_in(None, user="alice", display_name="A", admin=False, via="jira-login",
                           recheck_after=10)
    for _ in range(50):
        store.new()
    assert store.get(sid) is not None and store.get(sid).user == "alice"  # type: ignore[union-attr]


def test_secret_is_taken_once_and_only_for_a_short_while() -> None:
    clock = Clock()
    store = SessionStore(lifetime=10_000, max_sessions=3, clock=clock)
    _, sess = store.new()
    store.keep_secret(sess, "t1", "jat_x")
    assert store.take_secret(sess, "t1") == "jat_x"
    assert store.take_secret(sess, "t1") is None
    store.keep_secret(sess, "t2", "jat_y")
    clock.now += SECRET_SHOWN_FOR
    assert store.take_secret(sess, "t2") is None


@pytest.mark.parametrize(("headers", "ok"), [
    ({"Origin": "http://jira.example:8000"}, True),
    ({"Origin": "HTTP://JIRA.EXAMPLE:8000"}, True),
    ({"Referer": "http://jira.example:8000/jira-authz/new"}, True),
    ({}, False),
    ({"Origin": "null"}, False),
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "http://jira.example:8001"}, False),
    ({"Origin": "http://jira.example:8000.evil.example"}, False),
    ({"Origin": "javascript://jira.example:8000"}, False),
    ({"Origin": "http://jira.example:8000", "Sec-Fetch-Site": "cross-site"}, False),
    ({"Origin": "http://jira.example:8000", "Sec-Fetch-Site": "same-site"}, False),
])
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    req = make_mocked_request("POST", "/jira-authz/new",
                              headers={"Host": "jira.example:8000", **headers})
    assert security.same_origin(req) is ok


def test_csrf_compare() -> None:
    assert security.csrf_ok("abc", "abc")
    assert not security.csrf_ok("abc", None) and not security.csrf_ok("abc", "")
    assert not security.csrf_ok("abc", "abd")


def test_jira_answer_parsing() -> None:
    who = _identity({"name": "alice", "displayName": "Alice", "active": True,
                     "groups": {"items": [{"name": "g1"}, {"bad": 1}, "x"]}})
    assert who is not None and who.name == "alice" and who.groups == ("g1",)
    for bad in (None, [], {}, {"name": ""}, {"name": 5}, {"name": "x", "active": False},
                {"name": "x" * 300}):
        assert _identity(bad) is None, bad
    assert _identity({"name": "bob", "groups": "nope"}).groups == ()  # type: ignore[union-attr]


def test_jira_cookies_drop_the_consoles_own() -> None:
    assert jira_cookies("JSESSIONID=a; jira_authz_console=s; x=1", "jira_authz_console") == (
        "JSESSIONID=a; x=1")
    assert jira_cookies("", "c") == ""


@pytest.mark.parametrize(("key", "value"), [
    ("CONSOLE_LISTEN", "nope"),
    ("CONSOLE_PATH_PREFIX", "/"),
    ("CONSOLE_PATH_PREFIX", "jira-authz/"),
    ("CONSOLE_PATH_PREFIX", "/a/../b/"),
    ("CONSOLE_PATH_PREFIX", "/rest/console/"),
    ("CONSOLE_PATH_PREFIX", "/a b/"),
    ("CONSOLE_JIRA_URL", "ftp://jira"),
    ("CONSOLE_SESSION_SECONDS", "0"),
    ("CONSOLE_COOKIE_SAMESITE", "None"),
    ("CONSOLE_ADMIN_GROUP", ""),
])
def test_bad_console_config_names_the_key(key: str, value: str) -> None:
    env = {"JIRA_AUTHZ_CONSOLE_JIRA_URL": "http://jira:8080", f"JIRA_AUTHZ_{key}": value}
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert e.value.key.startswith("console.")


def test_console_needs_jira_when_enabled() -> None:
    with pytest.raises(ConfigError, match=r"console\.jira_url"):
        load_config(environ={"JIRA_AUTHZ_CONSOLE_LISTEN": "127.0.0.1:9180"})
    cfg = load_config(environ={"JIRA_AUTHZ_CONSOLE_LISTEN": "127.0.0.1:9180",
                               "JIRA_AUTHZ_CONSOLE_JIRA_URL": "http://jira:8080"})
    assert cfg.console.cookie_secure is True and cfg.console.cookie_samesite == "Strict"
    assert load_config(environ={}).console.listen == ""  # off unless configured


@pytest.mark.parametrize(("dest", "out"), [
    ("/jira-authz/", "/jira-authz/"), ("//evil.example/", "/"), ("http://evil/", "/"),
    ("/\\evil", "/"), ("evil", "/"), ("/a b", "/"),
])
def test_stub_login_redirects_only_to_local_paths(dest: str, out: str) -> None:
    assert _safe_destination(dest) == out


def test_up_prints_the_console_url_and_local_users(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: object) -> None:
    from authz.stack.local import LocalStack, _print_info

    stack = LocalStack(workdir=str(tmp_path), inherit_config_env=False)
    _print_info(stack)
    err = capsys.readouterr().err
    assert f"console: http://127.0.0.1:{stack.envoy_port}/jira-authz/" in err.splitlines()
    assert "alice, bob, admin" in err


def test_only_worker_zero_serves_the_console() -> None:
    from authz.workers import Worker

    env0 = Worker(0, "127.0.0.1:9191", "", "127.0.0.1:9190").env(
        {"JIRA_AUTHZ_CONSOLE_LISTEN": "0.0.0.0:9180"})
    env1 = Worker(1, "127.0.0.1:9192", "", "").env({"JIRA_AUTHZ_CONSOLE_LISTEN": "0.0.0.0:9180"})
    assert env0["JIRA_AUTHZ_CONSOLE_LISTEN"] == "0.0.0.0:9180"
    assert env1["JIRA_AUTHZ_CONSOLE_LISTEN"] == ""
