"""The console's pages: each handler checks who is asking, then calls the operations layer.

Users see and change only tokens bound to themselves; admins (the configured Jira group, or the
admin credential) see and change all. A token someone may not manage answers 404, exactly as
one that does not exist, so ids cannot be probed. Every change goes through
``authz.admin.operations.TokenAdmin`` with the signed-in Jira user as its actor.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from authz.adapters.redis_store import RedisTokenStore, StoreUnavailable
from authz.admin.operations import AdminError, TokenAdmin, check_limits
from authz.cli.render import iso, snippet_parts
from authz.config import Config
from authz.console import security
from authz.console.jira import JiraClient, JiraUnavailable, jira_cookies
from authz.console.sessions import Session, SessionStore
from authz.domain import limits as limits_mod
from authz.domain import token_format
from authz.domain.issuing import TokenRequest
from authz.domain.lifecycle import STATES, expiring, format_duration
from authz.domain.logins import same_user
from authz.domain.model import Token

log = logging.getLogger(__name__)

COOKIE = "jira_authz_console"
MAX_FORM_BYTES = 1024 * 1024
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
ADMIN_CREDENTIAL_ACTOR = "admin-credential"

CTX: Any = web.RequestKey("console", dict) if hasattr(web, "RequestKey") else "console"
"""Per-request state (session, its id, the parsed form) under one key."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request the console answers with a plain error page (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _lines(text: str) -> list[str]:
    return limits_mod.split_lines(text)


def _expiry(value: str, now: float) -> float | None:
    """A date (YYYY-MM-DD) means the end of that day, UTC; empty means never."""
    value = value.strip()
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expiry {value!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() + 86400


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def _snippet_sections(token: Token, secret: str | None, base_url: str) -> list[tuple[str, str]]:
    """The CLI's snippets (``render.snippet_parts``, one source) as (title, code) pairs."""
    parts = snippet_parts(token, secret, base_url)
    note = f"# {parts['note']}\n" if parts["note"] else ""
    curl = parts["curl"].splitlines()
    out = [("curl (Basic)", note + curl[0])]
    if len(curl) > 1:
        out.append(("curl (Bearer)", note + curl[1]))
    out += [("JavaScript (Node 18+, save as first-call.mjs)", note + parts["javascript"]),
            ("Python (requests)", note + parts["python"])]
    return out


class Console:
    def __init__(self, cfg: Config, redis: Redis, *, admin_secret: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.c = cfg.console
        self.prefix = cfg.console.path_prefix
        self.redis = redis
        self.store = RedisTokenStore(redis, cfg.redis.key_prefix)
        self.jira = JiraClient(cfg.console.jira_url or "http://127.0.0.1:1",
                               timeout=cfg.console.jira_timeout_seconds)
        self.sessions = SessionStore(lifetime=cfg.console.session_seconds,
                                     max_sessions=cfg.console.max_sessions, clock=clock)
        self.admin_secret = admin_secret
        self.clock = clock
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
            autoescape=True,
        )
        self.templates.globals.update(prefix=self.prefix, iso=iso)

    # --- plumbing ----------------------------------------------------------------------------

    def routes(self) -> list[web.AbstractRouteDef]:
        p = self.prefix
        return [
            web.get(p, self.wrap(self.list_page)),
            web.get(p + "login", self.wrap(self.login_page, auth=False)),
            web.post(p + "login", self.wrap(self.login, auth=False)),
            web.post(p + "logout", self.wrap(self.logout, auth=False)),
            web.get(p + "new", self.wrap(self.new_page)),
            web.post(p + "new", self.wrap(self.create)),
            web.post(p + "api/check-limits", self.wrap(self.api_check_limits)),
            web.get(p + "import", self.wrap(self.import_page)),
            web.post(p + "import", self.wrap(self.import_post)),
            web.get(p + "tokens/{id}", self.wrap(self.token_page)),
            web.get(p + "tokens/{id}/secret", self.wrap(self.secret_page)),
            web.post(p + "tokens/{id}/edit", self.wrap(self.edit)),
            web.post(p + "tokens/{id}/revoke", self.wrap(self.revoke)),
            web.post(p + "tokens/{id}/rotate", self.wrap(self.rotate)),
            web.post(p + "tokens/{id}/test", self.wrap(self.test)),
        ]

    def wrap(self, handler: Handler, *, auth: bool = True) -> Handler:
        """Session, sign-in, CSRF + Origin and error handling around one page handler."""

        async def run(request: web.Request) -> web.StreamResponse:
            request[CTX] = {}
            new_cookie: str | None = None
            try:
                sid, sess, new_cookie = await self._session(request, need_user=auth)
                if sess is None:
                    resp: web.StreamResponse = self._redirect(self.prefix + "login")
                else:
                    request[CTX]["sess"] = sess
                    request[CTX]["sid"] = sid
                    if request.method not in security.SAFE_METHODS:
                        await self._check_csrf(request, sess)
                    resp = await handler(request)
                    new_cookie = request[CTX].get("new_sid", new_cookie)
            except Refused as e:
                resp = self.error_page(request, e.status, e.message)
            except (StoreUnavailable, RedisError):
                log.warning("console: token store unavailable")
                resp, new_cookie = self.error_page(
                    request, 503, "The token store is unavailable; try again shortly."), None
            except JiraUnavailable as e:
                log.warning("console: Jira unavailable", extra={"reason": str(e)})
                resp, new_cookie = self.error_page(
                    request, 503, "Jira could not be asked who you are; try again shortly."), None
            except web.HTTPException:
                raise
            except Exception:  # a bug: a plain page for the browser, the traceback in the log
                log.exception("console: internal error", extra={"path": request.path})
                resp, new_cookie = web.Response(
                    status=500, text="Internal error; it has been logged.\n",
                    content_type="text/plain"), None
            if new_cookie is not None:
                self._set_cookie(resp, new_cookie)
            if request[CTX].get("drop_cookie"):
                resp.del_cookie(COOKIE, path=self.prefix)
            security.add_headers(resp)
            return resp

        return run

    def _set_cookie(self, resp: web.StreamResponse, sid: str) -> None:
        resp.set_cookie(COOKIE, sid, path=self.prefix, httponly=True, secure=self.c.cookie_secure,
                        samesite=self.c.cookie_samesite, max_age=int(self.c.session_seconds))

    def _redirect(self, location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location})

    def render(self, request: web.Request, name: str, status: int = 200,
               **context: Any) -> web.Response:
        sess: Session | None = request[CTX].get("sess")
        flash = ""
        if sess is not None and sess.flash:
            flash, sess.flash = sess.flash, ""
        html = self.templates.get_template(name).render(
            sess=sess, csrf=sess.csrf if sess else "", flash=flash, **context)
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    def error_page(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.render(request, "error.html", status=status, status_code=status,
                           message=message)

    async def _session(self, request: web.Request, *, need_user: bool
                       ) -> tuple[str, Session | None, str | None]:
        """(cookie id, session or None to send to sign-in, a new cookie id to set)."""
        sid = request.cookies.get(COOKIE, "")
        sess = self.sessions.get(sid)
        now = self.clock()
        if sess is not None and sess.signed_in and now >= sess.recheck_at \
                and sess.via == "jira-cookie":
            who = await self.jira.whoami(
                cookies=jira_cookies(request.headers.get("Cookie", ""), COOKIE))
            if who is None or not same_user(who.name, sess.user):
                log.info("console: Jira no longer confirms the session", extra={
                    "user": sess.user})
                self.sessions.drop(sid)
                sess = None
            else:
                sess.admin = self.c.admin_group in who.groups
                sess.recheck_at = now + self.c.recheck_seconds
        if sess is not None and (sess.signed_in or not need_user):
            return sid, sess, None
        if need_user:
            # The browser may already be signed in to Jira on this host: ask Jira who it is.
            cookies = jira_cookies(request.headers.get("Cookie", ""), COOKIE)
            who = await self.jira.whoami(cookies=cookies) if cookies else None
            if who is None:
                return sid, None, None
            new_sid, sess = self.sessions.sign_in(
                sid, user=who.name, display_name=who.display_name,
                admin=self.c.admin_group in who.groups, via="jira-cookie",
                recheck_after=self.c.recheck_seconds)
            log.info("console: signed in", extra={"user": who.name, "via": "jira-cookie"})
            return new_sid, sess, new_sid
        new_sid, sess = self.sessions.new()
        return new_sid, sess, new_sid

    async def _check_csrf(self, request: web.Request, sess: Session) -> None:
        if not security.same_origin(request):
            raise Refused(403, "Refused: this request did not come from a console page "
                               "(Origin check failed).")
        presented = request.headers.get("X-CSRF-Token")
        if presented is None and request.content_type in (
                "application/x-www-form-urlencoded", "multipart/form-data"):
            form = await self._form(request)
            presented = form.get("csrf")
        if not security.csrf_ok(sess.csrf, presented):
            raise Refused(403, "Refused: the form's CSRF token is missing or wrong; reload the "
                               "page and try again.")

    async def _form(self, request: web.Request) -> dict[str, str]:
        if "form" not in request[CTX]:
            if (request.content_length or 0) > MAX_FORM_BYTES:
                raise Refused(413, "The form is too large.")
            data = await request.post()
            request[CTX]["form"] = {k: v if isinstance(v, str) else v.file.read().decode(
                "utf-8", "replace") for k, v in data.items()}
        form: dict[str, str] = request[CTX]["form"]
        return form

    def _admin(self, request: web.Request) -> TokenAdmin:
        sess: Session = request[CTX]["sess"]
        return TokenAdmin(self.redis, self.cfg, actor=sess.user, clock=self.clock)

    def _may_manage(self, sess: Session, token: Token) -> bool:
        return sess.admin or (token.user is not None
                              and same_user(token.user, sess.user))

    async def _token(self, request: web.Request) -> Token:
        sess: Session = request[CTX]["sess"]
        token_id = request.match_info["id"]
        try:
            token = await self._admin(request).get(token_id)
        except AdminError:
            token = None
        if token is None or not self._may_manage(sess, token):
            raise Refused(404, "No such token (or not one of yours).")
        return token

    def _base_url(self, request: web.Request) -> str:
        """Where the browser reached Jira's host: the snippets' target."""
        proto = request.headers.get("X-Forwarded-Proto", request.scheme)
        proto = proto if proto in ("http", "https") else request.scheme
        return f"{proto}://{request.host}{self.cfg.auth.context_path.rstrip('/')}"

    # --- sign-in -----------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        sess: Session = request[CTX]["sess"]
        if sess.signed_in:
            return self._redirect(self.prefix)
        return self.render(request, "login.html", error="", username="",
                           admin_credential=self.admin_secret is not None)

    async def _is_token(self, secret: str) -> bool:
        """An API token, ours (by format) or imported (by the store): never a sign-in."""
        if token_format.looks_like_token(secret):
            return True
        return await self.store.find_by_hash(token_format.hash_secret(secret)) is not None

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        credential = form.get("admin_credential", "")

        def refuse(message: str, status: int = 401) -> web.Response:
            return self.render(request, "login.html", status=status, error=message,
                               username=username, admin_credential=self.admin_secret is not None)

        if credential:
            if self.admin_secret is None or not secrets.compare_digest(
                    credential.encode(), self.admin_secret.encode()):
                log.info("console: admin credential refused")
                return refuse("That is not the admin credential.")
            return self._signed_in(request, ADMIN_CREDENTIAL_ACTOR, "Admin credential",
                                   admin=True, via="admin-credential")
        if not username or not password:
            return refuse("Enter your Jira username and password.", 400)
        if len(username) > 255 or len(password) > 1024 or any(
                ord(c) < 0x20 for c in username) or ":" in username:
            return refuse("That username or password cannot be a Jira login.", 400)
        if await self._is_token(password) or await self._is_token(username):
            log.info("console: sign-in with an API token refused")
            return refuse("That is an API token. API tokens cannot sign in to the console: "
                          "use your Jira password.", 403)
        who = await self.jira.whoami(login=(username, password))
        if who is None:
            log.info("console: Jira refused a sign-in")
            return refuse("Jira did not accept that username and password.")
        return self._signed_in(request, who.name, who.display_name,
                               admin=self.c.admin_group in who.groups, via="jira-login")

    def _signed_in(self, request: web.Request, user: str, display: str, *, admin: bool,
                   via: str) -> web.Response:
        # A Basic login's password is not kept, so the session cannot be re-asked: it simply
        # ends at session_seconds (recheck_at beyond it).
        new_sid, sess = self.sessions.sign_in(
            request[CTX]["sid"], user=user, display_name=display, admin=admin, via=via,
            recheck_after=self.c.session_seconds + 1)
        request[CTX]["new_sid"] = new_sid
        request[CTX]["sess"] = sess
        log.info("console: signed in", extra={"user": user, "via": via})
        return self._redirect(self.prefix)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request[CTX]["sid"])
        request[CTX]["drop_cookie"] = True
        request[CTX]["new_sid"] = None
        return self._redirect(self.prefix + "login")

    # --- list --------------------------------------------------------------------------------

    async def list_page(self, request: web.Request) -> web.StreamResponse:
        sess: Session = request[CTX]["sess"]
        q = request.query
        state = q.get("state", "")
        state = state if state in STATES else ""
        label = q.get("label", "")[:200]
        user = q.get("user", "")[:255] if sess.admin else sess.user
        soon_only = q.get("expiring") == "1"
        # "Expires soon" is the lifecycle window of the metrics and webhooks (one rule).
        window = self.cfg.lifecycle.expiring_window_seconds
        tokens, _ = await self._admin(request).list(
            user=user or None, label=label or None, state=state or None, page_size=1000,
            expiring_within=window if soon_only else None)
        if not sess.admin:  # bound to themselves only (never an unbound token)
            tokens = [t for t in tokens if self._may_manage(sess, t)]
        now = self.clock()

        rows = [{"t": t, "state": t.state(now), "soon": expiring(t, now, window)}
                for t in tokens]
        return self.render(request, "list.html", rows=rows, state=state, label=label,
                           user=q.get("user", "") if sess.admin else "", expiring=soon_only,
                           states=STATES, soon_window=format_duration(window))

    # --- create ------------------------------------------------------------------------------

    def _new_form(self, request: web.Request, status: int = 200, *, form: dict[str, str],
                  errors: list[str]) -> web.Response:
        return self.render(request, "new.html", status=status, form=form, errors=errors,
                           min_date=_day(self.clock()))

    async def new_page(self, request: web.Request) -> web.StreamResponse:
        return self._new_form(request, form={}, errors=[])

    async def create(self, request: web.Request) -> web.StreamResponse:
        sess: Session = request[CTX]["sess"]
        form = await self._form(request)
        errors: list[str] = []
        try:
            expires = _expiry(form.get("expires", ""), self.clock())
        except ValueError as e:
            errors.append(str(e))
            expires = None
        user: str | None = sess.user
        on_behalf: list[str] = []
        if sess.admin:
            who = form.get("user", "").strip()
            user = None if who == "*" else (who or (
                None if sess.via == "admin-credential" else sess.user))
            on_behalf = [x.strip() for x in form.get("on_behalf_of", "").split(",") if x.strip()]
        elif form.get("user", "").strip() not in ("", sess.user) or form.get("on_behalf_of"):
            errors.append("Only admins can create tokens for other users or on behalf of others.")
        if user is None and sess.via == "admin-credential" and not form.get("user", "").strip():
            errors.append("Signed in with the admin credential: name the token's user "
                          "(or * for any user).")
        limits = _lines(form.get("limits", ""))
        ips = [x for x in form.get("ips", "").replace(",", "\n").split() if x]
        checked = check_limits(limits)
        if errors:
            return self._new_form(request, 400, form=form, errors=errors)
        req = TokenRequest(label=form.get("label", "").strip(), user=user, expires_at=expires,
                           limits=limits, ips=ips, on_behalf_of=on_behalf, created_by=sess.user)
        try:
            token, secret = await self._admin(request).create(req)
        except AdminError as e:
            return self._new_form(request, 400, form=form, errors=[str(e)])
        self.sessions.keep_secret(sess, token.id, secret)
        sess.flash = "; ".join(
            f"warning, limit line {n}: {w}" for n, w in checked.warnings)
        return self._redirect(f"{self.prefix}tokens/{token.id}/secret")

    async def api_check_limits(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await request.json()
            text = data["limits"] if isinstance(data, dict) else None
        except (ValueError, KeyError):
            text = None
        if not isinstance(text, str) or len(text) > MAX_FORM_BYTES:
            return web.json_response({"error": "send {\"limits\": \"...\"}"}, status=400)
        checked = check_limits(_lines(text))
        return web.json_response({
            "errors": [{"line": n, "reason": r} for n, r in checked.errors],
            "warnings": [{"line": n, "reason": r} for n, r in checked.warnings],
        })

    async def secret_page(self, request: web.Request) -> web.StreamResponse:
        sess: Session = request[CTX]["sess"]
        token = await self._token(request)
        secret = self.sessions.take_secret(sess, token.id)
        sections = _snippet_sections(token, secret, self._base_url(request)) \
            if secret else []
        return self.render(request, "secret.html", status=200 if secret else 410, t=token,
                           secret=secret, sections=sections)

    # --- one token ---------------------------------------------------------------------------

    async def _token_view(self, request: web.Request, token: Token, status: int = 200,
                          **extra: Any) -> web.Response:
        records = await self._admin(request).audit_query(token_id=token.id, limit=50)
        context: dict[str, Any] = {"errors": [], "test": None, "test_form": {},
                                   "edit_form": None}
        context.update(extra)
        sections = _snippet_sections(token, None, self._base_url(request))
        return self.render(request, "token.html", status=status, t=token,
                           state=token.state(self.clock()), records=records,
                           methods=METHODS, sections=sections, **context)

    async def token_page(self, request: web.Request) -> web.StreamResponse:
        return await self._token_view(request, await self._token(request))

    async def edit(self, request: web.Request) -> web.StreamResponse:
        token = await self._token(request)
        form = await self._form(request)
        limits = _lines(form.get("limits", ""))
        try:
            await self._admin(request).update(token.id, label=form.get("label", "").strip(),
                                              limits=limits)
        except AdminError as e:
            return await self._token_view(request, token, 400, errors=[str(e)], edit_form=form)
        warnings = check_limits(limits).warnings
        request[CTX]["sess"].flash = "Saved." + "".join(
            f" Warning, limit line {n}: {w}." for n, w in warnings)
        return self._redirect(f"{self.prefix}tokens/{token.id}")

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        token = await self._token(request)
        try:
            await self._admin(request).revoke(token.id)
        except AdminError as e:
            raise Refused(400, str(e)) from None
        request[CTX]["sess"].flash = "Revoked: the token stops working within a second."
        return self._redirect(f"{self.prefix}tokens/{token.id}")

    async def rotate(self, request: web.Request) -> web.StreamResponse:
        sess: Session = request[CTX]["sess"]
        token = await self._token(request)
        form = await self._form(request)
        try:
            grace = float(form.get("grace_seconds", "0") or "0")
            if not math.isfinite(grace) or grace > 30 * 86400:
                raise ValueError
        except ValueError:
            return await self._token_view(request, token, 400, errors=[
                "grace period: a number of seconds up to 30 days"])
        try:
            new, secret, _old = await self._admin(request).rotate(token.id, grace_seconds=grace)
        except AdminError as e:
            return await self._token_view(request, token, 400, errors=[str(e)])
        self.sessions.keep_secret(sess, new.id, secret)
        return self._redirect(f"{self.prefix}tokens/{new.id}/secret")

    async def test(self, request: web.Request) -> web.StreamResponse:
        token = await self._token(request)
        form = await self._form(request)
        method = form.get("method", "GET").upper()
        url = form.get("url", "").strip()
        if method not in METHODS or not url or len(url) > 8192:
            return await self._token_view(request, token, 400, test_form=form, errors=[
                "test: choose a method and give the full URL (https://jira.example.com/rest/...)"])
        body = form.get("body", "")
        login = form.get("login", "").strip()
        client_ip = form.get("client_ip", "").strip()
        obo = form.get("on_behalf_of", "").strip()
        if len(login) > 256 or len(client_ip) > 64 or len(obo) > 256:
            return await self._token_view(request, token, 400, test_form=form, errors=[
                "test: login, client address or on-behalf-of user too long"])
        headers = [(self.cfg.identity.header, obo)] if obo else []
        try:
            result = await self._admin(request).test_limits(
                token.id, method=method, url=url, body=body.encode() if body else None,
                login=login, client_ip=client_ip, headers=headers)
        except AdminError as e:
            return await self._token_view(request, token, 400, test_form=form,
                                          errors=[f"test: {e}"])
        return await self._token_view(request, token, test=result, test_form=form)

    # --- import ------------------------------------------------------------------------------

    async def import_page(self, request: web.Request) -> web.StreamResponse:
        if not request[CTX]["sess"].admin:
            raise Refused(403, "Only admins can import tokens.")
        return self.render(request, "import.html", report=None, data="", errors=[])

    async def import_post(self, request: web.Request) -> web.StreamResponse:
        if not request[CTX]["sess"].admin:
            raise Refused(403, "Only admins can import tokens.")
        form = await self._form(request)
        data = form.get("file") or form.get("data", "")
        apply = form.get("apply") == "1"
        try:
            report = await self._admin(request).import_extender(data, apply=apply)
        except AdminError as e:
            return self.render(request, "import.html", status=400, report=None, data=data,
                               errors=[str(e)])
        return self.render(request, "import.html", report=report, data=data, errors=[],
                           summary=json.dumps({"applied": report.applied,
                                               "written": len(report.ids)}))
