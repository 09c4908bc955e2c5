"""Reading Extender's ``/rest/extender/1.0/tokenTools/get`` JSON into token requests.

Pure: the caller decides whether to write (``--apply``). Every problem is reported with the
token's label and, for restriction lines, the line number; one bad token makes the whole import
refuse to apply, so nothing is ever half-imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from authz.domain import limits as limits_mod
from authz.domain.issuing import IssuePolicy, TokenRequest, validate_request

STATUS_NEW = "new"
STATUS_EXPIRED = "expired"
STATUS_INVALID = "invalid"
STATUS_EXISTS = "exists"


class ImportFormatError(ValueError):
    """The file is not Extender's tokenTools/get JSON at all."""


@dataclass(frozen=True)
class ImportItem:
    index: int
    label: str
    user: str
    request: TokenRequest | None = field(repr=False)
    status: str
    problems: tuple[str, ...] = ()


def _split_limits(text: str) -> list[str]:
    # Extender accepts '\n', a literal backslash-n and '<br>' as separators.
    return limits_mod.split_lines(text.replace("\\n", "\n"))


def _millis(value: Any, what: str, problems: list[str]) -> float | None:
    if value in (None, "", 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{what} {value!r} is not a millisecond timestamp")
        return None
    return float(value) / 1000.0


def _ips(value: Any, problems: list[str]) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, str):
        problems.append(f"ip {value!r} is not a string")
        return []
    return [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]


def parse_extender_json(
    data: bytes | str, *, now: float, max_lifetime_days: float = 0.0,
    policy: IssuePolicy | None = None,
) -> list[ImportItem]:
    """One item per token. With ``policy`` every policy rule applies per token except the
    count per user, which needs the store (the operations layer adds it)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportFormatError(f"not JSON: {e}") from None
    tokens = doc.get("tokens") if isinstance(doc, dict) else doc
    if not isinstance(tokens, list):
        raise ImportFormatError("expected an object with a 'tokens' list")
    items: list[ImportItem] = []
    for i, raw in enumerate(tokens, 1):
        if not isinstance(raw, dict):
            items.append(ImportItem(i, "", "", None, STATUS_INVALID, ("entry is not an object",)))
            continue
        items.append(_item(i, raw, now=now, max_lifetime_days=max_lifetime_days, policy=policy))
    return items


def _item(
    i: int, raw: dict[str, Any], *, now: float, max_lifetime_days: float,
    policy: IssuePolicy | None,
) -> ImportItem:
    problems: list[str] = []
    label_raw, user_raw = raw.get("label"), raw.get("user")
    label: str = label_raw if isinstance(label_raw, str) else ""
    user: str = user_raw if isinstance(user_raw, str) else ""
    secret = raw.get("token")
    if not isinstance(secret, str) or not secret:
        problems.append("no token secret (exported in Extender's secure mode?)")
        secret = None
    limit_text = raw.get("limitTo") or ""
    lines: list[str] = []
    if not isinstance(limit_text, str):
        problems.append("limitTo is not a string")
    else:
        lines = _split_limits(limit_text)
    expires_at = _millis(raw.get("validUntil"), "validUntil", problems)
    created_at = _millis(raw.get("dateCreated"), "dateCreated", problems)
    counter = raw.get("counter", 0)
    use_count = counter if isinstance(counter, int) and not isinstance(counter, bool) else 0
    req = TokenRequest(
        label=label,
        user=user or None,
        expires_at=expires_at,
        limits=lines,
        ips=_ips(raw.get("ip"), problems),
        created_by="extender-import",
        created_at=created_at,
        use_count=use_count,
        secret=secret,
        any_user=not user,  # Extender's unbound tokens are unbound on purpose
    )
    # An expired token is imported as expired: its history matters, and it stays refused.
    problems += validate_request(
        req, now=now, max_lifetime_days=max_lifetime_days, allow_expired=True, policy=policy
    )
    expired = expires_at is not None and expires_at <= now
    status = STATUS_INVALID if problems else (STATUS_EXPIRED if expired else STATUS_NEW)
    return ImportItem(i, label, user, req, status, tuple(problems))
