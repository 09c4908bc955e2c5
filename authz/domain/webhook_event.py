"""Webhook events: what a receiver gets, and how it can tell the message came from us.

Pure. The payload is built from an allow-list of public fields (never the secret, never its
hash, never restriction lines or IPs that would tell a chat channel how to get past them). The
signature is HMAC-SHA256 over ``"{timestamp}.{body}"`` (the Stripe/Slack scheme): binding the
timestamp lets a receiver refuse replays older than it tolerates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any

from authz.domain.lifecycle import token_state
from authz.domain.model import Token

SIGNATURE_HEADER = "X-Jira-Authz-Signature"
TIMESTAMP_HEADER = "X-Jira-Authz-Timestamp"
EVENT_HEADER = "X-Jira-Authz-Event"
DELIVERY_HEADER = "X-Jira-Authz-Delivery"
"""The event id: deliveries are at least once, so a receiver de-duplicates on it."""

_TOKEN_FIELDS = ("id", "label", "user", "created_by")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def token_summary(token: Token, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(token, f) for f in _TOKEN_FIELDS}
    out.update(
        state=token_state(token, now),
        created_at=_iso(token.created_at),
        expires_at=_iso(token.expires_at),
        revoked_at=_iso(token.revoked_at),
        last_used_at=_iso(token.last_used_at),
    )
    return out


def build_event(
    kind: str, token: Token, *, now: float, actor: str = "", **details: Any
) -> dict[str, Any]:
    """One event; ``details`` are extra public facts (e.g. ``new_token_id`` of a rotation)."""
    return {
        "id": uuid.uuid4().hex,
        "type": kind,
        "time": _iso(now),
        "actor": actor,
        "token": token_summary(token, now),
        **({"details": details} if details else {}),
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers (and tests): constant-time comparison."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
