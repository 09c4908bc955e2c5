"""``jira-authz``: serve, run the local stack, manage tokens.

Every error ends with a one-line reason on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from authz.config import Config, ConfigError, load_config
from authz.domain.issuing import DAY, InvalidToken, TokenRequest, issue
from authz.domain.model import Token

EXIT_USAGE = 2
EXIT_FAIL = 1


class CliError(Exception):
    """A one-line reason for the user; exit code 1."""


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _parse_time(text: str) -> float:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--expires-at: {text!r} is not an ISO-8601 date or time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None))
    url = getattr(args, "redis_url", None)
    if url:
        cfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=url))
    return cfg


def token_json(token: Token) -> dict[str, Any]:
    """Public view of a token: every field but the secret hash."""
    return {
        "id": token.id,
        "label": token.label,
        "user": token.user,
        "logins": list(token.logins),
        "created_at": _iso(token.created_at),
        "created_by": token.created_by,
        "expires_at": _iso(token.expires_at) or None,
        "limits": list(token.limits),
        "ips": list(token.ips),
        "on_behalf_of": list(token.on_behalf_of),
        "revoked_at": _iso(token.revoked_at) or None,
        "last_used_at": _iso(token.last_used_at) or None,
        "use_count": token.use_count,
        "state": state(token, time.time()),
    }


def state(token: Token, now: float) -> str:
    if token.is_revoked(now):
        return "revoked"
    if token.is_expired(now):
        return "expired"
    return "active"


async def _with_store(cfg: Config, fn: Any) -> Any:
    from authz.adapters.redis_conn import create_client
    from authz.adapters.redis_store import RedisTokenStore, StoreUnavailable

    client = create_client(cfg.redis)
    try:
        return await fn(RedisTokenStore(client, cfg.redis.key_prefix))
    except StoreUnavailable as e:
        raise CliError(f"cannot reach Redis at the configured URL: {e}") from None
    finally:
        await client.aclose()


# --- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from authz import logs
    from authz.server import serve

    cfg = _config(args)
    logs.setup(args.log_level)
    asyncio.run(serve(cfg))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from authz.stack.local import run_up

    return run_up(args)


def cmd_token_create(args: argparse.Namespace) -> int:
    cfg = _config(args)
    now = time.time()
    if args.expires_in_days is not None and args.expires_at is not None:
        raise CliError("give --expires-in-days or --expires-at, not both")
    expires_at = None
    if args.expires_in_days is not None:
        if args.expires_in_days <= 0:
            raise CliError("--expires-in-days must be > 0")
        expires_at = now + args.expires_in_days * DAY
    elif args.expires_at is not None:
        expires_at = _parse_time(args.expires_at)
    req = TokenRequest(
        label=args.label, user=args.user, logins=args.login, expires_at=expires_at,
        limits=args.limit, ips=args.ip, on_behalf_of=args.on_behalf_of,
        created_by=args.created_by, secret=args.secret,
    )
    try:
        token, secret = issue(req, now=now, max_lifetime_days=cfg.policy.max_lifetime_days)
    except InvalidToken as e:
        raise CliError("token refused: " + "; ".join(e.problems)) from None

    async def run(store: Any) -> None:
        await store.create(token)

    asyncio.run(_with_store(cfg, run))
    if args.json:
        print(json.dumps({**token_json(token), "secret": secret}))
    else:
        print(f"Created token {token.id} ({token.label or 'no label'}).")
        print(f"Secret (shown once, store it now): {secret}")
        login = token.user or "LOGIN"
        print(f"Try: curl -u '{login}:{secret}' https://JIRA/rest/api/2/myself")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    cfg = _config(args)
    tokens = asyncio.run(_with_store(cfg, lambda s: s.list()))
    rows = [token_json(t) for t in tokens]
    if args.json:
        print(json.dumps(rows))
        return 0
    cols = ("id", "label", "user", "state", "expires_at", "use_count", "last_used_at")
    table = [cols] + [tuple(str(r[c] if r[c] is not None else "") for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from authz.adapters.redis_store import TokenNotFound

    cfg = _config(args)

    async def run(store: Any) -> Token:
        try:
            return await store.revoke(args.id, time.time())
        except TokenNotFound:
            raise CliError(f"no token with id {args.id!r}") from None

    token = asyncio.run(_with_store(cfg, run))
    if args.json:
        print(json.dumps(token_json(token)))
    else:
        print(f"Revoked token {token.id} at {_iso(token.revoked_at)}.")
    return 0


# --- parser -----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (environment JIRA_AUTHZ_* overrides it)")
    p.add_argument("--redis-url", help="Redis URL (default: config, or JIRA_AUTHZ_REDIS_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-authz", description="API tokens for Jira behind Envoy ext_authz."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the ext_authz gRPC server")
    _common(p)
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("up", help="run the local stack: Redis, authz, Envoy, stub Jira")
    from authz.stack.local import add_up_arguments

    add_up_arguments(p)
    p.set_defaults(func=cmd_up)

    tok = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    p = tok.add_parser("create", help="create a token; prints its secret once")
    _common(p)
    p.add_argument("--label", default="")
    p.add_argument("--user", help="bind the token to this Jira user")
    p.add_argument("--login", action="append", default=[],
                   help="extra accepted login for a bound token (repeatable)")
    p.add_argument("--expires-in-days", type=float)
    p.add_argument("--expires-at", help="ISO-8601 expiry, e.g. 2027-01-31T00:00:00Z")
    p.add_argument("--limit", action="append", default=[], metavar="LINE",
                   help="restriction line (repeatable), e.g. '[get].*/rest/api/2/issue/.*'")
    p.add_argument("--ip", action="append", default=[], metavar="CIDR")
    p.add_argument("--on-behalf-of", action="append", default=[], metavar="USER|*")
    p.add_argument("--secret", help="import an existing secret (e.g. from Extender)")
    p.add_argument("--created-by", default="cli")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_token_create)

    p = tok.add_parser("list", help="list tokens")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_token_list)

    p = tok.add_parser("revoke", help="revoke a token on every replica within a second")
    _common(p)
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_token_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as e:
        print(f"jira-authz: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
