"""One Check, top to bottom: screen → look the token up → judge → audit.

The only async glue on the request path; every rule lives in ``authz.domain``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, cast

from authz import metrics
from authz.domain.audit_event import build_event
from authz.domain.decide import Policy, judge, screen
from authz.domain.limits import CompiledLimits
from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Reason, Token, deny
from authz.domain.network import client_ip
from authz.domain.token_format import hash_secret

log = logging.getLogger(__name__)


class StoreUnavailableError(Exception):
    """The token store could not answer and no safe cached answer exists (→ 503)."""


class TokenLookup(Protocol):
    async def lookup(self, secret_hash: str) -> Token | None: ...


class CachedLookup(TokenLookup, Protocol):
    def cached(self, secret_hash: str) -> object:
        """The token (or None) when known without I/O, else any other object (a miss)."""


class AuditSink(Protocol):
    def emit(self, event: dict[str, str], *, token_id: str | None = None,
             used: bool = False) -> bool: ...

    def would_accept(self) -> bool: ...


class CheckService:
    def __init__(
        self,
        policy: Policy,
        tokens: TokenLookup,
        audit: AuditSink,
        *,
        unavailable: tuple[type[BaseException], ...] = (StoreUnavailableError,),
        include_query: bool = False,
        strict_audit: bool = False,
        clock: Callable[[], float] = time.time,
        compiled_limits: CompiledLimits | None = None,
    ) -> None:
        self.policy = policy
        self.tokens = tokens
        self.audit = audit
        self.unavailable = unavailable
        self.include_query = include_query
        self.strict_audit = strict_audit
        self.clock = clock
        self.compiled_limits = compiled_limits if compiled_limits is not None else (
            CompiledLimits())

    async def decide(self, req: HttpRequest) -> Decision:
        return (await self._decide(req))[0]

    async def _decide(self, req: HttpRequest) -> tuple[Decision, str | None]:
        """The decision, and the secret of well-formed credentials (for the audit's masking)."""
        first = screen(req, self.policy)
        if isinstance(first, Decision):
            return first, None
        try:
            token = await self.tokens.lookup(hash_secret(first.secret))
        except self.unavailable:
            metrics.REDIS_ERRORS.inc()
            return deny(Reason.STORE_UNAVAILABLE, "token store unavailable; try again",
                        login=first.login, token_like=True), first.secret
        return judge(req, first, token, self.policy, self.clock(),
                     self.compiled_limits), first.secret

    def check_now(self, req: HttpRequest) -> Decision | None:
        """``check`` when the decision needs no I/O (no token, or a cached one), else None:
        the caller then awaits ``check``. Same decision, audit and metrics. Never raises."""
        secret: str | None = None
        try:
            first = screen(req, self.policy)
            if isinstance(first, Decision):
                decision = first
            else:
                token = cast("CachedLookup", self.tokens).cached(hash_secret(first.secret))
                if token is not None and not isinstance(token, Token):
                    return None
                secret = first.secret
                decision = judge(req, first, token, self.policy, self.clock(),
                                 self.compiled_limits)
        except Exception:
            decision = self._failed(req)
        return self._record(req, decision, secret)

    async def check(self, req: HttpRequest) -> Decision:
        """Decide, enforce strict audit, record the event. Never raises."""
        secret: str | None = None
        try:
            decision, secret = await self._decide(req)
        except Exception:
            decision = self._failed(req)
        return self._record(req, decision, secret)

    @staticmethod
    def _failed(req: HttpRequest) -> Decision:
        log.exception("check failed", extra={"request_id": req.request_id})
        # Audited as a token call: whether it was one is unknown, and it must not vanish.
        return deny(Reason.INTERNAL_ERROR, "authorization failed; try again", token_like=True)

    def _record(self, req: HttpRequest, decision: Decision, secret: str | None) -> Decision:
        if decision.token_like:
            decision = self._audit(req, decision, secret)
        metrics.count_decision(decision.outcome, decision.reason)
        return decision

    def _audit(self, req: HttpRequest, decision: Decision, secret: str | None) -> Decision:
        kept = False
        try:
            if self.strict_audit and decision.forwarded and not self.audit.would_accept():
                decision = self._audit_unavailable(decision)
            ip = decision.client_ip or client_ip(
                req.source_ip, req.headers.get("x-forwarded-for"), self.policy.xff_trusted_hops,
                self.policy.envoy_appends_peer,
            )
            event = build_event(req, decision, now=self.clock(),
                                include_query=self.include_query, client_ip=ip, secret=secret)
            token_id = decision.token.id if decision.token else None
            kept = self.audit.emit(event, token_id=token_id,
                                   used=decision.outcome is Outcome.ALLOW)
        except Exception:
            log.exception("audit failed", extra={"request_id": req.request_id})
            metrics.count_audit_lost()  # no stream counted it: the alerted series must
            if self.strict_audit and decision.forwarded:
                decision = self._audit_unavailable(decision)
        if not kept:
            metrics.AUDIT_EMIT_FAILURES.inc()
        return decision

    @staticmethod
    def _audit_unavailable(decision: Decision) -> Decision:
        """The same decision (token, login, matched line...) turned into a retryable deny."""
        return decision._replace(
            outcome=Outcome.DENY, reason=Reason.AUDIT_UNAVAILABLE,
            status=STATUS[Reason.AUDIT_UNAVAILABLE], message="audit trail unavailable; try again",
            token_like=True,
        )
