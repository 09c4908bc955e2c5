"""Audit events (product.md §7): one flat string map per token call, and its parsed read-back form.

Pure: the adapter (``authz.adapters.audit_stream``) writes the map with XADD and reads it back
with XRANGE. The event is built from an allow-list of fields, so no request header other than
``user-agent`` can reach the audit, and any fragment of the ``Authorization`` credential that
still turns up in a field (a client pasting its secret into the query or user agent) is masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from authz.domain.logins import same_user
from authz.domain.model import Decision, HttpRequest, Outcome

USER_AGENT_MAX = 512
"""User agents are client-chosen; capped so one event stays small."""

FIELD_CAPS: dict[str, int] = {
    "token_id": 64, "token_label": 256, "token_user": 256, "login": 256,
    "effective_user": 256, "method": 16, "scheme": 16, "host": 256, "path": 2048,
    "query": 2048, "reason": 64, "status": 8, "matched_limit": 2048, "client_ip": 64,
    "user_agent": USER_AGENT_MAX, "request_id": 128, "trace_id": 64, "decision": 16,
    "time": 32,
}
"""Most characters kept of each field of a token call's event (known token)."""

UNTRUSTED_CAPS: dict[str, int] = {
    **FIELD_CAPS, "login": 128, "host": 128, "path": 512, "query": 512, "user_agent": 128,
    "request_id": 64,
}
"""Tighter caps for calls without a valid token: anyone can send them."""

TRUNCATED_FIELD = "truncated"
"""Names of the fields cut to their cap, comma-separated; absent when nothing was cut."""

EVENT_FIELDS: tuple[str, ...] = (
    "time",
    "token_id",
    "token_label",
    "token_user",
    "login",
    "effective_user",
    "method",
    "scheme",
    "host",
    "path",
    "decision",
    "reason",
    "status",
    "matched_limit",
    "client_ip",
    "user_agent",
    "request_id",
    "trace_id",
)
"""Fields of every event; ``query`` is added only when ``audit.include_query`` is on."""

OPTIONAL_FIELDS: tuple[str, ...] = ("query",)
"""Fields an event may carry besides ``EVENT_FIELDS`` (read back as ``AuditRecord`` fields)."""

ADMIN_FIELDS: tuple[str, ...] = ("time", "kind", "action", "actor", "token_id", "details")
"""Fields of an administrative event (``kind`` = ``admin``): create, revoke, rotate... The
reader keeps the ones ``AuditRecord`` has no field for in ``extra``."""

_MASK = "***"
_MIN_SECRET_LEN = 8
"""Shorter credential fragments are not masked: they would mask ordinary text (e.g. "Basic")."""


_second: list[tuple[int, str]] = [(-1, "")]
"""The last whole second formatted: every audit event formats a time, most in the same second."""


def format_time(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    whole = math.floor(ts)
    micro = round((ts - whole) * 1e6)  # rounded to microseconds first, as datetime does
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    ms = micro // 1000
    cached_second, prefix = _second[0]
    if whole != cached_second:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (whole, prefix)
    return f"{prefix}.{ms:03d}Z"


def parse_time(text: str) -> float | None:
    """Inverse of :func:`format_time`; None when ``text`` is not a timestamp."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _credential_fragments(authorization: str) -> list[str]:
    """Every string that would disclose the credential: raw value, scheme payload, decoded secret.

    Longest first, so masking a longer fragment happens before its substrings are considered.
    """
    raw = authorization.strip()
    found = {raw}
    scheme, _, payload = raw.partition(" ")
    payload = payload.strip()
    found.add(payload)
    if scheme.lower() == "basic" and payload:
        try:
            decoded = base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        found.add(decoded)
        found.add(decoded.partition(":")[2])
    return sorted((f for f in found if len(f) >= _MIN_SECRET_LEN), key=len, reverse=True)


def _disclosure_probes(authorization: str, secret: str | None) -> tuple[str, ...] | None:
    """Strings that every credential fragment contains, or None to derive the fragments.

    ``secret`` is the secret parsed from this same header when it parsed as credentials: the
    raw value contains its payload, and the decoded ``login:secret`` contains the secret, so a
    field that discloses any fragment contains one of these two — without decoding again.
    """
    if secret is None or len(secret) < _MIN_SECRET_LEN:
        return None
    raw = authorization.strip()
    payload = raw.partition(" ")[2].strip()
    return (payload if len(payload) >= _MIN_SECRET_LEN else raw), secret


def _mask(value: str, fragments: list[str]) -> str:
    # Each replacement shortens the value (mask < fragment), so the loop terminates, and it
    # repeats until no fragment remains even where masking joined pieces into a new one.
    changed = True
    while changed:
        changed = False
        for frag in fragments:
            if frag in value:
                value = value.replace(frag, _MASK)
                changed = True
    return value


def build_event(
    request: HttpRequest,
    decision: Decision,
    *,
    now: float,
    include_query: bool,
    client_ip: str | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """The XADD field map for one decision; every value a string, '' when absent.

    ``client_ip`` is the address the decision used (X-Forwarded-For hops); Envoy's socket
    address (``request.source_ip``) when not given. ``secret``: the secret the request's
    ``Authorization`` header parsed to as well-formed credentials, if it did (a quicker check
    for fragments to mask); the masking is the same either way.
    """
    token = decision.token
    if decision.outcome is Outcome.DENY:
        verdict = "deny"
    elif decision.outcome is Outcome.ALLOW:
        verdict = "allow"
    else:
        verdict = decision.outcome.value
    event = {
        "time": format_time(now),
        "token_id": token.id if token else "",
        "token_label": token.label if token else "",
        "token_user": (token.user or "") if token else "",
        "login": decision.login,
        "effective_user": decision.effective_user,
        "method": request.method,
        "scheme": request.scheme,
        "host": request.host,
        "path": request.path,
        "decision": verdict,
        "reason": decision.reason.value,
        "status": str(decision.status),
        "matched_limit": decision.matched_limit,
        "client_ip": request.source_ip if client_ip is None else client_ip,
        "user_agent": request.headers.get("user-agent", "")[: USER_AGENT_MAX + 1],
        "request_id": request.request_id,
        "trace_id": request.trace_id,
    }
    if include_query:
        event["query"] = request.query
    authorization = request.headers.get("authorization", "")
    if authorization:
        # A fragment inside any value is inside their join; the (usual) miss skips the loop.
        joined = "\x00".join(event.values())
        probes = _disclosure_probes(authorization, secret)
        if probes is None or any(p in joined for p in probes):
            fragments = _credential_fragments(authorization)
            if any(f in joined for f in fragments):
                event = {k: _mask(v, fragments) for k, v in event.items()}
    return cap_fields(event, FIELD_CAPS if token is not None else UNTRUSTED_CAPS)


def admin_event(
    *, now: float, action: str, actor: str, token_id: str, details: Mapping[str, object]
) -> dict[str, str]:
    """The field map of one administrative action (``ADMIN_FIELDS``); never a secret."""
    event = {
        "time": format_time(now),
        "kind": "admin",
        "action": action,
        "actor": actor,
        "token_id": token_id,
        "details": json.dumps(dict(details), sort_keys=True, ensure_ascii=False),
    }
    assert tuple(event) == ADMIN_FIELDS
    return event


def cap_fields(event: dict[str, str], caps: Mapping[str, int]) -> dict[str, str]:
    """Every value cut to its cap (unknown fields to 256), the cut ones named in ``truncated``.

    Masking runs first, so a secret is never half-kept by a cut.
    """
    cut: list[str] = []
    for k, v in event.items():
        cap = caps.get(k, 256)
        if len(v) > cap:
            event[k] = v[:cap]
            cut.append(k)
    if cut:
        event[TRUNCATED_FIELD] = ",".join(cut)
    return event


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit event as read back from the stream (for the admin audit query)."""

    time: str
    token_id: str = ""
    token_label: str = ""
    token_user: str = ""
    login: str = ""
    effective_user: str = ""
    method: str = ""
    scheme: str = ""
    host: str = ""
    path: str = ""
    query: str = ""
    decision: str = ""
    reason: str = ""
    status: int = 0
    matched_limit: str = ""
    client_ip: str = ""
    user_agent: str = ""
    request_id: str = ""
    trace_id: str = ""
    id: str = ""
    """Stream entry ID (``<ms>-<seq>``, Redis's clock at write time); '' when unknown."""
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Fields this version does not know (e.g. the admin events' ``kind``/``action``)."""

    @property
    def timestamp(self) -> float:
        """Event time in epoch seconds; falls back to the entry ID's write time."""
        ts = parse_time(self.time)
        if ts is not None:
            return ts
        ms, _, _ = self.id.partition("-")
        return int(ms) / 1000 if ms.isascii() and ms.isdigit() else 0.0

    def matches_user(self, user: str) -> bool:
        """Token user, login or effective user equals ``user`` (case-insensitive, as logins)."""
        return any(
            v and same_user(v, user) for v in (self.token_user, self.login, self.effective_user)
        )


def as_text(v: str | bytes) -> str:
    """A stream field, key or entry ID as text, whether the client decodes responses or not."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def stream_id_ms(ts: float) -> int:
    """Epoch seconds -> the millisecond part of a stream entry ID (never negative)."""
    return max(0, int(ts * 1000))


_RECORD_STR_FIELDS = frozenset(EVENT_FIELDS) | frozenset(OPTIONAL_FIELDS)


def parse_event(
    fields: Mapping[str, str] | Mapping[bytes, bytes], entry_id: str | bytes = ""
) -> AuditRecord:
    """Stream entry fields (bytes or str) -> AuditRecord; unknown fields are ignored."""
    kv = {as_text(k): as_text(v) for k, v in fields.items()}
    args: dict[str, str] = {k: v for k, v in kv.items() if k in _RECORD_STR_FIELDS}
    extra = {k: v for k, v in kv.items() if k not in _RECORD_STR_FIELDS}
    try:
        status = int(args.pop("status", "0"))
    except ValueError:
        status = 0
    args.setdefault("time", "")
    return AuditRecord(status=status, id=as_text(entry_id), extra=extra, **args)
