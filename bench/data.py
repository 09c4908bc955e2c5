"""Realistic data for scenario (c): 10,000 tokens in Redis and a request mix over them.

Tokens: about two thirds bound to a user (some with an extra e-mail login), 1-5 restriction
lines each in the shapes Extender users write (method + issue key patterns, search, project
reads, agile boards), distinct per token so the compiled-limits cache sees 10,000 line sets.

Requests: tokens are drawn with a Zipf-like skew (a few CI bots make most calls, most tokens
are used rarely), and each call is one of: allowed (a URL one of its lines matches; Basic or,
for bound tokens, Bearer), denied by its limits (403), wrong login (401), an unknown
well-formed token (401), no credentials (passed to Jira's own authentication).
"""

from __future__ import annotations

import asyncio
import base64
import random
from dataclasses import dataclass

from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.config import RedisConfig
from authz.domain.issuing import TokenRequest, issue
from authz.domain.token_format import generate_secret

MIX = (
    ("allow", 0.70),
    ("deny_limit", 0.12),
    ("deny_login", 0.06),
    ("unknown", 0.06),
    ("anonymous", 0.06),
)


@dataclass(frozen=True)
class Seeded:
    token_id: str
    secret: str
    user: str | None
    allowed: tuple[tuple[str, str], ...]
    """(method, path) pairs that one of its lines allows."""


def _lines(i: int, rng: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    key = f"P{i:05d}"
    board = 1000 + i
    shapes = [
        (f"[get].*/rest/api/2/issue/{key}-[0-9]+", ("GET", f"/rest/api/2/issue/{key}-17")),
        (f"[post].*/rest/api/2/issue/{key}-[0-9]+/comment",
         ("POST", f"/rest/api/2/issue/{key}-3/comment")),
        (f"[get].*/rest/api/2/search[QueryParam::jql==project = {key}.*]",
         ("GET", f"/rest/api/2/search?jql=project%20%3D%20{key}")),
        (f"[get,post].*/rest/agile/1.0/board/{board}/.*",
         ("GET", f"/rest/agile/1.0/board/{board}/sprint")),
        (f"[get].*/rest/api/2/project/{key}.*", ("GET", f"/rest/api/2/project/{key}")),
    ]
    rng.shuffle(shapes)
    chosen = shapes[: rng.randint(1, 5)]
    return [line for line, _ in chosen], [call for _, call in chosen]


async def seed(redis_url: str, prefix: str, count: int = 10_000,
               seed_value: int = 7) -> list[Seeded]:
    """Create ``count`` tokens (through the real store, so the Lua scripts run)."""
    rng = random.Random(seed_value)
    client = create_client(RedisConfig(url=redis_url, socket_timeout_seconds=5.0,
                                       max_connections=32))
    store = RedisTokenStore(client, prefix)
    out: list[Seeded] = []
    try:
        batch = []
        for i in range(count):
            lines, calls = _lines(i, rng)
            bound = rng.random() < 0.66
            user = f"user{i}" if bound else None
            logins = [f"user{i}@example.com"] if bound and rng.random() < 0.3 else []
            token, secret = issue(
                TokenRequest(label=f"bench {i}", user=user, logins=logins, limits=lines),
                now=0.0 + 1.7e9,
            )
            batch.append(store.create(token))
            out.append(Seeded(token.id, secret, user, tuple(calls)))
            if len(batch) >= 200:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await client.aclose()
    return out


def _basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def request_mix(tokens: list[Seeded], n: int = 4000, seed_value: int = 11,
                zipf_s: float = 1.1) -> list[dict[str, object]]:
    """``n`` requests ({method, path, headers, expect}) over the seeded tokens."""
    rng = random.Random(seed_value)
    weights = [1.0 / (r + 1) ** zipf_s for r in range(len(tokens))]
    picks = rng.choices(tokens, weights=weights, k=n)
    kinds = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX], k=n)
    out: list[dict[str, object]] = []
    for tok, kind in zip(picks, kinds, strict=True):
        login = tok.user or f"script{rng.randint(1, 50)}"
        method, path = rng.choice(tok.allowed)
        headers = {"user-agent": "bench/1", "accept": "application/json"}
        expect = 200
        if kind == "allow":
            if tok.user and rng.random() < 0.3:
                headers["authorization"] = f"Bearer {tok.secret}"
            else:
                headers["authorization"] = _basic(login, tok.secret)
        elif kind == "deny_limit":
            method, path = "DELETE", "/rest/api/2/project/NOPE"
            headers["authorization"] = _basic(login, tok.secret)
            expect = 403
        elif kind == "deny_login":
            if tok.user is None:  # unbound tokens accept any login: use a bound one's rule
                method, path = "DELETE", "/rest/api/2/project/NOPE"
                expect = 403
            else:
                login, expect = "mallory", 401
            headers["authorization"] = _basic(login, tok.secret)
        elif kind == "unknown":
            headers["authorization"] = _basic(login, generate_secret())
            expect = 401
        else:
            pass  # anonymous: Jira's own authentication decides
        if method == "POST":
            headers["content-length"] = "0"
        out.append({"method": method, "path": path, "headers": headers, "expect": expect})
    return out
