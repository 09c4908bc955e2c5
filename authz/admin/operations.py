"""Token administration: the operations behind both the admin gRPC API and the CLI.

Each change is validated before anything is written, and is itself recorded on the audit stream
as an ``admin`` event (who changed what; never a secret).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from authz.adapters.audit_stream import AuditStream
from authz.adapters.redis_store import (
    DuplicateSecret,
    RedisTokenStore,
    TokenNotFound,
    redis_errors,
)
from authz.config import Config
from authz.domain import limits as limits_mod
from authz.domain.audit_event import AuditRecord, format_time
from authz.domain.extender_import import (
    STATUS_EXISTS,
    STATUS_INVALID,
    ImportItem,
    parse_extender_json,
)
from authz.domain.issuing import InvalidToken, TokenRequest, issue
from authz.domain.model import Token
from authz.domain.secrets import hash_secret

MAX_PAGE = 1000


class AdminError(Exception):
    """A refused admin operation; ``code`` is a gRPC-style category for the API layer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def not_found(token_id: str) -> AdminError:
    return AdminError("not_found", f"no token with id {token_id!r}")


@dataclass(frozen=True)
class LimitTest:
    allowed: bool
    matched_line: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    items: list[ImportItem]
    applied: bool
    ids: dict[int, str]
    """Item index → id of the token written (only when applied)."""


@dataclass(frozen=True)
class LimitCheck:
    """What is wrong with restriction lines before they are written: errors refuse them,
    warnings (lines that parse but can never match, or match more than meant) do not."""

    errors: list[tuple[int, str]]
    warnings: list[tuple[int, str]]


def check_limits(lines: Sequence[str]) -> LimitCheck:
    """The same validation create/edit apply, plus the lint warnings where limits has them
    (``limits.lint``), for forms that show problems while the lines are typed."""
    errors: list[tuple[int, str]] = []
    try:
        limits_mod.validate(list(lines))
    except limits_mod.InvalidLimits as e:
        errors = list(e.errors)
    lint = getattr(limits_mod, "lint", None)
    warnings: list[tuple[int, str]] = []
    if lint is not None and not errors:
        for w in lint(list(lines)):
            warnings.append((w[0], w[1]) if isinstance(w, tuple) else
                            (getattr(w, "line", 0), getattr(w, "message", str(w))))
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
        self.actor = actor
        self.clock = clock

    # --- admin audit ---------------------------------------------------------------------------

    async def _record(self, action: str, token_id: str, **details: Any) -> None:
        event = {
            "time": format_time(self.clock()),
            "kind": "admin",
            "action": action,
            "actor": self.actor,
            "token_id": token_id,
            "details": json.dumps(details, sort_keys=True, ensure_ascii=False),
        }
        with redis_errors(self.cfg.audit.stream):
            await self.client.xadd(
                self.cfg.audit.stream, event, maxlen=self.cfg.audit.max_len, approximate=True
            )

    # --- operations ----------------------------------------------------------------------------

    async def create(self, req: TokenRequest) -> tuple[Token, str]:
        req = replace(req, created_by=req.created_by or self.actor)
        try:
            token, secret = issue(
                req, now=self.clock(), max_lifetime_days=self.cfg.policy.max_lifetime_days
            )
        except InvalidToken as e:
            raise AdminError("invalid", "token refused: " + "; ".join(e.problems)) from None
        try:
            await self.store.create(token)
        except DuplicateSecret:
            raise AdminError("exists", "another token already uses this secret") from None
        await self._record("create", token.id, label=token.label, user=token.user,
                           imported=req.secret is not None)
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
        now = self.clock()
        tokens = [
            t for t in await self.store.list()
            if (not user or (t.user or "").casefold() == user.casefold())
            and (not label or label.casefold() in t.label.casefold())
            and (not state or t.state(now) == state)
        ]
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
        await self._get(token_id)
        when = self.clock() if at is None else at
        try:
            token = await self.store.revoke(token_id, when)
        except TokenNotFound:
            raise not_found(token_id) from None
        await self._record("revoke", token_id, revoked_at=format_time(token.revoked_at or when))
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
        if old.state(now) != "active":
            raise AdminError("failed_precondition", f"token {token_id} is not active")
        req = TokenRequest(
            label=old.label, user=old.user, logins=old.logins, expires_at=old.expires_at,
            limits=old.limits, ips=old.ips, on_behalf_of=old.on_behalf_of,
            created_by=self.actor,
        )
        try:
            new, secret = issue(req, now=now)
        except InvalidToken as e:
            raise AdminError("invalid", "rotation refused: " + "; ".join(e.problems)) from None
        await self.store.create(new)
        previous = await self.store.revoke(token_id, now + grace_seconds)
        await self._record("rotate", token_id, new_token_id=new.id, grace_seconds=grace_seconds)
        return new, secret, previous

    async def test_limits(
        self, token_id: str, *, method: str, url: str, body: bytes | None = None
    ) -> LimitTest:
        token = await self._get(token_id)
        base, _, query = url.partition("?")
        result = limits_mod.match(
            limits_mod.compile_limits(token.limits),
            method=method, url=base, query=query, body=body,
        )
        if result.allowed:
            line = result.line
            return LimitTest(True, line, f"allowed by {line!r}" if line else "token has no limits")
        return LimitTest(False, "", result.why)

    async def import_extender(self, data: bytes | str, *, apply: bool) -> ImportReport:
        now = self.clock()
        try:
            items = parse_extender_json(
                data, now=now, max_lifetime_days=self.cfg.policy.max_lifetime_days
            )
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
        await self._record("import", "", imported=len(ids),
                           skipped=sum(1 for it in checked if it.status == STATUS_EXISTS))
        return ImportReport(checked, True, ids)

    async def audit_query(self, **filters: Any) -> list[AuditRecord]:
        return await self.audit.query(**filters)
