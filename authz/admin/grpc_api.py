"""The admin gRPC API (``proto/jira_authz/admin/v1``) over ``TokenAdmin``.

Served on its own port. Every call must present the admin credential: a client certificate
signed by the configured CA (mTLS), or ``authorization: Bearer <admin secret>`` metadata read
from a mounted file. Without either configured the API is not served at all (fail closed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from redis.asyncio import Redis

from authz._proto.jira_authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.adapters.redis_store import StoreError, StoreUnavailable
from authz.admin.operations import AdminError, TokenAdmin
from authz.config import Config
from authz.domain.audit_event import AuditRecord
from authz.domain.issuing import TokenRequest, issue_warnings
from authz.domain.model import Token

log = logging.getLogger(__name__)

_STATE = {
    "active": admin_pb2.TOKEN_STATE_ACTIVE,
    "expired": admin_pb2.TOKEN_STATE_EXPIRED,
    "revoked": admin_pb2.TOKEN_STATE_REVOKED,
    "rotating": admin_pb2.TOKEN_STATE_ROTATING,
}
_STATE_NAME = {v: k for k, v in _STATE.items()}
_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}
ACTOR_METADATA = "x-jira-authz-actor"

T = TypeVar("T")


def token_pb(token: Token, now: float) -> admin_pb2.Token:
    return admin_pb2.Token(
        id=token.id, label=token.label, user=token.user or "", logins=list(token.logins),
        created_at=token.created_at, created_by=token.created_by,
        expires_at=token.expires_at or 0.0, limits=list(token.limits), ips=list(token.ips),
        on_behalf_of=list(token.on_behalf_of), revoked_at=token.revoked_at or 0.0,
        last_used_at=token.last_used_at or 0.0, use_count=token.use_count,
        state=_STATE[token.state(now)], limit_warnings=limit_lint(token.limits),
    )


def limit_lint(lines: Any) -> list[str]:
    """Lint warnings of a token's lines (``domain.limits.lint``), for every answer that
    shows lines: the API says what the CLI and the import report say."""
    from authz.domain.limits import lint

    return lint(list(lines))


def token_from_pb(pb: admin_pb2.Token) -> Token:
    """For clients (the CLI in --admin-url mode): the public fields, no secret hash."""
    return Token(
        id=pb.id, secret_hash="", label=pb.label, user=pb.user or None, logins=tuple(pb.logins),
        created_at=pb.created_at, created_by=pb.created_by, expires_at=pb.expires_at or None,
        limits=tuple(pb.limits), ips=tuple(pb.ips), on_behalf_of=tuple(pb.on_behalf_of),
        revoked_at=pb.revoked_at or None, last_used_at=pb.last_used_at or None,
        use_count=pb.use_count,
    )


class AdminAuth:
    """Checks the admin credential of one call; returns the actor name for the audit."""

    def __init__(self, token_file: str, mtls: bool) -> None:
        self.mtls = mtls
        self._digest: bytes | None = None
        if token_file:
            secret = Path(token_file).read_text(encoding="utf-8").strip()
            if len(secret) < 16:
                raise ValueError(f"{token_file}: admin secret must be at least 16 characters")
            self._digest = hashlib.sha256(secret.encode()).digest()

    def refusal(self, context: grpc.aio.ServicerContext) -> str:
        """Why a call without an accepted credential is refused: none sent, or a wrong one
        (the two need different fixes; neither message says anything about the secret)."""
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        if md.get("authorization", "").strip():
            return "admin credential rejected: the bearer secret does not match admin.token_file"
        if self._digest is not None:
            return ("admin credential required: send authorization: Bearer <admin secret> "
                    "(CLI: --admin-token-file or JIRA_AUTHZ_ADMIN_TOKEN)")
        return "admin credential required: a client certificate signed by admin.client_ca_file"

    def actor(self, context: grpc.aio.ServicerContext) -> str | None:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        who = md.get(ACTOR_METADATA, "")[:100].strip() or "unknown"
        if self.mtls:
            auth = context.auth_context()
            names = auth.get("x509_common_name") or auth.get("x509_subject_alternative_name")
            if names:
                return f"{who} (cert {names[0].decode('utf-8', 'replace')})"
        if self._digest is not None:
            scheme, _, value = md.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and value:
                got = hashlib.sha256(value.strip().encode()).digest()
                if hmac.compare_digest(got, self._digest):
                    return f"{who} (admin token)"
        return None


class AdminServicer(admin_pb2_grpc.TokenAdminServicer):
    def __init__(self, client: Redis, cfg: Config, auth: AdminAuth) -> None:
        self.client = client
        self.cfg = cfg
        self.auth = auth

    async def _run(
        self, context: grpc.aio.ServicerContext, fn: Callable[[TokenAdmin], Awaitable[T]]
    ) -> T:
        actor = self.auth.actor(context)
        if actor is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, self.auth.refusal(context))
        admin = TokenAdmin(self.client, self.cfg, actor=actor or "")
        try:
            return await fn(admin)
        except AdminError as e:
            await context.abort(_CODES.get(e.code, grpc.StatusCode.INVALID_ARGUMENT), str(e))
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "Redis is unreachable")
        except StoreError as e:
            log.error("store error in admin call", extra={"error": str(e)})
            await context.abort(grpc.StatusCode.INTERNAL, "token store error")
        raise AssertionError("unreachable")  # context.abort raises

    async def CreateToken(self, request: Any, context: Any) -> admin_pb2.CreateTokenResponse:
        req = TokenRequest(
            label=request.label, user=request.user or None, logins=list(request.logins),
            expires_at=request.expires_at or None, limits=list(request.limits),
            ips=list(request.ips), on_behalf_of=list(request.on_behalf_of),
            secret=request.secret or None, any_user=request.any_user,
        )

        async def op(a: TokenAdmin) -> admin_pb2.CreateTokenResponse:
            token, secret = await a.create(req)
            return admin_pb2.CreateTokenResponse(token=token_pb(token, a.clock()), secret=secret,
                                                 warnings=limit_lint(token.limits)
                                                 + issue_warnings(token))

        return await self._run(context, op)

    async def GetToken(self, request: Any, context: Any) -> admin_pb2.Token:
        async def op(a: TokenAdmin) -> admin_pb2.Token:
            return token_pb(await a.get(request.id), a.clock())

        return await self._run(context, op)

    async def ListTokens(self, request: Any, context: Any) -> admin_pb2.ListTokensResponse:
        async def op(a: TokenAdmin) -> admin_pb2.ListTokensResponse:
            tokens, nxt = await a.list(
                user=request.user or None, label=request.label or None,
                state=_STATE_NAME.get(request.state), page_size=request.page_size,
                page_token=request.page_token,
                expiring_within=request.expiring_within_seconds or None,
                unused_for=request.unused_for_seconds or None,
            )
            now = a.clock()
            return admin_pb2.ListTokensResponse(
                tokens=[token_pb(t, now) for t in tokens], next_page_token=nxt
            )

        return await self._run(context, op)

    async def UpdateToken(self, request: Any, context: Any) -> admin_pb2.Token:
        async def op(a: TokenAdmin) -> admin_pb2.Token:
            token = await a.update(
                request.id,
                label=request.label if request.HasField("label") else None,
                limits=list(request.limits) if request.replace_limits else None,
            )
            return token_pb(token, a.clock())

        return await self._run(context, op)

    async def RevokeToken(self, request: Any, context: Any) -> admin_pb2.Token:
        async def op(a: TokenAdmin) -> admin_pb2.Token:
            return token_pb(await a.revoke(request.id), a.clock())

        return await self._run(context, op)

    async def RotateToken(self, request: Any, context: Any) -> admin_pb2.RotateTokenResponse:
        async def op(a: TokenAdmin) -> admin_pb2.RotateTokenResponse:
            new, secret, old = await a.rotate(request.id, grace_seconds=request.grace_seconds)
            now = a.clock()
            return admin_pb2.RotateTokenResponse(
                token=token_pb(new, now), secret=secret, previous=token_pb(old, now)
            )

        return await self._run(context, op)

    async def TestLimits(self, request: Any, context: Any) -> admin_pb2.TestLimitsResponse:
        async def op(a: TokenAdmin) -> admin_pb2.TestLimitsResponse:
            r = await a.test_limits(request.id, method=request.method or "GET",
                                    url=request.url, body=request.body or None,
                                    login=request.login, client_ip=request.client_ip,
                                    headers=sorted(request.headers.items()))
            return admin_pb2.TestLimitsResponse(
                allowed=r.allowed, matched_line=r.matched_line, reason=r.reason,
                status=r.status, code=r.code, effective_user=r.effective_user,
                client_ip=r.client_ip, url=r.url, login=r.login,
            )

        return await self._run(context, op)

    async def ImportTokens(self, request: Any, context: Any) -> admin_pb2.ImportTokensResponse:
        async def op(a: TokenAdmin) -> admin_pb2.ImportTokensResponse:
            rep = await a.import_extender(request.extender_json, apply=request.apply)
            return admin_pb2.ImportTokensResponse(
                applied=rep.applied,
                tokens=[
                    admin_pb2.ImportedToken(
                        label=it.label, user=it.user, id=rep.ids.get(it.index, ""),
                        status=it.status, problems=list(it.problems),
                        warnings=limit_lint(it.request.limits if it.request else ()),
                    )
                    for it in rep.items
                ],
            )

        return await self._run(context, op)

    async def QueryAudit(self, request: Any, context: Any) -> admin_pb2.QueryAuditResponse:
        async def op(a: TokenAdmin) -> admin_pb2.QueryAuditResponse:
            limit = min(request.limit or 100, 10000)
            records = await a.audit_query(
                token_id=request.token_id or None, user=request.user or None,
                since=request.since or None, until=request.until or None,
                decision=request.decision or None, limit=limit,
            )
            return admin_pb2.QueryAuditResponse(
                events=[admin_pb2.AuditEvent(fields=audit_fields(r), id=r.id) for r in records]
            )

        return await self._run(context, op)

    async def PruneTokens(self, request: Any, context: Any) -> admin_pb2.PruneTokensResponse:
        async def op(a: TokenAdmin) -> admin_pb2.PruneTokensResponse:
            rep = await a.prune(older_than=request.older_than_seconds, apply=request.apply)
            now = a.clock()
            return admin_pb2.PruneTokensResponse(applied=rep.applied, tokens=[
                admin_pb2.PrunedToken(token=token_pb(it.token, now), ended_at=it.ended_at,
                                      removed=it.removed)
                for it in rep.items
            ])

        return await self._run(context, op)


def audit_fields(record: AuditRecord) -> dict[str, str]:
    """The record's non-empty fields as strings (the entry id travels separately)."""
    out: dict[str, str] = dict(record.extra)
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name not in ("id", "extra") and value not in ("", None, 0):
            out[f.name] = str(value)
    return out


def build_admin_server(client: Redis, cfg: Config) -> grpc.aio.Server | None:
    """The admin server, or None (logged) when no admin credential is configured."""
    a = cfg.admin
    mtls = bool(a.tls_cert_file)
    if not a.token_file and not mtls:
        log.warning("admin API disabled: set admin.token_file or admin mTLS files")
        return None
    server = grpc.aio.server()
    admin_pb2_grpc.add_TokenAdminServicer_to_server(
        AdminServicer(client, cfg, AdminAuth(a.token_file, mtls)), server
    )
    if mtls:
        creds = grpc.ssl_server_credentials(
            [(Path(a.tls_key_file).read_bytes(), Path(a.tls_cert_file).read_bytes())],
            root_certificates=Path(a.client_ca_file).read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port(cfg.listen.admin, creds)
    else:
        port = server.add_insecure_port(cfg.listen.admin)
    if port == 0:
        raise OSError(f"cannot listen on {cfg.listen.admin}")
    return server
