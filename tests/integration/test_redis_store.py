"""RedisTokenStore against a real Redis: round trips, atomic refusals, no secret ever stored,
corrupt records and outages reported as the documented errors."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import BlockingConnectionPool, Redis
from redis_server import RedisServer, new_token, open_store

from authz.adapters import invalidation
from authz.adapters.invalidation import parse as parse_invalidation
from authz.adapters.redis_conn import create_client, redacted_url
from authz.adapters.redis_store import (
    CorruptRecord,
    DuplicateId,
    DuplicateSecret,
    RedisTokenStore,
    StoreUnavailable,
    TokenNotFound,
    decode_token,
    encode_token,
)
from authz.config import RedisConfig
from authz.domain.model import Token
from authz.domain.token_format import hash_secret

pytestmark = pytest.mark.integration


async def test_create_get_find_list_round_trip(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        _, full = new_token(
            "full",
            label="CI bot",
            user="alice",
            logins=("alice@example.com",),
            created_by="admin",
            expires_at=time.time() + 3600,
            limits=("[get].*/rest/api/2/issue.*", ".*/rest/api/2/project.*"),
            ips=("10.0.0.0/8",),
            on_behalf_of=("*",),
        )
        _, bare = new_token("bare", created_at=full.created_at - 10)
        await store.create(full)
        await store.create(bare)
        assert await store.get("full") == full
        assert await store.get("bare") == bare
        assert await store.find_by_hash(full.secret_hash) == full
        assert await store.find_by_hash(hash_secret("unknown secret")) is None
        assert await store.get("missing") is None
        assert await store.list() == [bare, full]  # oldest first


async def test_duplicate_secret_and_id_refused_atomically(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        _, tok = new_token("a")
        await store.create(tok)
        with pytest.raises(DuplicateSecret):
            await store.create(Token(id="b", secret_hash=tok.secret_hash))
        with pytest.raises(DuplicateId):
            await store.create(new_token("a")[1])
        # nothing half-written by the refused calls
        assert await store.get("b") is None
        assert await store.find_by_hash(tok.secret_hash) == tok
        assert [t.id for t in await store.list()] == ["a"]


async def test_concurrent_creates_of_one_secret_exactly_one_wins(
    redis_url: str, prefix: str
) -> None:
    async with open_store(redis_url, prefix) as store:
        _, tok = new_token("x0")
        attempts = [Token(id=f"x{i}", secret_hash=tok.secret_hash) for i in range(20)]
        results = await asyncio.gather(*(store.create(t) for t in attempts), return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, DuplicateSecret) for r in results if r is not None)
        assert len(await store.list()) == 1


async def test_update_only_label_and_limits(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        _, tok = new_token("u", label="old", user="bob", limits=("a",))
        await store.create(tok)
        updated = await store.update("u", label="new")
        assert (updated.label, updated.limits, updated.user) == ("new", ("a",), "bob")
        updated = await store.update("u", limits=["b", "c"])
        assert (updated.label, updated.limits) == ("new", ("b", "c"))
        updated = await store.update("u", limits=())
        assert updated.limits == ()
        assert await store.get("u") == updated
        assert await store.update("u") == updated
        with pytest.raises(TokenNotFound):
            await store.update("nope", label="x")
        with pytest.raises(TokenNotFound):
            await store.update("nope")
        assert await store.get("nope") is None  # no stray hash


async def test_revoke_is_sticky(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        _, tok = new_token("r")
        await store.create(tok)
        first = await store.revoke("r", 1000.5)
        assert first.revoked_at == 1000.5
        again = await store.revoke("r", 2000.0)
        assert again.revoked_at == 1000.5
        assert (await store.get("r")).revoked_at == 1000.5  # type: ignore[union-attr]
        earlier = await store.revoke("r", 900.0)  # cutting a grace period short
        assert earlier.revoked_at == 900.0
        with pytest.raises(TokenNotFound):
            await store.revoke("nope", 1.0)
        assert await store.get("nope") is None


async def test_every_write_publishes_an_invalidation(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        pubsub = store.client.pubsub()
        await pubsub.subscribe(store.channel)
        _, tok = new_token("p")
        await store.create(tok)
        await store.update("p", label="l")
        await store.revoke("p", 5.0)
        msgs = []
        deadline = time.monotonic() + 5
        while len(msgs) < 3 and time.monotonic() < deadline:
            m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m:
                msgs.append(parse_invalidation(m["data"]))
        await pubsub.aclose()
        assert [(m.op, m.id, m.hash) for m in msgs if m] == [
            ("create", "p", tok.secret_hash),
            ("update", "p", tok.secret_hash),
            ("revoke", "p", tok.secret_hash),
        ]
        assert all(m and m.ts and abs(m.ts - time.time()) < 60 for m in msgs)
        assert msgs[2] and msgs[2].revoked_at == 5.0


async def test_record_use_counts_and_never_creates_records(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        await store.create(new_token("a")[1])
        await store.create(new_token("b")[1])
        await store.record_use({"a": (3, 100.0), "b": (1, 50.0), "gone": (7, 100.0)})
        await store.record_use({"a": (2, 90.0)})  # older timestamp: last_used_at stays
        a, b = await store.get("a"), await store.get("b")
        assert a and (a.use_count, a.last_used_at) == (5, 100.0)
        assert b and (b.use_count, b.last_used_at) == (1, 50.0)
        assert await store.client.exists(store.token_key("gone")) == 0
        await store.record_use({})


async def test_record_use_takes_one_script_call_per_batch(redis_url: str, prefix: str) -> None:
    """A second's worth of uses (one record per token used) is a handful of script calls,
    not one per token; every record in every batch is applied, deleted ids skipped."""
    async with open_store(redis_url, prefix) as store:
        ids = [f"u{i}" for i in range(150)]
        for tid in ids:
            await store.create(new_token(tid)[1])
        counts = {tid: (i + 1, 10.0 + i) for i, tid in enumerate(ids)}
        counts["gone"] = (4, 99.0)
        await store.record_use({"gone": (1, 1.0)})  # the script is loaded once, beforehand
        before = await _script_calls(store)
        await store.record_use(counts)
        calls = await _script_calls(store) - before
        assert calls == 3  # 151 records in batches of 64
        for i, tid in enumerate(ids):
            tok = await store.get(tid)
            assert tok and (tok.use_count, tok.last_used_at) == (i + 1, 10.0 + i)
        assert await store.client.exists(store.token_key("gone")) == 0


async def _script_calls(store: RedisTokenStore) -> int:
    stats = await store.client.info("commandstats")
    scripts = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(v["calls"]) for k, v in stats.items() if k in scripts)


async def test_record_use_repairs_a_corrupt_counter(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        await store.create(new_token("a")[1])
        await store.client.hset(store.token_key("a"), "use_count", "x")
        await store.record_use({"a": (2, 1.0)})
        a = await store.get("a")
        assert a and a.use_count == 2


async def test_no_key_value_or_message_contains_a_secret(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        pubsub = store.client.pubsub()
        await pubsub.subscribe(store.channel)
        secrets = []
        for i in range(10):
            secret, tok = new_token(f"s{i}", label=f"token {i}", user="carol", limits=("x",))
            secrets.append(secret)
            await store.create(tok)
        await store.update("s1", label="renamed")
        await store.revoke("s2", time.time())
        await store.record_use({"s3": (1, time.time())})

        dumped: list[str] = []
        async for key in store.client.scan_iter(match=f"{prefix}*"):
            dumped.append(key)
            kind = await store.client.type(key)
            if kind == "hash":
                dumped += [f"{k}={v}" for k, v in (await store.client.hgetall(key)).items()]
            elif kind == "string":
                dumped.append(await store.client.get(key))
            elif kind == "set":
                dumped += list(await store.client.smembers(key))
            else:
                pytest.fail(f"unexpected key type {kind} for {key}")
        while m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2):
            dumped.append(m["data"])
        await pubsub.aclose()

        assert len(dumped) > 10 * 14
        blob = "\n".join(dumped)
        for secret in secrets:
            assert secret not in blob
            assert secret[4:20] not in blob  # not even a fragment of the random part
            assert hash_secret(secret) in blob


async def test_create_refuses_anything_but_a_hash(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        secret, _ = new_token()
        with pytest.raises(ValueError, match="SHA-256"):
            await store.create(Token(id="leak", secret_hash=secret))
        with pytest.raises(ValueError):
            await store.find_by_hash(secret)
        assert await store.client.exists(store.token_key("leak")) == 0


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("created_at", "yesterday", "'created_at' is not a number"),
        ("expires_at", "nan", "'expires_at' is not finite"),
        ("limits", "[unclosed", "'limits' is not JSON"),
        ("ips", '{"a": 1}', "'ips' is not a list of strings"),
        ("use_count", "1.5", "'use_count' is not an integer"),
        ("secret_hash", "plaintext", "'secret_hash' is not a SHA-256"),
        ("id", "other", "'id' does not match the key"),
    ],
)
async def test_corrupt_record_raises_clear_error(
    redis_url: str, prefix: str, field: str, value: str, reason: str
) -> None:
    async with open_store(redis_url, prefix) as store:
        _, tok = new_token("c")
        await store.create(tok)
        await store.client.hset(store.token_key("c"), field, value)
        with pytest.raises(CorruptRecord, match=reason) as err:
            await store.get("c")
        assert value not in str(err.value) or value == "other"
        with pytest.raises(CorruptRecord):
            await store.list()


async def test_wrong_type_and_dangling_pointers(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        await store.client.set(store.token_key("str"), "not a hash")
        with pytest.raises(CorruptRecord, match="wrong Redis type"):
            await store.get("str")
        _, a = new_token("a")
        _, b = new_token("b")
        await store.create(a)
        await store.create(b)
        await store.client.set(store.secret_key(a.secret_hash), "b")
        with pytest.raises(CorruptRecord, match="different secret hash"):
            await store.find_by_hash(a.secret_hash)
        # a secret pointing at a deleted record, or a set member without one: unknown, skipped
        await store.client.delete(store.token_key("b"))
        assert await store.find_by_hash(b.secret_hash) is None
        await store.client.delete(store.token_key("str"))
        assert [t.id for t in await store.list()] == ["a"]


async def test_tolerant_decoding_of_sparse_records(redis_url: str, prefix: str) -> None:
    async with open_store(redis_url, prefix) as store:
        h = hash_secret("some imported secret")
        await store.client.hset(
            store.token_key("old"), mapping={"id": "old", "secret_hash": h, "future": "x"}
        )
        assert await store.get("old") == Token(id="old", secret_hash=h)


async def test_works_without_decode_responses(redis_url: str, prefix: str) -> None:
    raw = Redis.from_url(redis_url)  # bytes replies
    try:
        store = RedisTokenStore(raw, prefix)
        _, tok = new_token("bytes", limits=("é",))
        await store.create(tok)
        assert await store.find_by_hash(tok.secret_hash) == tok
        assert (await store.revoke("bytes", 3.0)).revoked_at == 3.0
        assert [t.id for t in await store.list()] == ["bytes"]
    finally:
        await raw.aclose()


async def test_outage_raises_store_unavailable(private_redis: RedisServer, prefix: str) -> None:
    async with open_store(private_redis.url, prefix) as store:
        _, tok = new_token("o")
        await store.create(tok)
        private_redis.stop()
        h = tok.secret_hash
        calls = [
            store.get("o"),
            store.find_by_hash(h),
            store.list(),
            store.create(new_token()[1]),
            store.update("o", label="x"),
            store.revoke("o", 1.0),
            store.record_use({"o": (1, 1.0)}),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call
            assert time.monotonic() - started < 3
        private_redis.start()  # empty again (killed without saving): same client recovers
        assert await store.get("o") is None
        await store.create(tok)
        assert await store.find_by_hash(h) == tok


async def test_client_from_config_with_password(private_redis: RedisServer, prefix: str) -> None:
    async with open_store(private_redis.url, prefix) as admin:
        await admin.client.config_set("requirepass", "pa:ss")
    base = f"127.0.0.1:{private_redis.port}/0"
    cfg = RedisConfig(url=f"redis://:pa%3Ass@{base}", socket_timeout_seconds=0.3, max_connections=3)
    client = create_client(cfg)
    try:
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 3
        kwargs = pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 1.0)
        assert kwargs["health_check_interval"] > 0
        store = RedisTokenStore(client, prefix)
        _, tok = new_token()
        await store.create(tok)
        assert await store.find_by_hash(tok.secret_hash) == tok
    finally:
        await client.aclose()
    wrong = create_client(RedisConfig(url=f"redis://:nope@{base}"))
    try:
        with pytest.raises(StoreUnavailable) as err:
            await RedisTokenStore(wrong, prefix).get("x")
        assert "nope" not in str(err.value)
    finally:
        await wrong.aclose()


def test_redacted_url() -> None:
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted_url("rediss://:s3:cr@h:6380/1") == "rediss://:***@h:6380/1"
    assert redacted_url("redis://user:pw@[::1]:6379") == "redis://user:***@[::1]:6379"
    assert redacted_url("unix:///r.sock?db=0&password=x") == "unix:///r.sock?db=0&password=***"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_ts = st.none() | st.floats(min_value=0, max_value=4e9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    tid=st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    h=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    label=_text,
    user=st.none() | _text.filter(bool),
    tuples=st.lists(st.lists(_text, max_size=4).map(tuple), min_size=4, max_size=4),
    created_at=st.floats(min_value=0, max_value=4e9),
    times=st.lists(_ts, min_size=3, max_size=3),
    use_count=st.integers(min_value=0, max_value=2**53),
)
def test_encoding_round_trips(
    tid: str,
    h: str,
    label: str,
    user: str | None,
    tuples: list[tuple[str, ...]],
    created_at: float,
    times: list[float | None],
    use_count: int,
) -> None:
    tok = Token(
        id=tid,
        secret_hash=h,
        label=label,
        user=user,
        logins=tuples[0],
        created_at=created_at,
        limits=tuples[1],
        ips=tuples[2],
        on_behalf_of=tuples[3],
        expires_at=times[0],
        revoked_at=times[1],
        last_used_at=times[2],
        use_count=use_count,
    )
    fields = encode_token(tok)
    assert all(isinstance(v, str) for v in fields.values())
    assert decode_token(fields, "k") == tok
    assert decode_token({k.encode(): v.encode() for k, v in fields.items()}, "k") == tok


def test_parse_invalidation_is_defensive() -> None:
    assert parse_invalidation(b"not json") is None
    assert parse_invalidation("[]") is None
    assert parse_invalidation(json.dumps({"op": "drop", "id": "a", "hash": "b"})) is None
    assert parse_invalidation(json.dumps({"op": "create", "id": 1, "hash": "b"})) is None
    inv = parse_invalidation(json.dumps({"op": "revoke", "id": "a", "hash": "b", "ts": "x"}))
    assert inv and inv.ts is None and inv.revoked_at is None
    inv = parse_invalidation(json.dumps({"op": "revoke", "id": "a", "hash": "b", "ts": 2}))
    assert inv and inv.ts == 2.0


@pytest.mark.parametrize("token_id", ["p", 'q"uote\\back', "ünï-😀", "a\u2028b", ""])
async def test_invalidation_round_trips_through_both_encoders(redis_url: str,
                                                              token_id: str) -> None:
    """The Lua encoder (run by a real Redis) and the Python one give what the parser reads."""
    client = Redis.from_url(redis_url)
    run = client.register_script(
        invalidation.LUA_ENCODER
        + "return invalidation(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])")
    ts = 1_700_000_000.123456
    h = hash_secret(token_id + "x")
    try:
        for op in sorted(invalidation.OPS):
            from_lua = invalidation.parse(await run(args=[op, token_id, h, repr(ts)]))
            from_py = invalidation.parse(invalidation.encode(op, token_id, h, ts=ts))
            assert from_lua == from_py == invalidation.Invalidation(op, token_id, h, ts)
        revoked = await client.eval(
            invalidation.LUA_ENCODER
            + "return invalidation('revoke', ARGV[1], ARGV[2], ARGV[3], ARGV[4])",
            0, token_id, h, repr(ts), "1700000005.5")
        assert invalidation.parse(revoked) == invalidation.Invalidation(
            "revoke", token_id, h, ts, 1_700_000_005.5)
    finally:
        await client.aclose()
