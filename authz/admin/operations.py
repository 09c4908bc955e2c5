"""Token administration: the operations behind both the admin gRPC API and the CLI.

Each change is validated before anything is written, and is itself recorded on the audit stream
as an ``admin`` event (who changed what; never a secret).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis

from authz.adapters.audit_reader import AuditReader
from authz.adapters.audit_stream import AuditStream
from authz.adapters.redis_store import (
    DuplicateSecret,
    RedisTokenStore,
    TokenNotFound,
    redis_errors,
)
from authz.adapters.webhook_queue import WebhookQueue
from authz.config import Config
from authz.domain import lifecycle
from authz.domain import limits as limits_mod
from authz.domain import webhook_event as hooks
from authz.domain.audit_event import AuditRecord, admin_event, format_time
from authz.domain.extender_import import (
    STATUS_EXISTS,
    STATUS_INVALID,
    ImportItem,
    parse_extender_json,
)
from authz.domain.issuing import InvalidToken, TokenRequest, issue, limits_problems
from authz.domain.lifecycle import TokenFilter
from authz.domain.logins import login_key, same_user
from authz.domain.model import Token
from authz.domain.token_format import hash_secret
from authz.policies import issue_policy

MAX_PAGE = 1000
log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://jira.example.com"
"""Where path-only URLs and snippets point when ``jira.base_url`` is not configured."""


class AdminError(Exception):
    """A refused admin operation; ``code`` is a gRPC-style category for the API layer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def not_found(token_id: str) -> AdminError:
    return AdminError("not_found", f"no token with id {token_id!r}")


@dataclass(frozen=True)
class LimitTest:
    """The server's complete decision for a request, made without sending it."""

    allowed: bool
    matched_line: str
    reason: str
    """Human-readable: the deny body's reason, or which line allowed it."""
    status: int = 0
    """HTTP status the client would get (200 on allow)."""
    code: str = ""
    """Reason code as in the audit and metrics (``ok``, ``revoked``, ``no_limit_matched``…)."""
    effective_user: str = ""
    client_ip: str = ""
    url: str = ""
    """``scheme://host/path`` the lines were matched against."""
    login: str = ""


@dataclass(frozen=True)
class PruneItem:
    token: Token
    ended_at: float
    """When it stopped working (expiry or revocation)."""
    removed: bool


@dataclass(frozen=True)
class PruneReport:
    items: list[PruneItem]
    applied: bool
    older_than: float


@dataclass(frozen=True)
class ImportReport:
    items: list[ImportItem]
    applied: bool
    ids: dict[int, str]
    """Item index → id of the token written (only when applied)."""
    warnings: dict[int, list[str]] = field(default_factory=dict)
    """Item index → limit-line lint (filled by API clients from the server's answer)."""


@dataclass(frozen=True)
class LimitCheck:
    """What is wrong with restriction lines before they are written: errors refuse them,
    warnings (lines that parse but can never match, or match more than meant) do not."""

    errors: list[tuple[int, str]]
    warnings: list[tuple[int, str]]


def check_limits(lines: Sequence[str]) -> LimitCheck:
    """The same validation create/edit apply, plus the lint warnings (``limits.lint_line``),
    for forms that show problems while the lines are typed."""
    errors: list[tuple[int, str]] = []
    try:
        limits_mod.validate(list(lines))
    except limits_mod.InvalidLimits as e:
        errors = list(e.errors)
    warnings: list[tuple[int, str]] = []
    if not errors:
        warnings = [(n, w) for n, line in enumerate(lines, 1)
                    for w in limits_mod.lint_line(line)]
    return LimitCheck(errors, warnings)


class TokenAdmin:
    def __init__(
        self,
        client: Redis,
        cfg: Config,
        *,
        actor: str = "admin",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.store = RedisTokenStore(client, cfg.redis.key_prefix)
        self.audit = AuditStream(client, cfg.audit)
        self.audit_reader = AuditReader(client, cfg.audit.stream)
        self.actor = actor
        self.clock = clock
        self.policy = issue_policy(cfg.policy)
        self.webhooks = WebhookQueue(client, cfg.redis.key_prefix, cfg.webhooks.max_queue)

    # --- admin audit ---------------------------------------------------------------------------

    async def _record(self, action: str, token_id: str, **details: Any) -> None:
        event = admin_event(now=self.clock(), action=action, actor=self.actor,
                            token_id=token_id, details=details)
        with redis_errors(self.cfg.audit.stream):
            await self.audit.write_now(event)

    # --- operations ----------------------------------------------------------------------------

    async def create(self, req: TokenRequest) -> tuple[Token, str]:
        req = replace(req, created_by=req.created_by or self.actor)
        now = self.clock()
        active = await self._active_for_user(req.user, now)
        try:
            token, secret = issue(req, now=now, policy=self.policy, active_for_user=active)
        except InvalidToken as e:
            raise AdminError("invalid", "token refused: " + "; ".join(e.problems)) from None
        try:
            await self.store.create(token)
        except DuplicateSecret:
            raise AdminError("exists", "another token already uses this secret") from None
        await self._record("create", token.id, label=token.label, user=token.user,
                           imported=req.secret is not None)
        await self._notify("token.created", token)
        return token, secret

    async def get(self, token_id: str) -> Token:
        token = await self._get(token_id)
        return token

    async def _get(self, token_id: str) -> Token:
        try:
            token = await self.store.get(token_id)
        except ValueError:
            raise not_found(token_id) from None
        if token is None:
            raise not_found(token_id)
        return token

    async def list(
        self,
        *,
        user: str | None = None,
        label: str | None = None,
        state: str | None = None,
        page_size: int = 100,
        page_token: str = "",
        expiring_within: float | None = None,
        unused_for: float | None = None,
    ) -> tuple[list[Token], str]:
        """One page, oldest first; the page token is the offset (stable while tokens are
        only added, as ids are never reused)."""
        if page_size <= 0:
            page_size = 100
        page_size = min(page_size, MAX_PAGE)
        try:
            start = int(page_token or "0")
        except ValueError:
            raise AdminError("invalid", f"bad page token {page_token!r}") from None
        flt = TokenFilter(user=user, label=label, state=state, expiring_within=expiring_within,
                          unused_for=unused_for)
        if problems := flt.problems():
            raise AdminError("invalid", "; ".join(problems))
        now = self.clock()
        tokens = [t for t in await self.store.list() if flt.matches(t, now)]
        page = tokens[start : start + page_size]
        nxt = str(start + page_size) if start + page_size < len(tokens) else ""
        return page, nxt

    async def update(
        self, token_id: str, *, label: str | None = None, limits: Sequence[str] | None = None
    ) -> Token:
        if label is not None and (len(label) > 200 or any(ord(c) < 0x20 for c in label)):
            raise AdminError("invalid", "label must be at most 200 printable characters")
        lines: tuple[str, ...] | None = None
        if limits is not None:
            try:
                lines = limits_mod.validate(list(limits))
            except limits_mod.InvalidLimits as e:
                raise AdminError(
                    "invalid", "; ".join(f"limit line {n}: {r}" for n, r in e.errors)
                ) from None
            if problems := limits_problems(lines, self.policy):
                raise AdminError("invalid", "token refused: " + "; ".join(problems))
        await self._get(token_id)
        try:
            token = await self.store.update(token_id, label=label, limits=lines)
        except TokenNotFound:
            raise not_found(token_id) from None
        changed: dict[str, Any] = {}
        if label is not None:
            changed["label"] = label
        if lines is not None:
            changed["limits"] = list(lines)
        await self._record("update", token_id, **changed)
        return token

    async def revoke(self, token_id: str, *, at: float | None = None) -> Token:
        before = await self._get(token_id)
        when = self.clock() if at is None else at
        try:
            token = await self.store.revoke(token_id, when)
        except TokenNotFound:
            raise not_found(token_id) from None
        await self._record("revoke", token_id, revoked_at=format_time(token.revoked_at or when))
        if before.revoked_at is None or before.revoked_at > when:  # not already revoked
            await self._notify("token.revoked", token)
        return token

    async def rotate(self, token_id: str, *, grace_seconds: float = 0.0) -> tuple[
        Token, str, Token
    ]:
        """A new token with the same settings; the old one revoked now or after the grace.

        A grace period is a revocation time in the future: the old token keeps working until
        then and is refused afterwards (``revoked_at`` is checked against the clock)."""
        if grace_seconds < 0:
            raise AdminError("invalid", "grace period must be >= 0")
        old = await self._get(token_id)
        now = self.clock()
        state = old.state(now)
        if state != lifecycle.ACTIVE:
            raise AdminError("failed_precondition", f"token {token_id} is {state}, not active")
        req = TokenRequest(
            label=old.label, user=old.user, logins=old.logins, expires_at=old.expires_at,
            limits=old.limits, ips=old.ips, on_behalf_of=old.on_behalf_of,
            created_by=self.actor, any_user=old.user is None,
        )
        # The new token replaces the old one: the old one is not counted against the cap.
        active = await self._active_for_user(old.user, now, excluding=old.id)
        try:
            new, secret = issue(req, now=now, policy=self.policy, active_for_user=active)
        except InvalidToken as e:
            raise AdminError("invalid", "rotation refused: " + "; ".join(e.problems)) from None
        await self.store.create(new)
        previous = await self.store.revoke(token_id, now + grace_seconds)
        await self._record("rotate", token_id, new_token_id=new.id, grace_seconds=grace_seconds)
        await self._notify("token.rotated", previous, new_token_id=new.id,
                           grace_seconds=grace_seconds)
        return new, secret, previous

    async def test_limits(
        self,
        token_id: str,
        *,
        method: str,
        url: str,
        body: bytes | None = None,
        login: str = "",
        client_ip: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> LimitTest:
        """The Check's own decision for this request (``domain.dry_run``), so the tester
        never says ALLOW where the server refuses."""
        from authz.domain import dry_run
        from authz.policies import decision_policy

        token = await self._get(token_id)
        req = dry_run.DryRunRequest(method=method, url=url, login=login, client_ip=client_ip,
                                    headers=tuple(headers), body=body)
        try:
            r = dry_run.dry_run(token, req, decision_policy(self.cfg),
                                base_url=self.cfg.jira.base_url or DEFAULT_BASE_URL,
                                now=self.clock())
        except dry_run.DryRunError as e:
            raise AdminError("invalid", str(e)) from None
        return LimitTest(r.allowed, r.matched_line, r.message, r.status, r.code,
                         r.effective_user, r.client_ip, r.url, r.login)

    async def import_extender(self, data: bytes | str, *, apply: bool) -> ImportReport:
        now = self.clock()
        try:
            items = parse_extender_json(data, now=now, policy=self.policy)
        except ValueError as e:
            raise AdminError("invalid", f"import file refused: {e}") from None
        # Idempotent: a secret already stored is reported as existing and skipped.
        checked: list[ImportItem] = []
        for it in items:
            if it.request is not None and it.request.secret and it.status != STATUS_INVALID:
                existing = await self.store.find_by_hash(hash_secret(it.request.secret))
                if existing is not None:
                    it = replace(it, status=STATUS_EXISTS)
                    checked.append(it)
                    continue
            checked.append(it)
        checked = await self._import_caps(checked, now)
        invalid = [it for it in checked if it.status == STATUS_INVALID]
        ids: dict[int, str] = {}
        if not apply or invalid:
            return ImportReport(checked, False, ids)
        for it in checked:
            if it.status == STATUS_EXISTS or it.request is None:
                continue
            token, _ = issue(it.request, now=now, allow_expired=True)
            await self.store.create(token)
            ids[it.index] = token.id
            await self._notify("token.created", token, imported=True)
        await self._record("import", "", imported=len(ids),
                           skipped=sum(1 for it in checked if it.status == STATUS_EXISTS))
        return ImportReport(checked, True, ids)

    async def _import_caps(self, items: list[ImportItem], now: float) -> list[ImportItem]:
        """policy.max_active_tokens_per_user over the store plus the file: the only import
        rule that needs the store, applied per token in file order."""
        cap = self.policy.max_active_tokens_per_user
        if cap <= 0:
            return items
        counts: dict[str, int] = {}
        for t in await self.store.list():
            if t.user and t.state(now) in lifecycle.USABLE:
                counts[login_key(t.user)] = counts.get(login_key(t.user), 0) + 1
        out: list[ImportItem] = []
        for it in items:
            if it.status == "new" and it.request is not None and it.request.user:
                key = login_key(it.request.user)
                have = counts.get(key, 0)
                if have >= cap:
                    it = replace(it, status=STATUS_INVALID, problems=(*it.problems, (
                        f"policy.max_active_tokens_per_user: user {it.request.user!r} would "
                        f"hold more than {cap} usable token(s)")))
                counts[key] = have + 1
            out.append(it)
        return out

    async def _active_for_user(
        self, user: str | None, now: float, *, excluding: str = ""
    ) -> int:
        """Usable tokens bound to ``user``; read only when the cap is on (it lists the store:
        fine for an admin call, never on the Check path)."""
        if not user or self.policy.max_active_tokens_per_user <= 0:
            return 0
        return sum(
            1 for t in await self.store.list()
            if t.id != excluding and t.user is not None and same_user(t.user, user)
            and t.state(now) in lifecycle.USABLE
        )

    async def prune(self, *, older_than: float, apply: bool = False) -> PruneReport:
        """Records of tokens expired or revoked for at least ``older_than`` seconds: a report
        (dry run) or, with ``apply``, their removal, each one audited. The audit stream keeps
        the history of their calls."""
        if not older_than >= 0:  # also NaN
            raise AdminError("invalid", "older_than must be a duration >= 0")
        now = self.clock()
        found = [t for t in await self.store.list() if lifecycle.prunable(t, now, older_than)]
        items: list[PruneItem] = []
        for t in found:
            end = lifecycle.ended_at(t, now) or now
            removed = False
            if apply:
                removed = await self.store.delete(t.id)
                if removed:
                    await self._record("prune", t.id, label=t.label, user=t.user,
                                       state=t.state(now), ended_at=format_time(end))
                    await self._notify("token.pruned", t)
            items.append(PruneItem(t, end, removed))
        return PruneReport(items, apply, older_than)

    async def _notify(self, kind: str, token: Token, **details: Any) -> None:
        """Queue a webhook event when webhooks are on (configured here, or a delivering server
        says so in Redis: the CLI may run without the server's config). Never fails the change
        it reports: a queue problem is logged and counted by the queue."""
        w = self.cfg.webhooks
        if w.url and kind not in w.events:
            return
        try:
            if not w.url and not await self.webhooks.enabled():
                return
            await self.webhooks.enqueue(
                hooks.build_event(kind, token, now=self.clock(), actor=self.actor, **details))
        except Exception as e:  # the change is made and audited; the event is secondary
            log.error(
                "webhook event not queued", extra={"event": kind, "token_id": token.id,
                                                   "error": type(e).__name__})

    async def audit_query(self, **filters: Any) -> list[AuditRecord]:
        return await self.audit_reader.query(**filters)
