"""A token's lifecycle as pure functions: durations, its state at a time, what lists filter on.

One place for these rules so ``token show``, ``token list``, the admin API, the console, the
lifecycle metrics and ``prune`` can never disagree about what "rotating" or "stale" means.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.domain.logins import same_user

if TYPE_CHECKING:  # model imports this module; the type is only needed for hints
    from authz.domain.model import Token

ACTIVE = "active"
EXPIRED = "expired"
REVOKED = "revoked"
ROTATING = "rotating"
"""Revoked in the future (``rotate --grace-seconds``): it still works until ``revoked_at``."""
STATES = (ACTIVE, ROTATING, EXPIRED, REVOKED)
USABLE = frozenset({ACTIVE, ROTATING})

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", re.ASCII)
MAX_DURATION = 100 * 365 * 86400.0


class InvalidDuration(ValueError):
    pass


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a sum such as ``1d12h`` -> seconds.

    A bare number is refused: "30" could be seconds or days, and a wrong guess at a prune or
    an expiry is costly."""
    s = text.strip().lower() if isinstance(text, str) else ""
    if not s:
        raise InvalidDuration("empty duration; use a number with a unit: 30s, 15m, 12h, 30d")
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise InvalidDuration(f"{text!r} is not a duration; use a number with a unit s, m, h, d "
                              "or w, e.g. 30d or 1d12h")
    if not math.isfinite(total) or total > MAX_DURATION:
        raise InvalidDuration(f"{text!r} is longer than 100 years")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact unit form (``1209600`` -> ``14d``); for labels and messages."""
    for unit in ("w", "d", "h", "m"):
        n = seconds / UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds:g}s"


def token_state(token: Token, now: float) -> str:
    """active, rotating, expired or revoked at ``now``.

    Revocation that has happened wins; an expiry that has passed wins over a pending
    revocation (a rotating token whose expiry comes first is simply expired)."""
    revoked_at, expires_at = token.revoked_at, token.expires_at
    if revoked_at is not None and now >= revoked_at:
        return REVOKED
    if expires_at is not None and now >= expires_at:
        return EXPIRED
    if revoked_at is not None:
        return ROTATING
    return ACTIVE


def ended_at(token: Token, now: float) -> float | None:
    """When the token stopped working (earliest of a past revocation and a past expiry)."""
    times = [t for t in (token.revoked_at, token.expires_at) if t is not None and t <= now]
    return min(times) if times else None


def last_activity(token: Token) -> float:
    """Last use, or creation for a token never used: what "unused for N days" measures."""
    return token.last_used_at if token.last_used_at is not None else token.created_at


@dataclass(frozen=True)
class TokenFilter:
    """The list filters shared by the CLI, the admin API and the console (all optional)."""

    user: str | None = None
    label: str | None = None
    state: str | None = None
    expiring_within: float | None = None
    """Usable tokens whose expiry falls in (now, now + this]."""
    unused_for: float | None = None
    """Usable tokens not used (or, never used, created) for at least this long."""

    def problems(self) -> list[str]:
        out = []
        if self.state is not None and self.state not in STATES:
            out.append(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        for name in ("expiring_within", "unused_for"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v <= 0):
                out.append(f"{name} must be a duration > 0")
        return out

    def matches(self, token: Token, now: float) -> bool:
        if self.user and (token.user is None or not same_user(token.user, self.user)):
            return False
        if self.label and self.label.casefold() not in token.label.casefold():
            return False
        state = token_state(token, now)
        if self.state and state != self.state:
            return False
        if self.expiring_within is not None and not expiring(token, now, self.expiring_within):
            return False
        return self.unused_for is None or unused(token, now, self.unused_for)


def expiring(token: Token, now: float, window: float) -> bool:
    return (
        token_state(token, now) in USABLE
        and token.expires_at is not None
        and now < token.expires_at <= now + window
    )


def unused(token: Token, now: float, period: float) -> bool:
    return token_state(token, now) in USABLE and last_activity(token) <= now - period


def prunable(token: Token, now: float, older_than: float) -> bool:
    """Expired or revoked for at least ``older_than`` (a rotating token is still in use)."""
    end = ended_at(token, now)
    return end is not None and token_state(token, now) in (EXPIRED, REVOKED) and (
        end <= now - older_than
    )


@dataclass
class Summary:
    """Counts behind the lifecycle metrics (one pass over every token)."""

    by_state: dict[str, int]
    expiring: int = 0
    unused: int = 0
    total: int = 0

    @classmethod
    def empty(cls) -> Summary:
        return cls({s: 0 for s in STATES})

    def add(self, token: Token, now: float, *, window: float, unused_after: float) -> str:
        """Count one token; returns its state."""
        state = token_state(token, now)
        self.by_state[state] += 1
        self.total += 1
        if state in USABLE:
            exp = token.expires_at
            if exp is not None and exp <= now + window:
                self.expiring += 1
            if last_activity(token) <= now - unused_after:
                self.unused += 1
        return state
