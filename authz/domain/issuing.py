"""Creating a token: validate every field up front, so a bad token is never stored.

Shared by the CLI and the admin API; the only impure step is drawing the id and the secret.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from authz.domain import limits as limits_mod
from authz.domain import network, token_format
from authz.domain.model import Token

MAX_LABEL = 200
MAX_LOGIN = 255
DAY = 86400.0


class InvalidToken(ValueError):
    """The requested token is refused; ``problems`` lists every reason, one per field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class TokenRequest:
    label: str = ""
    user: str | None = None
    logins: Sequence[str] = ()
    expires_at: float | None = None
    limits: Sequence[str] = ()
    ips: Sequence[str] = ()
    on_behalf_of: Sequence[str] = ()
    created_by: str = ""
    created_at: float | None = None
    """Kept from an imported token; None: now."""
    use_count: int = 0
    """Kept from an imported token."""
    secret: str | None = field(default=None, repr=False)
    """An imported secret (Extender migration); None draws a new one."""
    any_user: bool = False
    """Explicitly asked-for unbound token (``--any-user``): without a user, any login may use
    it. Policy refuses an unbound request that does not say so."""


@dataclass(frozen=True)
class IssuePolicy:
    """``policy`` config as plain data (built by ``authz.policies``); every refusal names its
    key."""

    max_lifetime_days: float = 0.0
    require_expiry: bool = False
    max_active_tokens_per_user: int = 0
    allow_unbound: bool = False
    allow_unrestricted: bool = True
    refuse_limit_warnings: bool = False


UNBOUND_WARNING = ("warning: this token is unbound: ANY Jira login may use it and the request "
                   "runs as that login; bind it to a user (--user) unless that is intended")


def issue_warnings(token: Token) -> list[str]:
    """What the creator must be told even though the token was accepted."""
    return [UNBOUND_WARNING] if token.user is None else []


def policy_problems(
    req: TokenRequest, policy: IssuePolicy, *, now: float, active_for_user: int = 0,
    expired: bool = False,
) -> list[str]:
    """Every policy rule the request breaks. ``active_for_user``: usable tokens the bound user
    already holds (the caller counts them: that needs the store). An already expired import
    is history, not a new credential: only the binding rules apply to it."""
    problems: list[str] = []
    if req.user is None:
        if not req.any_user:
            problems.append("any_user: a token without --user may be used by ANY login; ask "
                            "for that explicitly with --any-user (admin API: any_user)")
        elif not policy.allow_unbound:
            problems.append("policy.allow_unbound: unbound tokens are not allowed; bind the "
                            "token to a user (--user)")
    elif req.any_user:
        problems.append("any_user: --any-user and --user contradict each other")
    if expired:
        return problems
    if policy.require_expiry and req.expires_at is None:
        problems.append("policy.require_expiry: tokens must have an expiry (--expires-in)")
    problems += limits_problems(req.limits, policy)
    cap = policy.max_active_tokens_per_user
    if cap > 0 and req.user is not None and active_for_user >= cap:
        problems.append(f"policy.max_active_tokens_per_user: user {req.user!r} already holds "
                        f"{active_for_user} usable token(s); the maximum is {cap}")
    return problems


def limits_problems(lines: Sequence[str], policy: IssuePolicy) -> list[str]:
    """The policy's rules on restriction lines, at creation and at every edit alike."""
    problems: list[str] = []
    if not policy.allow_unrestricted and not [x for x in lines if x.strip()]:
        problems.append("policy.allow_unrestricted: tokens must have at least one restriction "
                        "line (--limit)")
    if policy.refuse_limit_warnings:
        problems += [f"policy.refuse_limit_warnings: {w}" for w in limits_mod.lint(list(lines))]
    return problems


def new_token_id() -> str:
    """Short, public, non-secret: 12 hex characters."""
    return secrets.token_hex(6)


def _user_problem(what: str, value: str) -> str | None:
    if not value or value != value.strip():
        return f"{what} {value!r} is empty or has surrounding spaces"
    if len(value) > MAX_LOGIN:
        return f"{what} is longer than {MAX_LOGIN} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in ",:" for c in value):
        return f"{what} {value!r} contains a control character, ',' or ':'"
    return None


def validate_request(
    req: TokenRequest, *, now: float, max_lifetime_days: float = 0.0,
    allow_expired: bool = False, policy: IssuePolicy | None = None, active_for_user: int = 0,
) -> list[str]:
    """Every reason the request is refused (empty: acceptable). ``allow_expired`` is for
    imports, which keep an expired token's history. ``policy`` (the operations layer always
    passes it) adds the policy rules; its lifetime maximum replaces ``max_lifetime_days``."""
    if policy is not None:
        max_lifetime_days = policy.max_lifetime_days
    problems: list[str] = []
    if len(req.label) > MAX_LABEL or any(ord(c) < 0x20 for c in req.label):
        problems.append(f"label must be at most {MAX_LABEL} printable characters")
    if req.user is not None and (p := _user_problem("user", req.user)):
        problems.append(p)
    if req.logins and req.user is None:
        problems.append("extra logins need a bound user (--user)")
    problems += [p for x in req.logins if (p := _user_problem("login", x))]
    for x in req.on_behalf_of:
        if x != "*" and (p := _user_problem("on-behalf-of user", x)):
            problems.append(p)
    if req.expires_at is not None and not math.isfinite(req.expires_at):
        return [*problems, "expiry must be a finite time"]
    expired = req.expires_at is not None and req.expires_at <= now
    if expired and not allow_expired:
        problems.append("expiry must be in the future")
    if max_lifetime_days > 0 and not expired:
        latest = now + max_lifetime_days * DAY
        if req.expires_at is None:
            problems.append(f"policy.max_lifetime_days: policy requires an expiry within "
                            f"{max_lifetime_days:g} days")
        elif req.expires_at > latest:
            problems.append(f"policy.max_lifetime_days: expiry is beyond the policy maximum of "
                            f"{max_lifetime_days:g} days")
    if policy is not None:
        problems += policy_problems(req, policy, now=now, active_for_user=active_for_user,
                                    expired=expired)
    problems += [p for c in req.ips if (p := network.cidr_error(c))]
    try:
        limits_mod.validate(list(req.limits))
    except limits_mod.InvalidLimits as e:
        problems += [f"limit line {n}: {r}" for n, r in e.errors]
    if req.secret is not None and (p := token_format.check_importable(req.secret)):
        problems.append(p)
    return problems


def issue(
    req: TokenRequest, *, now: float, max_lifetime_days: float = 0.0, allow_expired: bool = False,
    policy: IssuePolicy | None = None, active_for_user: int = 0,
) -> tuple[Token, str]:
    """A new token record and its secret (shown once, never stored)."""
    problems = validate_request(
        req, now=now, max_lifetime_days=max_lifetime_days, allow_expired=allow_expired,
        policy=policy, active_for_user=active_for_user,
    )
    if problems:
        raise InvalidToken(problems)
    secret = req.secret if req.secret is not None else token_format.generate_secret()
    token = Token(
        id=new_token_id(),
        secret_hash=token_format.hash_secret(secret),
        label=req.label,
        user=req.user,
        logins=tuple(dict.fromkeys(req.logins)),
        created_at=req.created_at if req.created_at is not None else now,
        created_by=req.created_by,
        expires_at=req.expires_at,
        limits=limits_mod.validate(list(req.limits)),
        ips=tuple(c.strip() for c in req.ips),
        on_behalf_of=tuple(dict.fromkeys(req.on_behalf_of)),
        use_count=req.use_count,
    )
    return token, secret
