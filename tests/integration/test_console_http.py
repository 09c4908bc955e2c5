"""The console over HTTP against a real Redis and the stub Jira: sign-in rules, session
life time and re-checks with Jira (on a controlled clock), CSRF/Origin, Jira being down,
the audit actor, and no secret in any log line."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from authz.adapters.redis_conn import create_client
from authz.admin.operations import TokenAdmin
from authz.config import load_config
from authz.console.app import CONSOLE, ConsoleServer
from authz.domain.issuing import TokenRequest
from authz.stack import stub_jira

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def jira() -> Iterator[str]:
    server = stub_jira.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def console(redis_url: str, prefix: str, jira_url: str, clock: Clock,
                  admin_secret: str | None = None,
                  **extra: str) -> AsyncIterator[tuple[str, Any, TokenAdmin]]:
    env = {"JIRA_AUTHZ_REDIS_URL": redis_url, "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
           "JIRA_AUTHZ_AUDIT_STREAM": prefix + "audit",
           "JIRA_AUTHZ_CONSOLE_LISTEN": "127.0.0.1:0", "JIRA_AUTHZ_CONSOLE_JIRA_URL": jira_url,
           "JIRA_AUTHZ_CONSOLE_COOKIE_SECURE": "false", **extra}
    cfg = load_config(environ=env)
    client = create_client(cfg.redis)
    server = ConsoleServer(cfg, client, clock=clock, admin_secret=admin_secret)
    await server.start()
    try:
        yield (f"http://127.0.0.1:{server.port}", server.app[CONSOLE],
               TokenAdmin(client, cfg, actor="test", clock=clock))
    finally:
        await server.stop()
        await client.aclose()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


class Browser:
    """A cookie-keeping HTTP client that sends Origin like a browser's form POST."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **kw: Any) -> tuple[int, str, str]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def post(self, path: str, data: dict[str, str], *, origin: str | None = "",
                   **kw: Any) -> tuple[int, str, str]:
        headers = dict(kw.pop("headers", {}))
        if origin is not None:
            headers["Origin"] = origin or self.base.rsplit("/", 1)[0]
        async with self.http.post(self.base + path, data=data, headers=headers,
                                  allow_redirects=False, **kw) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def sign_in(self, user: str, password: str) -> tuple[int, str, str]:
        _, _, html = await self.get("login")
        return await self.post("login", {"csrf": _csrf(html), "username": user,
                                         "password": password})

    async def close(self) -> None:
        await self.http.close()


def _base(url: str) -> str:
    return url + "/jira-authz/"


async def test_api_tokens_never_sign_in_and_jira_is_not_asked(
        redis_url: str, prefix: str, jira: str) -> None:
    clock = Clock()
    async with console(redis_url, prefix, jira, clock) as (url, app, admin):
        _, secret = await admin.create(TokenRequest(label="t", user="alice"))
        await admin.create(TokenRequest(label="imported", user="alice",
                                        secret="ExtenderPlain0123456789"))
        asked: list[str] = []
        real = app.jira.whoami

        async def counting(**kw: Any) -> Any:
            asked.append("x")
            return await real(**kw)

        app.jira.whoami = counting
        b = Browser(_base(url))
        try:
            for user, password in (("alice", secret), ("alice", "ExtenderPlain0123456789"),
                                   (secret, "alice"), ("alice", "jat_not_even_valid")):
                status, _, html = await b.sign_in(user, password)
                assert status == 403 and "API token" in html, (user, password)
            assert asked == []
            status, where, _ = await b.get("")
            assert status == 303 and where.endswith("/login")
            status, where, _ = await b.sign_in("alice", "alice")
            assert status == 303 and asked == ["x"]
        finally:
            await b.close()


async def test_jira_cookie_session_is_rechecked_with_jira(
        redis_url: str, prefix: str, jira: str) -> None:
    clock = Clock()
    async with console(redis_url, prefix, jira, clock) as (url, _app, _admin):
        b = Browser(_base(url))
        try:
            # Sign in on the (stub) Jira, then open the console with the Jira cookie.
            async with b.http.post(jira + "/login.jsp", allow_redirects=False, data={
                    "os_username": "bob", "os_password": "bob"}) as r:
                assert r.status == 303
                jsession = r.cookies["JSESSIONID"].value
            cookie = {"Cookie": f"JSESSIONID={jsession}"}
            status, _, html = await b.get("", headers=cookie)
            assert status == 200 and "Signed in as <strong data-testid=\"who\">bob" in html
            clock.now += 59  # before the re-check: no question to Jira needed
            status, _, _ = await b.get("", headers=cookie)
            assert status == 200
            # Jira signs bob out; at the next re-check the console session ends too.
            async with b.http.get(jira + "/logout", headers=cookie, allow_redirects=False):
                pass
            clock.now += 2
            status, where, _ = await b.get("", headers=cookie)
            assert status == 303 and where.endswith("/login")
        finally:
            await b.close()


async def test_basic_login_session_ends_at_its_lifetime(
        redis_url: str, prefix: str, jira: str) -> None:
    clock = Clock()
    async with console(redis_url, prefix, jira, clock,
                       JIRA_AUTHZ_CONSOLE_SESSION_SECONDS="300") as (url, _app, _admin):
        b = Browser(_base(url))
        try:
            status, _, _ = await b.sign_in("alice", "alice")
            assert status == 303
            clock.now += 299
            assert (await b.get(""))[0] == 200
            clock.now += 2
            status, where, _ = await b.get("")
            assert status == 303 and where.endswith("/login")
        finally:
            await b.close()


async def test_state_changes_need_csrf_and_same_origin(
        redis_url: str, prefix: str, jira: str) -> None:
    clock = Clock()
    async with console(redis_url, prefix, jira, clock) as (url, _app, admin):
        b = Browser(_base(url))
        try:
            assert (await b.sign_in("alice", "alice"))[0] == 303
            _, _, html = await b.get("new")
            csrf = _csrf(html)
            form = {"csrf": csrf, "label": "x"}
            for origin, headers in ((None, {}), ("http://evil.example", {}), ("null", {}),
                                    ("", {"Sec-Fetch-Site": "cross-site"})):
                status, _, body = await b.post("new", form, origin=origin, headers=headers)
                assert status == 403 and "Refused" in body, (origin, headers)
            # Right origin, wrong CSRF token: refused too.
            status, _, _ = await b.post("new", {"csrf": "wrong", "label": "x"})
            assert status == 403
            assert (await admin.list())[0] == []
            status, where, _ = await b.post("new", form)
            assert status == 303 and "/secret" in where
            tokens, _ = await admin.list()
            assert [t.label for t in tokens] == ["x"] and tokens[0].user == "alice"
            records = await admin.audit_query(token_id=tokens[0].id)
            assert [(r.extra.get("action"), r.extra.get("actor")) for r in records] == [
                ("create", "alice")]
            # The secret page shows the secret once.
            status, _, page = await b.get(where.removeprefix("/jira-authz/"))
            assert status == 200 and "jat_" in page
            status, _, page = await b.get(where.removeprefix("/jira-authz/"))
            assert status == 410 and "jat_" not in page
        finally:
            await b.close()


async def test_jira_down_or_confused_is_a_clear_503(redis_url: str, prefix: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    clock = Clock()
    async with console(redis_url, prefix, dead, clock,
                       JIRA_AUTHZ_CONSOLE_JIRA_TIMEOUT_SECONDS="2") as (url, _app, _admin):
        b = Browser(_base(url))
        try:
            status, _, html = await b.sign_in("alice", "alice")
            assert status == 503 and "Jira could not be asked" in html
            status, _, _ = await b.get("", headers={"Cookie": "JSESSIONID=abc"})
            assert status == 503
        finally:
            await b.close()


async def test_no_secret_or_password_in_logs(redis_url: str, prefix: str, jira: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    async with console(redis_url, prefix, jira, clock) as (url, _app, _admin):
        b = Browser(_base(url))
        try:
            await b.sign_in("alice", "alice")
            _, _, html = await b.get("new")
            _, where, _ = await b.post("new", {"csrf": _csrf(html), "label": "logged?"})
            _, _, page = await b.get(where.removeprefix("/jira-authz/"))
            m = re.search(r'value="(jat_[^"]+)"', page)
            assert m
            secret = m.group(1)
            other = Browser(_base(url))
            assert (await other.sign_in("alice", secret))[0] == 403
            await other.close()
            cookie = next(c.value for c in b.http.cookie_jar if c.key == "jira_authz_console")
        finally:
            await b.close()
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "console: signed in" in text
    for value in (secret, cookie, _csrf(html)):
        assert value not in text


async def test_redis_down_is_a_clear_503(jira: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    async with console(dead, "x:", jira, Clock()) as (url, _app, _admin):
        b = Browser(_base(url))
        try:
            status, _, html = await b.sign_in("alice", "alice")
            assert status == 503 and "token store is unavailable" in html
        finally:
            await b.close()


async def test_admin_credential_signs_in_as_admin(redis_url: str, prefix: str, jira: str) -> None:
    admin_secret = "an-admin-credential-of-32-chars!"
    async with console(redis_url, prefix, jira, Clock(), admin_secret=admin_secret) as (
            url, _app, admin):
        await admin.create(TokenRequest(label="someone's", user="carol"))
        b = Browser(_base(url))
        try:
            _, _, html = await b.get("login")
            assert "admin credential" in html.lower()
            status, _, html = await b.post("login", {"csrf": _csrf(html),
                                                     "admin_credential": "wrong"})
            assert status == 401 and "not the admin credential" in html
            status, _, _ = await b.post("login", {"csrf": _csrf(html),
                                                  "admin_credential": admin_secret})
            assert status == 303
            status, _, html = await b.get("")
            assert status == 200 and "someone&#39;s" in html and "(admin)" in html
        finally:
            await b.close()
    async with console(redis_url, prefix, jira, Clock()) as (url, _app, _admin):
        b = Browser(_base(url))
        try:  # no credential configured: the form is not offered and a post is refused
            _, _, html = await b.get("login")
            assert "admin_credential" not in html
            status, _, _ = await b.post("login", {"csrf": _csrf(html),
                                                  "admin_credential": admin_secret})
            assert status == 401
        finally:
            await b.close()


async def test_test_a_request_is_the_full_decision(redis_url: str, prefix: str,
                                                   jira: str) -> None:
    """The console's tester takes the client address, login and on-behalf-of user, and
    answers with the Check's own decision for them (not the limit lines alone)."""
    clock = Clock()
    async with console(redis_url, prefix, jira, clock) as (url, _app, admin):
        token, _secret = await admin.create(TokenRequest(
            label="ip", user="alice", ips=["10.9.9.0/24"],
            limits=["[get].*/rest/api/2/issue/.*"]))
        b = Browser(_base(url))
        try:
            assert (await b.sign_in("alice", "alice"))[0] == 303
            _, _, html = await b.get(f"tokens/{token.id}")
            csrf = _csrf(html)
            base = {"csrf": csrf, "method": "GET",
                    "url": "https://jira.example.com/rest/api/2/issue/A-1"}
            cases = [
                ({"client_ip": "10.9.9.5"}, "Allowed"),
                ({"client_ip": "192.0.2.1"}, "Denied: client address is not allowed"),
                ({"client_ip": "10.9.9.5", "login": "bob"}, "Denied: API token does not"),
                ({"client_ip": "10.9.9.5", "on_behalf_of": "bob"}, "Denied"),
            ]
            for extra, want in cases:
                status, _, page = await b.post(f"tokens/{token.id}/test", {**base, **extra})
                assert status == 200, (extra, page[:300])
                m = re.search(r'data-testid="test-result">([^<]*)<', page)
                assert m and m.group(1).startswith(want), (extra, m and m.group(1))
            status, _, page = await b.post(f"tokens/{token.id}/test",
                                           {**base, "client_ip": "not-an-ip"})
            assert status in (200, 400) and "Allowed" not in page
        finally:
            await b.close()
