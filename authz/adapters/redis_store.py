"""Token records in Redis: the only state the service has (layout in docs/architecture.md).

| key                           | type    | content                                  |
|-------------------------------|---------|------------------------------------------|
| ``{prefix}token:{id}``        | hash    | the record, see ``encode_token``         |
| ``{prefix}secret:{sha256hex}``| string  | id of the token owning that secret hash  |
| ``{prefix}tokens``            | set     | every token id                           |
| ``{prefix}invalidate``        | channel | JSON ``{"op", "id", "hash", "ts", ...}`` |

Writes that touch several keys run as Lua scripts, so a crash or a concurrent writer can never
leave a secret pointing at a half-written token, and the invalidation message is published in
the same atomic step as the change it announces. The store only ever sees ``secret_hash``:
``create`` refuses anything that is not a SHA-256 hex digest, so a caller that passes a secret
by mistake gets an error instead of a plaintext secret in Redis.

Every Redis failure surfaces as ``StoreUnavailable`` (the service answers 503), a record that
cannot be decoded as ``CorruptRecord``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from authz.adapters import invalidation
from authz.domain.model import Token

# --- errors -------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every error the token store raises."""


class StoreUnavailable(StoreError):
    """Redis could not be reached or did not answer in time: no decision can be made (503)."""


class CorruptRecord(StoreError):
    """A stored record cannot be decoded; names the key and field, never a value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt token record {key}: {reason}")
        self.key = key
        self.reason = reason


class TokenNotFound(StoreError, LookupError):
    """No token with that id."""


class DuplicateSecret(StoreError):
    """Another token already owns this secret hash."""


class DuplicateId(StoreError):
    """A token with this id already exists."""


# --- record encoding ----------------------------------------------------------------------------

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_TUPLE_FIELDS = ("logins", "limits", "ips", "on_behalf_of")
_OPT_FLOAT_FIELDS = ("expires_at", "revoked_at", "last_used_at")


def _fmt_float(v: float | None) -> str:
    if v is None:
        return ""
    if not math.isfinite(v):
        raise ValueError(f"timestamp must be finite, got {v!r}")
    return repr(float(v))


def encode_token(token: Token) -> dict[str, str]:
    """Token -> hash fields: strings as-is, tuples as JSON lists, None as ''."""
    out = {
        "id": token.id,
        "secret_hash": token.secret_hash,
        "label": token.label,
        "user": token.user or "",
        "created_at": _fmt_float(token.created_at),
        "created_by": token.created_by,
        "use_count": str(int(token.use_count)),
    }
    for name in _OPT_FLOAT_FIELDS:
        out[name] = _fmt_float(getattr(token, name))
    for name in _TUPLE_FIELDS:
        out[name] = json.dumps(list(getattr(token, name)), ensure_ascii=False)
    return out


def _text(v: str | bytes, key: str, field: str) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecord(key, f"field {field!r} is not UTF-8") from None
    return v


def _float(raw: Mapping[str, str], key: str, field: str, *, optional: bool) -> float | None:
    v = raw.get(field, "").strip()
    if v == "":
        return None if optional else 0.0
    try:
        f = float(v)
    except ValueError:
        raise CorruptRecord(key, f"field {field!r} is not a number") from None
    if not math.isfinite(f):
        raise CorruptRecord(key, f"field {field!r} is not finite")
    return f


def _int(raw: Mapping[str, str], key: str, field: str) -> int:
    v = raw.get(field, "").strip()
    if v == "":
        return 0
    try:
        return int(v)
    except ValueError:
        raise CorruptRecord(key, f"field {field!r} is not an integer") from None


def _tuple(raw: Mapping[str, str], key: str, field: str) -> tuple[str, ...]:
    v = raw.get(field, "").strip()
    if v == "":
        return ()
    try:
        items = json.loads(v)
    except ValueError:
        raise CorruptRecord(key, f"field {field!r} is not JSON") from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CorruptRecord(key, f"field {field!r} is not a list of strings")
    return tuple(items)


def decode_token(fields: Mapping[Any, Any], key: str) -> Token:
    """Hash fields -> Token. Missing optional fields take defaults; unknown ones are ignored
    (a newer writer may add some); anything undecodable raises ``CorruptRecord``."""
    raw = {_text(k, key, "?"): _text(v, key, str(k)) for k, v in fields.items()}
    tid, h = raw.get("id", ""), raw.get("secret_hash", "")
    if not tid:
        raise CorruptRecord(key, "field 'id' is missing")
    if not _HASH_RE.fullmatch(h):
        raise CorruptRecord(key, "field 'secret_hash' is not a SHA-256 hex digest")
    created_at = _float(raw, key, "created_at", optional=False)
    assert created_at is not None
    return Token(
        id=tid,
        secret_hash=h,
        label=raw.get("label", ""),
        user=raw.get("user") or None,
        logins=_tuple(raw, key, "logins"),
        created_at=created_at,
        created_by=raw.get("created_by", ""),
        expires_at=_float(raw, key, "expires_at", optional=True),
        limits=_tuple(raw, key, "limits"),
        ips=_tuple(raw, key, "ips"),
        on_behalf_of=_tuple(raw, key, "on_behalf_of"),
        revoked_at=_float(raw, key, "revoked_at", optional=True),
        last_used_at=_float(raw, key, "last_used_at", optional=True),
        use_count=_int(raw, key, "use_count"),
    )


def check_secret_hash(secret_hash: str) -> None:
    """Refuse anything but a lower-case SHA-256 hex digest (e.g. a secret passed by mistake)."""
    if not isinstance(secret_hash, str) or not _HASH_RE.fullmatch(secret_hash):
        raise ValueError("secret_hash must be a lower-case SHA-256 hex digest")


def _check_id(token_id: str) -> None:
    if not isinstance(token_id, str) or not token_id or len(token_id) > 200:
        raise ValueError("token id must be a non-empty string of at most 200 characters")
    if any(c.isspace() or ord(c) < 0x20 for c in token_id):
        raise ValueError("token id must not contain whitespace or control characters")


# --- error translation --------------------------------------------------------------------------


@contextlib.contextmanager
def redis_errors(key: str = "") -> Iterator[None]:
    """Map Redis/network failures to StoreUnavailable; WRONGTYPE means someone else's data."""
    try:
        yield
    except ResponseError as e:
        if str(e).startswith("WRONGTYPE"):
            raise CorruptRecord(key or "?", "key holds the wrong Redis type") from e
        raise StoreUnavailable(f"redis error: {type(e).__name__}: {e}") from e
    except (TimeoutError, RedisError, RedisClusterException, OSError) as e:
        raise StoreUnavailable(f"redis unavailable: {type(e).__name__}: {e}") from e


def _s(v: str | bytes | None) -> str | None:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _pairs(flat: list[Any] | dict[Any, Any] | None) -> dict[Any, Any]:
    """A script's HGETALL reply (flat list in RESP2) as a mapping."""
    if not flat:
        return {}
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


# --- Lua scripts --------------------------------------------------------------------------------

# KEYS: token, secret, tokens-set. ARGV: id, channel, message, field, value, ...
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'dup_id' end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX') then return 'dup_secret' end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 'ok'
"""

# KEYS: token. ARGV: channel, id, ts, set_label, label, set_limits, limits.
_UPDATE = invalidation.LUA_ENCODER + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'label', ARGV[5]) end
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'limits', ARGV[7]) end
local h = redis.call('HGET', KEYS[1], 'secret_hash') or ''
redis.call('PUBLISH', ARGV[1], invalidation('update', ARGV[2], h, ARGV[3]))
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: token. ARGV: channel, id, ts, revoked_at. A revocation can only move earlier (sticky:
# revoking again keeps the first time, yet a grace period can be cut short); the message is
# re-sent on every call so a replica that missed it gets another chance.
_REVOKE = invalidation.LUA_ENCODER + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local at = redis.call('HGET', KEYS[1], 'revoked_at')
local cur = tonumber(at or '')
if cur == nil or tonumber(ARGV[4]) < cur then
  at = ARGV[4]
  redis.call('HSET', KEYS[1], 'revoked_at', at)
end
local h = redis.call('HGET', KEYS[1], 'secret_hash') or ''
redis.call('PUBLISH', ARGV[1], invalidation('revoke', ARGV[2], h, ARGV[3], at))
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: one token key per use record. ARGV: count and used_at per key, in KEYS order. Never
# creates a hash for a deleted token; repairs a non-integer use_count instead of failing the
# whole batch. Returns how many records existed. Every key carries the prefix's hash tag in
# Cluster (required by the config), so one call serves a whole batch there too.
_RECORD_USES = """
local done = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local n, at = ARGV[2 * i - 1], ARGV[2 * i]
    local r = redis.pcall('HINCRBY', key, 'use_count', n)
    if type(r) == 'table' and r.err then redis.call('HSET', key, 'use_count', n) end
    local cur = tonumber(redis.call('HGET', key, 'last_used_at') or '')
    if cur == nil or tonumber(at) > cur then redis.call('HSET', key, 'last_used_at', at) end
    done = done + 1
  end
end
return done
"""

# KEYS: token, tokens-set. ARGV: id, prefix of secret keys. Removes the record, its secret
# key (only while it still points at this id) and its set entry; returns 0 if already gone.
_DELETE = """
local h = redis.call('HGET', KEYS[1], 'secret_hash')
if not h then redis.call('SREM', KEYS[2], ARGV[1]) return 0 end
local skey = ARGV[2] .. h
if redis.call('GET', skey) == ARGV[1] then redis.call('DEL', skey) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

_LIST_BATCH = 500
_USE_BATCH = 64
"""Use records per script call: one call per batch instead of one per token (a second's worth
of uses is one record per token used). Bounded so a call neither holds Redis nor takes long to
encode on the event loop in front of waiting Checks."""


class RedisTokenStore:
    """Token records over a redis.asyncio client (``decode_responses`` either way)."""

    def __init__(self, client: Redis, key_prefix: str = "jira-authz:") -> None:
        self.client = client
        self.prefix = key_prefix
        self._create = client.register_script(_CREATE)
        self._update = client.register_script(_UPDATE)
        self._revoke = client.register_script(_REVOKE)
        self._record_uses = client.register_script(_RECORD_USES)
        self._delete = client.register_script(_DELETE)

    # keys

    @property
    def channel(self) -> str:
        return f"{self.prefix}invalidate"

    @property
    def set_key(self) -> str:
        return f"{self.prefix}tokens"

    def token_key(self, token_id: str) -> str:
        return f"{self.prefix}token:{token_id}"

    def secret_key(self, secret_hash: str) -> str:
        return f"{self.prefix}secret:{secret_hash}"

    # reads

    async def get(self, token_id: str) -> Token | None:
        _check_id(token_id)
        key = self.token_key(token_id)
        with redis_errors(key):
            fields = await self.client.hgetall(key)
        return self._decode(fields, key, expect_id=token_id)

    async def find_by_hash(self, secret_hash: str) -> Token | None:
        """The token owning this secret hash; a dangling secret key reads as unknown."""
        check_secret_hash(secret_hash)
        skey = self.secret_key(secret_hash)
        with redis_errors(skey):
            tid = _s(await self.client.get(skey))
        if not tid:
            return None
        key = self.token_key(tid)
        with redis_errors(key):
            fields = await self.client.hgetall(key)
        token = self._decode(fields, key, expect_id=tid)
        if token is not None and token.secret_hash != secret_hash:
            raise CorruptRecord(skey, "points at a token with a different secret hash")
        return token

    async def list(self) -> list[Token]:
        """Every token, oldest first; ids left in the set without a record are skipped."""
        with redis_errors(self.set_key):
            ids = sorted(filter(None, map(_s, await self.client.smembers(self.set_key))))
        tokens: list[Token] = []
        for start in range(0, len(ids), _LIST_BATCH):
            batch = ids[start : start + _LIST_BATCH]
            with redis_errors(self.set_key):
                async with self.client.pipeline(transaction=False) as pipe:
                    for tid in batch:
                        pipe.hgetall(self.token_key(tid))
                    replies = await pipe.execute()
            for tid, fields in zip(batch, replies, strict=True):
                token = self._decode(fields, self.token_key(tid), expect_id=tid)
                if token is not None:
                    tokens.append(token)
        tokens.sort(key=lambda t: (t.created_at, t.id))
        return tokens

    # writes

    async def create(self, token: Token) -> None:
        """Store a new token; refuses a duplicate id or secret hash; announces op=create."""
        _check_id(token.id)
        check_secret_hash(token.secret_hash)
        fields = encode_token(token)
        msg = invalidation.encode("create", token.id, token.secret_hash)
        args: list[str] = [token.id, self.channel, msg]
        for k, v in fields.items():
            args += [k, v]
        keys = [self.token_key(token.id), self.secret_key(token.secret_hash), self.set_key]
        with redis_errors(keys[0]):
            result = _s(await self._create(keys=keys, args=args))
        if result == "dup_id":
            raise DuplicateId(f"token id {token.id!r} already exists")
        if result == "dup_secret":
            raise DuplicateSecret("another token already uses this secret")
        if result != "ok":  # pragma: no cover - the script has no other outcome
            raise StoreError(f"unexpected create result {result!r}")

    async def update(
        self,
        token_id: str,
        *,
        label: str | None = None,
        limits: tuple[str, ...] | list[str] | None = None,
    ) -> Token:
        """Edit the only editable fields (label, limits); announces op=update."""
        _check_id(token_id)
        if label is None and limits is None:
            token = await self.get(token_id)
            if token is None:
                raise TokenNotFound(token_id)
            return token
        if limits is not None and not all(isinstance(x, str) for x in limits):
            raise ValueError("limits must be strings")
        key = self.token_key(token_id)
        args = [
            self.channel,
            token_id,
            repr(time.time()),
            "0" if label is None else "1",
            label or "",
            "0" if limits is None else "1",
            json.dumps(list(limits or ()), ensure_ascii=False),
        ]
        with redis_errors(key):
            reply = await self._update(keys=[key], args=args)
        return self._written(reply, key, token_id)

    async def revoke(self, token_id: str, at: float) -> Token:
        """Revoke from ``at`` on (a future ``at`` is a rotation's grace period); announces
        op=revoke. Sticky: the earliest ``revoked_at`` ever set wins, so revoking twice keeps
        the first time and nothing can postpone or undo a revocation."""
        _check_id(token_id)
        key = self.token_key(token_id)
        args = [self.channel, token_id, repr(time.time()), _fmt_float(at)]
        with redis_errors(key):
            reply = await self._revoke(keys=[key], args=args)
        return self._written(reply, key, token_id)

    async def record_use(self, counts: Mapping[str, tuple[int, float]]) -> None:
        """Add use counts and raise ``last_used_at`` (never lowers it), for existing ids only."""
        items = [(tid, n, at) for tid, (n, at) in counts.items() if n > 0 or at]
        for tid, _n, _at in items:
            _check_id(tid)
        for start in range(0, len(items), _USE_BATCH):
            chunk = items[start : start + _USE_BATCH]
            args: list[str | int] = []
            for _tid, n, at in chunk:
                args += (int(n), _fmt_float(at))
            with redis_errors(self.set_key):
                await self._record_uses(keys=[self.token_key(t) for t, _, _ in chunk], args=args)

    async def delete(self, token_id: str) -> bool:
        """Remove a token's record for good (``prune``); False when it was already gone. The
        audit stream is not touched. No invalidation is sent: only tokens that already stop
        working are pruned, and a cache keeps them refused until it forgets them."""
        _check_id(token_id)
        key = self.token_key(token_id)
        with redis_errors(key):
            n = await self._delete(keys=[key, self.set_key],
                                   args=[token_id, f"{self.prefix}secret:"])
        return bool(n)

    # helpers

    def _decode(self, fields: Any, key: str, *, expect_id: str) -> Token | None:
        if not fields:
            return None
        token = decode_token(fields, key)
        if token.id != expect_id:
            raise CorruptRecord(key, "field 'id' does not match the key")
        return token

    def _written(self, reply: Any, key: str, token_id: str) -> Token:
        token = self._decode(_pairs(reply), key, expect_id=token_id)
        if token is None:
            raise TokenNotFound(token_id)
        return token
