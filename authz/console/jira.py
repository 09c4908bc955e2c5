"""Who is this browser? Asked of Jira at its upstream address, never through the token gate.

Only Jira's answer to ``/rest/api/2/myself?expand=groups`` is trusted, and only for the
credentials the browser itself presented (its Jira cookies, or a login typed into the console).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

import aiohttp

MAX_ANSWER = 256 * 1024


class JiraUnavailable(Exception):
    """Jira did not answer usably (down, timeout, not JSON): sign-in is refused, not guessed."""


@dataclass(frozen=True)
class Identity:
    name: str
    display_name: str
    groups: tuple[str, ...]


def jira_cookies(cookie_header: str, own_cookie: str) -> str:
    """The browser's cookies for Jira: everything but the console's own session cookie."""
    jar = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return ""
    return "; ".join(f"{k}={m.value}" for k, m in jar.items() if k != own_cookie)


def _identity(data: object) -> Identity | None:
    if not isinstance(data, dict):
        return None
    name = data.get("name")
    if not isinstance(name, str) or not name or len(name) > 255 or data.get("active") is False:
        return None
    display = data.get("displayName")
    items = (data.get("groups") or {}).get("items") if isinstance(data.get("groups"), dict) else []
    groups = tuple(g["name"] for g in items or [] if isinstance(g, dict)
                   and isinstance(g.get("name"), str))
    return Identity(name, display if isinstance(display, str) else name, groups)


class JiraClient:
    def __init__(self, base_url: str, *, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/rest/api/2/myself?expand=groups"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No cookie jar: every question carries exactly the browser's credentials.
            self._http = aiohttp.ClientSession(
                timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def whoami(self, *, cookies: str = "", login: tuple[str, str] | None = None
                     ) -> Identity | None:
        """The Jira user, or None when Jira says the credentials are no one's."""
        headers = {"Accept": "application/json", "X-Atlassian-Token": "no-check"}
        if login is not None:
            raw = f"{login[0]}:{login[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif cookies:
            headers["Cookie"] = cookies
        else:
            return None
        try:
            async with self._client().get(self.url, headers=headers,
                                          allow_redirects=False) as resp:
                if resp.status in (401, 403):
                    return None
                if resp.status != 200:
                    raise JiraUnavailable(f"Jira answered {resp.status}")
                body = await resp.content.read(MAX_ANSWER + 1)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise JiraUnavailable(type(e).__name__) from None
        if len(body) > MAX_ANSWER:
            raise JiraUnavailable("Jira's answer is too large")
        try:
            return _identity(json.loads(body))
        except ValueError:
            raise JiraUnavailable("Jira's answer is not JSON") from None
