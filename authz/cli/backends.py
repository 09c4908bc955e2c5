"""Where CLI commands run: against Redis directly, or through a remote admin API.

Both backends expose the same async methods and return domain objects, so every command is
written once and works the same with ``--redis-url`` and with ``--admin-url``.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc

from authz.admin.operations import (
    AdminError,
    ImportReport,
    LimitTest,
    PruneItem,
    PruneReport,
    TokenAdmin,
)
from authz.config import Config
from authz.domain.audit_event import AuditRecord, parse_event
from authz.domain.extender_import import ImportItem
from authz.domain.issuing import TokenRequest
from authz.domain.model import Token
from authz.domain.network import parse_hostport


class BackendError(Exception):
    """One-line reason for the user."""


class Backend(Protocol):
    async def create(self, req: TokenRequest) -> tuple[Token, str]: ...
    async def get(self, token_id: str) -> Token: ...
    async def list(self, *, user: str | None, label: str | None, state: str | None,
                   page_size: int, page_token: str, expiring_within: float | None = None,
                   unused_for: float | None = None) -> tuple[list[Token], str]: ...
    async def prune(self, *, older_than: float, apply: bool) -> PruneReport: ...
    async def update(self, token_id: str, *, label: str | None,
                     limits: Sequence[str] | None) -> Token: ...
    async def revoke(self, token_id: str) -> Token: ...
    async def rotate(self, token_id: str, *, grace_seconds: float) -> tuple[Token, str, Token]: ...
    async def test_limits(self, token_id: str, *, method: str, url: str,
                          body: bytes | None, login: str = "", client_ip: str = "",
                          headers: Sequence[tuple[str, str]] = ()) -> LimitTest: ...
    async def import_extender(self, data: bytes, *, apply: bool) -> ImportReport: ...
    async def audit(self, **filters: Any) -> list[AuditRecord]: ...
    async def close(self) -> None: ...


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


class DirectBackend:
    """Straight to Redis (``--redis-url``): for operators with access to the store."""

    def __init__(self, cfg: Config, actor: str) -> None:
        from authz.adapters.redis_conn import create_client

        self.client = create_client(cfg.redis)
        self.admin = TokenAdmin(self.client, cfg, actor=f"{actor} (cli)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.admin, name)

    async def revoke(self, token_id: str) -> Token:
        return await self.admin.revoke(token_id)

    async def audit(self, **filters: Any) -> list[AuditRecord]:
        return await self.admin.audit_query(**filters)

    async def close(self) -> None:
        await self.client.aclose()


class RemoteBackend:
    """Through the admin gRPC API (``--admin-url``) with the admin credential."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        ca_file: str | None,
        cert_file: str | None,
        key_file: str | None,
        actor: str,
    ) -> None:
        from authz._proto.jira_authz.admin.v1 import admin_pb2, admin_pb2_grpc

        self.pb = admin_pb2
        target, secure = admin_target(url)
        secure = secure or bool(cert_file)
        if secure:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(ca_file).read_bytes() if ca_file else None,
                private_key=Path(key_file).read_bytes() if key_file else None,
                certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
            )
            self.channel = grpc.aio.secure_channel(target, creds)
        else:
            self.channel = grpc.aio.insecure_channel(target)
        self.stub = admin_pb2_grpc.TokenAdminStub(self.channel)
        self.metadata: list[tuple[str, str]] = [("x-jira-authz-actor", actor)]
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=30)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise AdminError("not_found", e.details() or "not found") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise AdminError("invalid", e.details() or "invalid") from None
            raise BackendError(f"admin API: {code.name.lower()}: {e.details()}") from None

    def _token(self, pb: Any) -> Token:
        from authz.admin.grpc_api import token_from_pb

        return token_from_pb(pb)

    async def create(self, req: TokenRequest) -> tuple[Token, str]:
        r = await self._call("CreateToken", self.pb.CreateTokenRequest(
            label=req.label, user=req.user or "", logins=list(req.logins),
            expires_at=req.expires_at or 0.0, limits=list(req.limits), ips=list(req.ips),
            on_behalf_of=list(req.on_behalf_of), secret=req.secret or "",
            any_user=req.any_user,
        ))
        return self._token(r.token), r.secret

    async def get(self, token_id: str) -> Token:
        return self._token(await self._call("GetToken", self.pb.GetTokenRequest(id=token_id)))

    async def list(self, *, user: str | None, label: str | None, state: str | None,
                   page_size: int, page_token: str, expiring_within: float | None = None,
                   unused_for: float | None = None) -> tuple[list[Token], str]:
        states = {"active": 1, "expired": 2, "revoked": 3, "rotating": 4}
        r = await self._call("ListTokens", self.pb.ListTokensRequest(
            user=user or "", label=label or "", state=states.get(state or "", 0),
            page_size=page_size, page_token=page_token,
            expiring_within_seconds=expiring_within or 0.0, unused_for_seconds=unused_for or 0.0,
        ))
        return [self._token(t) for t in r.tokens], r.next_page_token

    async def prune(self, *, older_than: float, apply: bool) -> PruneReport:
        r = await self._call("PruneTokens", self.pb.PruneTokensRequest(
            older_than_seconds=older_than, apply=apply))
        return PruneReport([PruneItem(self._token(t.token), t.ended_at, t.removed)
                            for t in r.tokens], r.applied, older_than)

    async def update(self, token_id: str, *, label: str | None,
                     limits: Sequence[str] | None) -> Token:
        req = self.pb.UpdateTokenRequest(id=token_id, replace_limits=limits is not None,
                                         limits=list(limits or ()))
        if label is not None:
            req.label = label
        return self._token(await self._call("UpdateToken", req))

    async def revoke(self, token_id: str) -> Token:
        return self._token(await self._call("RevokeToken",
                                            self.pb.RevokeTokenRequest(id=token_id)))

    async def rotate(self, token_id: str, *, grace_seconds: float) -> tuple[Token, str, Token]:
        r = await self._call("RotateToken", self.pb.RotateTokenRequest(
            id=token_id, grace_seconds=grace_seconds))
        return self._token(r.token), r.secret, self._token(r.previous)

    async def test_limits(self, token_id: str, *, method: str, url: str,
                          body: bytes | None, login: str = "", client_ip: str = "",
                          headers: Sequence[tuple[str, str]] = ()) -> LimitTest:
        joined: dict[str, str] = {}
        for name, value in headers:
            key = name.strip().lower()
            joined[key] = f"{joined[key]},{value.strip()}" if key in joined else value.strip()
        r = await self._call("TestLimits", self.pb.TestLimitsRequest(
            id=token_id, method=method, url=url, body=body or b"", login=login,
            client_ip=client_ip, headers=joined))
        return LimitTest(r.allowed, r.matched_line, r.reason, r.status, r.code,
                         r.effective_user, r.client_ip, r.url, r.login)

    async def import_extender(self, data: bytes, *, apply: bool) -> ImportReport:
        r = await self._call("ImportTokens", self.pb.ImportTokensRequest(
            extender_json=data, apply=apply))
        items = [ImportItem(i, t.label, t.user, None, t.status, tuple(t.problems))
                 for i, t in enumerate(r.tokens, 1)]
        ids = {i: t.id for i, t in enumerate(r.tokens, 1) if t.id}
        warnings = {i: list(t.warnings) for i, t in enumerate(r.tokens, 1) if t.warnings}
        return ImportReport(items, r.applied, ids, warnings)

    async def audit(self, **filters: Any) -> list[AuditRecord]:
        r = await self._call("QueryAudit", self.pb.QueryAuditRequest(
            token_id=filters.get("token_id") or "", user=filters.get("user") or "",
            since=filters.get("since") or 0.0, until=filters.get("until") or 0.0,
            decision=filters.get("decision") or "", limit=filters.get("limit") or 100,
        ))
        return [parse_event(dict(e.fields), e.id) for e in r.events]

    async def close(self) -> None:
        await self.channel.close()


_PLAIN = ("grpc://", "http://")
_TLS = ("https://", "grpcs://")


def admin_target(url: str) -> tuple[str, bool]:
    """``host:port`` and whether TLS is used, from ``--admin-url``; one line when unusable
    (gRPC's own parser answers 'Misformatted domain name' for anything unexpected)."""
    text = url.strip()
    secure = text.startswith(_TLS)
    for prefix in (*_PLAIN, *_TLS):
        text = text.removeprefix(prefix)
    text = text.rstrip("/")
    parsed = parse_hostport(text)
    if (parsed is None or parsed[1] == 0 or "/" in parsed[0]
            or "://" in text or any(c.isspace() for c in text)):
        raise BackendError(f"--admin-url {url!r}: expected host:port, grpc://host:port or "
                           "https://host:port (the admin API is gRPC, with no path)")
    return text, secure


def admin_secret(text: str, source: str) -> str:
    """The admin bearer secret: one line of visible ASCII (a newline or a space inside would
    break the gRPC metadata with a core error)."""
    secret = text.strip()
    if not secret:
        raise BackendError(f"{source} is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in secret):
        raise BackendError(f"{source}: the admin secret must be one line of visible ASCII "
                           "characters (no spaces, no second line)")
    return secret


def open_backend(args: Any, cfg: Config) -> Backend:
    actor = default_actor()
    if getattr(args, "admin_url", None):
        token = None
        if args.admin_token_file:
            token = admin_secret(Path(args.admin_token_file).read_text(encoding="utf-8"),
                                 args.admin_token_file)
        elif os.environ.get("JIRA_AUTHZ_ADMIN_TOKEN"):
            token = admin_secret(os.environ["JIRA_AUTHZ_ADMIN_TOKEN"], "JIRA_AUTHZ_ADMIN_TOKEN")
        return RemoteBackend(args.admin_url, token=token, ca_file=args.admin_ca,
                             cert_file=args.admin_cert, key_file=args.admin_key, actor=actor)
    return DirectBackend(cfg, actor)
