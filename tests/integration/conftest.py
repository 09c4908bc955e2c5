"""Fixtures for tests against a real Redis.

``redis_url`` is shared by the session: ``JIRA_AUTHZ_REDIS_URL`` when set (the same variable
that configures the service), else a private server. Tests isolate themselves with a unique
key prefix. ``private_redis`` is a server of the test's own, for tests that stop it, kill its
clients or count its commands.

``async def`` tests run under ``asyncio.run`` (no pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_server import RedisServer

ASYNC_TEST_TIMEOUT = 120.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine test functions in a fresh event loop."""
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(func(**kwargs), ASYNC_TEST_TIMEOUT))
    # a coroutine that swallows the timeout's cancellation makes wait_for return normally
    if time.monotonic() - started > ASYNC_TEST_TIMEOUT:
        pytest.fail(f"test ran past its {ASYNC_TEST_TIMEOUT:.0f} s limit")
    return True


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("JIRA_AUTHZ_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted from the shared Redis after."""
    value = f"t{uuid.uuid4().hex[:12]}:"
    yield value
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{value}*", count=1000))
        if keys:
            client.delete(*keys)
