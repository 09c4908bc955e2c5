"""Plain data shared by every phase of a decision: the request, the token, the verdict.

Nothing here does I/O; Envoy's protobufs and Redis records are translated to and from these
types at the edges (``authz.envoyauth``, ``authz.adapters``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from authz.domain.lifecycle import token_state

NO_CONTEXT: Mapping[str, str] = MappingProxyType({})


class HttpRequest(NamedTuple):
    """What the decision needs to know about one HTTP request, as Envoy saw it.

    A NamedTuple (immutable like a frozen dataclass, built ~6x faster): one is made per Check.
    """

    method: str
    scheme: str
    host: str
    path: str
    """Path without the query string."""
    query: str
    """Raw query string without the leading ``?`` ('' when absent)."""
    headers: Mapping[str, str]
    """Lower-cased header names; repeated headers joined with ``,`` (Envoy's behaviour)."""
    source_ip: str
    body: bytes | None = None
    """Request body when Envoy sent it (``with_request_body``), else None."""
    body_truncated: bool = False
    request_id: str = ""
    trace_id: str = ""
    context: Mapping[str, str] = NO_CONTEXT
    """Envoy per-route ``context_extensions``."""

    @property
    def url(self) -> str:
        """``scheme://host/path``: what URL limit regexes are matched against (no query)."""
        return f"{self.scheme}://{self.host}{self.path}"


@dataclass(frozen=True, slots=True)
class Token:
    """A token record. Never holds the secret; ``secret_hash`` is SHA-256 hex of it."""

    id: str
    secret_hash: str
    label: str = ""
    user: str | None = None
    """Bound user (canonical login); None for an unbound token."""
    logins: tuple[str, ...] = ()
    """Extra logins accepted for a bound token (e.g. the user's e-mail address)."""
    created_at: float = 0.0
    created_by: str = ""
    expires_at: float | None = None
    limits: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    on_behalf_of: tuple[str, ...] = ()
    revoked_at: float | None = None
    last_used_at: float | None = None
    use_count: int = 0

    def is_revoked(self, now: float) -> bool:
        """Revoked from ``revoked_at`` on; a future time is a rotation's grace period."""
        return self.revoked_at is not None and now >= self.revoked_at

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def state(self, now: float) -> str:
        """active, rotating, expired or revoked: ``lifecycle.token_state`` (the one rule)."""
        return token_state(self, now)


class Outcome(enum.Enum):
    """What Envoy is told to do."""

    ALLOW = "allow"
    """Token request allowed: strip Authorization, inject the identity header."""
    PASS = "pass"
    """Not a token request: forward untouched except the identity header, which is removed."""
    DENY = "deny"


class Reason(enum.StrEnum):
    """Machine-readable reason; the label of the decisions metric and the audit ``reason``."""

    OK = "ok"
    NOT_A_TOKEN = "not_a_token"
    NO_CREDENTIALS = "no_credentials"
    UNAUTHENTICATED_DENIED = "unauthenticated_denied"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    MALFORMED_TOKEN = "malformed_token"
    UNKNOWN_TOKEN = "unknown_token"
    REVOKED = "revoked"
    EXPIRED = "expired"
    WRONG_USER = "wrong_user"
    BEARER_UNBOUND = "bearer_requires_bound_token"
    IP_NOT_ALLOWED = "ip_not_allowed"
    UNSUPPORTED_PATH = "unsupported_path"
    NO_LIMIT_MATCHED = "no_limit_matched"
    ON_BEHALF_NOT_ALLOWED = "on_behalf_of_not_allowed"
    NON_NORMAL_PATH = "non_normal_path"
    NON_CANONICAL_METHOD = "non_canonical_method"
    INVALID_HOST = "invalid_host"
    INVALID_SCHEME = "invalid_scheme"
    METHOD_OVERRIDE = "method_override"
    UNBOUND_WITH_SERVICE_CREDENTIAL = "unbound_token_with_service_credential"
    STORE_UNAVAILABLE = "store_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    INTERNAL_ERROR = "internal_error"


STATUS: Mapping[Reason, int] = MappingProxyType({
    Reason.OK: 200, Reason.NOT_A_TOKEN: 200, Reason.NO_CREDENTIALS: 200,
    Reason.UNAUTHENTICATED_DENIED: 401, Reason.MALFORMED_CREDENTIALS: 401,
    Reason.SCHEME_NOT_ALLOWED: 401, Reason.MALFORMED_TOKEN: 401, Reason.UNKNOWN_TOKEN: 401,
    Reason.REVOKED: 401, Reason.EXPIRED: 401, Reason.WRONG_USER: 401,
    Reason.BEARER_UNBOUND: 401, Reason.UNBOUND_WITH_SERVICE_CREDENTIAL: 401,
    Reason.IP_NOT_ALLOWED: 403, Reason.UNSUPPORTED_PATH: 403,
    Reason.NO_LIMIT_MATCHED: 403, Reason.ON_BEHALF_NOT_ALLOWED: 403,
    Reason.NON_NORMAL_PATH: 400, Reason.NON_CANONICAL_METHOD: 400, Reason.INVALID_HOST: 400,
    Reason.INVALID_SCHEME: 400, Reason.METHOD_OVERRIDE: 400,
    Reason.STORE_UNAVAILABLE: 503, Reason.AUDIT_UNAVAILABLE: 503, Reason.INTERNAL_ERROR: 503,
})
"""The one HTTP status each reason is answered with (docs/product.md §6): 401 for who you are,
403 for what you may do, 400 for a request that cannot be judged, 503 for "try again"."""


class Decision(NamedTuple):
    """The verdict plus everything the response builder and the audit event need.

    A NamedTuple for the same reason as ``HttpRequest``: one or two are made per Check.
    """

    outcome: Outcome
    reason: Reason
    status: int = 200
    """HTTP status for DENY (401, 403, 400, 503); 200 otherwise."""
    message: str = ""
    """Human-readable reason for the deny body and logs; never contains a secret."""
    token: Token | None = None
    login: str = ""
    effective_user: str = ""
    matched_limit: str = ""
    token_like: bool = False
    """The credentials were (or looked like) one of our tokens: the call is audited."""
    client_ip: str = ""
    """The client address the IP rule used; '' when the decision came before that rule."""

    @property
    def forwarded(self) -> bool:
        """Envoy lets the request through: ALLOW (a token call) or PASS (not one)."""
        return self.outcome is not Outcome.DENY


def deny(reason: Reason, message: str, **kw: object) -> Decision:
    """A DENY answered with the status ``STATUS`` gives its reason (the only way one is made)."""
    return Decision(Outcome.DENY, reason, STATUS[reason], message, **kw)  # type: ignore[arg-type]
