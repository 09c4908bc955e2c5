"""Creating a token: validate every field up front, so a bad token is never stored.

Shared by the CLI and the admin API; the only impure step is drawing the id and the secret.
"""

from __future__ import annotations

import math
import secrets as _random
from collections.abc import Sequence
from dataclasses import dataclass, field

from authz.domain import limits as limits_mod
from authz.domain import network
from authz.domain import secrets as secret_fmt
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


def new_token_id() -> str:
    """Short, public, non-secret: 12 hex characters."""
    return _random.token_hex(6)


def _user_problem(what: str, value: str) -> str | None:
    if not value or value != value.strip():
        return f"{what} {value!r} is empty or has surrounding spaces"
    if len(value) > MAX_LOGIN:
        return f"{what} is longer than {MAX_LOGIN} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in ",:" for c in value):
        return f"{what} {value!r} contains a control character, ',' or ':'"
    return None


def validate_request(
    req: TokenRequest, *, now: float, max_lifetime_days: float, allow_expired: bool = False
) -> list[str]:
    """Every reason the request is refused (empty: acceptable). ``allow_expired`` is for
    imports, which keep an expired token's history."""
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
            problems.append(f"policy requires an expiry within {max_lifetime_days:g} days")
        elif req.expires_at > latest:
            problems.append(f"expiry is beyond the policy maximum of {max_lifetime_days:g} days")
    problems += [p for c in req.ips if (p := network.cidr_error(c))]
    try:
        limits_mod.validate(list(req.limits))
    except limits_mod.InvalidLimits as e:
        problems += [f"limit line {n}: {r}" for n, r in e.errors]
    if req.secret is not None and (p := secret_fmt.check_importable(req.secret)):
        problems.append(p)
    return problems


def issue(
    req: TokenRequest, *, now: float, max_lifetime_days: float = 0.0, allow_expired: bool = False
) -> tuple[Token, str]:
    """A new token record and its secret (shown once, never stored)."""
    problems = validate_request(
        req, now=now, max_lifetime_days=max_lifetime_days, allow_expired=allow_expired
    )
    if problems:
        raise InvalidToken(problems)
    secret = req.secret if req.secret is not None else secret_fmt.generate_secret()
    token = Token(
        id=new_token_id(),
        secret_hash=secret_fmt.hash_secret(secret),
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
