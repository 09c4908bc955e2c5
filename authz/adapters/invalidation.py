"""The ``{prefix}invalidate`` channel's message format: every encoder and the parser.

A message is a JSON object ``{"op", "id", "hash", "ts"[, "revoked_at"]}``: ``op`` is what
changed (create, update, revoke), ``hash`` the token's secret hash (the cache's key), ``ts``
the publisher's wall clock (propagation delay), ``revoked_at`` the revocation time a revoke
took effect from. It is written in two languages: Python for ``create`` (the record is known
before the script runs) and Lua inside the update and revoke scripts (only Redis knows the
stored hash and the sticky revocation time). Both encoders live here, next to the parser, and
a round-trip test runs the Lua in a real Redis (tests/integration/test_redis_store.py).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

OPS = frozenset({"create", "update", "revoke"})


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One message on ``{prefix}invalidate``: what changed, and when it was published."""

    op: str
    id: str
    hash: str
    ts: float | None = None
    """Publisher's wall-clock ``time.time()``; lets subscribers measure propagation delay."""
    revoked_at: float | None = None


def encode(op: str, token_id: str, secret_hash: str, *, ts: float | None = None) -> str:
    """The Python encoder (``create``); ``ts`` defaults to now."""
    return json.dumps({"op": op, "id": token_id, "hash": secret_hash,
                       "ts": time.time() if ts is None else ts})


LUA_ENCODER = """
local function invalidation(op, id, hash, ts, revoked_at)
  local m = '{"op":' .. cjson.encode(op) .. ',"id":' .. cjson.encode(id) ..
    ',"hash":' .. cjson.encode(hash) .. ',"ts":' .. ts
  if revoked_at then m = m .. ',"revoked_at":' .. cjson.encode(revoked_at) end
  return m .. '}'
end
"""
"""The Lua encoder, prepended to the scripts that publish: ``invalidation(op, id, hash, ts
[, revoked_at])``. ``ts`` goes in verbatim (a Python ``repr`` of a float: cjson would round
it to 14 digits); ``revoked_at`` is the stored string, which the parser accepts."""


def parse(data: str | bytes) -> Invalidation | None:
    """Decode a channel message; None for anything malformed (a subscriber must not crash)."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    op, tid, h = raw.get("op"), raw.get("id"), raw.get("hash")
    if op not in OPS or not isinstance(tid, str) or not isinstance(h, str):
        return None
    return Invalidation(op, tid, h, _opt_number(raw.get("ts")), _opt_number(raw.get("revoked_at")))


def _opt_number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None
