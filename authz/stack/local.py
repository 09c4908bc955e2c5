"""The whole request path on one machine: Redis, jira-authz, a stub Jira and a real Envoy.

``LocalStack`` backs ``jira-authz up`` (try tokens with curl before deploying) and the
end-to-end tests (prove the shipped Envoy config plus the server keep their promises). Envoy
runs the shipped ``deploy/envoy/sidecar.yaml`` with only addresses patched, so what is tested
is what gets deployed. Every part is started with a readiness wait and stopped in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from authz.config import ENV_PREFIX, load_config
from authz.stack import envoy_config
from authz.stack import state as stack_state
from authz.stack.processes import (
    DEFAULT_START_TIMEOUT,
    Child,
    StackError,
    ensure_port_free,
    find_envoy,
    find_redis_server,
    free_port_run,
    grpc_health_probe,
    http_ok_probe,
    redis_ping_probe,
    tcp_probe,
    wait_until,
)

HOST = "127.0.0.1"
CONSOLE_PREFIX = "/jira-authz/"
LOCAL_USERS = "alice, bob, admin (in jira-administrators); password = user name"


class LocalStack:
    """Context manager running Redis (unless ``redis_url``), jira-authz, stub Jira and Envoy.

    ``env_overrides`` are extra ``JIRA_AUTHZ_*`` variables for the server (they win over the
    inherited environment; the stack's own listen/redis/audit variables win over them).
    ``inherit_config_env=False`` drops inherited ``JIRA_AUTHZ_*`` variables: tests must not
    depend on the developer's shell.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        key_prefix: str = "jira-authz:",
        envoy_port: int | None = None,
        envoy_config_name: str = envoy_config.SIDECAR,
        authz_config: str | os.PathLike[str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        inherit_config_env: bool = True,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        workers: int = 1,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._progress = progress or (lambda message: None)
        self._own_redis = redis_url is None
        self.redis_url_source = "--redis-url"
        """Where an external Redis URL came from, for error messages."""
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="jira-authz-stack-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key_prefix = key_prefix
        self.audit_stream = f"{key_prefix}audit"
        self.start_timeout = start_timeout
        self._envoy_config_name = envoy_config_name
        self._authz_config_src = Path(authz_config) if authz_config else None
        self._env_overrides = dict(env_overrides or {})
        self._inherit_config_env = inherit_config_env

        if workers < 1:
            raise StackError("workers must be >= 1")
        self.workers = workers
        # Every port distinct: each is only "free a moment ago", and the kernel may hand the
        # same one out twice (a check port once came out equal to Redis's).
        taken: set[int] = {envoy_port} if envoy_port else set()

        def pick(count: int = 1) -> int:
            first = free_port_run(count, avoid=taken)
            taken.update(range(first, first + count))
            return first

        self.redis_port = pick() if self._own_redis else 0
        self.redis_url = redis_url or f"redis://{HOST}:{self.redis_port}/0"
        self.check_port = pick(workers)
        """Worker 0's check port; worker i listens on check_port + i (``--workers``)."""
        self.http1_port = pick(workers)
        """Worker 0's HTTP/1.1 Check port (the one Envoy's bridge calls); worker i: + i."""
        self.admin_port = pick()
        self.metrics_port = pick()
        self.stub_port = pick()
        self.console_port = pick()
        self.envoy_port = envoy_port or pick()
        self.envoy_admin_port = pick()

        self.redis_log = self.workdir / "redis.log"
        self.authz_log = self.workdir / "authz.log"
        self.stub_log = self.workdir / "stub-jira.log"
        self.envoy_log = self.workdir / "envoy.log"
        self.authz_config_path = self.workdir / "authz.yaml"
        self.envoy_config_path = self.workdir / "envoy.yaml"
        self.admin_token_file = self.workdir / "admin-token"
        """The admin API's generated bearer secret (mode 0600): the stack serves the API so
        the CLI can use it; the state file names this path, never the secret."""

        self._redis: Child | None = None
        self._authz: Child | None = None
        self._stub: Child | None = None
        self._envoy: Child | None = None

    # --- addresses ------------------------------------------------------------------------

    @property
    def envoy_url(self) -> str:
        return f"http://{HOST}:{self.envoy_port}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://{HOST}:{self.envoy_admin_port}"

    @property
    def stub_url(self) -> str:
        return f"http://{HOST}:{self.stub_port}"

    @property
    def console_url(self) -> str:
        """The web console through Envoy, on Jira's host (what a browser uses)."""
        return f"{self.envoy_url}{CONSOLE_PREFIX}"

    @property
    def check_addr(self) -> str:
        return f"{HOST}:{self.check_port}"

    @property
    def check_ports(self) -> list[int]:
        """Every worker's check port: each one an endpoint of Envoy's jira_authz cluster."""
        return [self.check_port + i for i in range(self.workers)]

    @property
    def http1_ports(self) -> list[int]:
        """Every worker's HTTP/1.1 Check port: the endpoints of Envoy's jira_authz_http1."""
        return [self.http1_port + i for i in range(self.workers)]

    @property
    def http1_addr(self) -> str:
        return f"{HOST}:{self.http1_port}"

    @property
    def admin_url(self) -> str:
        """For ``--admin-url`` (plaintext gRPC on 127.0.0.1)."""
        return f"grpc://{HOST}:{self.admin_port}"

    @property
    def admin_addr(self) -> str:
        return f"{HOST}:{self.admin_port}"

    @property
    def metrics_addr(self) -> str:
        return f"{HOST}:{self.metrics_port}"

    @property
    def logs(self) -> dict[str, Path]:
        out = {"authz": self.authz_log, "stub-jira": self.stub_log, "envoy": self.envoy_log}
        if self._own_redis:
            out["redis"] = self.redis_log
        return out

    def client_env(self) -> dict[str, str]:
        """Variables that point the CLI (``jira-authz token ...``) at this stack's Redis."""
        return {
            f"{ENV_PREFIX}REDIS_URL": self.redis_url,
            f"{ENV_PREFIX}REDIS_KEY_PREFIX": self.key_prefix,
            f"{ENV_PREFIX}AUDIT_STREAM": self.audit_stream,
        }

    def pids(self) -> list[int]:
        """Process ids of the running children (for leak checks)."""
        return [c.pid for c in self._children() if c.running() and c.pid is not None]

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every part in dependency order; on failure stop what was started and raise.
        Once everything answers, ``stack.json`` in the workdir says where the parts are."""
        try:
            # The one port a user picks: refused before anything starts, with the way out.
            ensure_port_free(HOST, self.envoy_port, "envoy listener",
                             hint="choose another with --port")
            if self._own_redis:
                self._progress(f"starting redis on {self.redis_url}")
                self.start_redis()
            else:
                self._check_external_redis()
            self._progress(f"starting jira-authz (check {self.check_addr}, admin "
                           f"{self.admin_addr})")
            self.start_authz()
            self._progress(f"starting stub jira on {self.stub_url}")
            self._start_stub()
            self._progress(f"starting envoy on {self.envoy_url}")
            self._start_envoy()
            stack_state.write(self.workdir, self.state())
        except BaseException:
            self.stop(remove_workdir=False)
            raise

    def state(self) -> stack_state.StackState:
        return stack_state.StackState(
            pid=os.getpid(), redis_url=self.redis_url, key_prefix=self.key_prefix,
            audit_stream=self.audit_stream, jira_url=self.envoy_url, admin_url=self.admin_url,
            admin_token_file=str(self.admin_token_file), check_addr=self.check_addr,
            metrics_url=f"http://{self.metrics_addr}/metrics",
        )

    def _check_external_redis(self) -> None:
        """An external Redis that does not answer fails the start at once, by name (not
        after the server's health wait)."""
        if not redis_ping_probe(self.redis_url)():
            raise StackError(
                f"cannot reach Redis at {self.redis_url} ({self.redis_url_source}); start it, "
                f"or unset {ENV_PREFIX}REDIS_URL / drop --redis-url to let up start its own")

    def stop(self, *, remove_workdir: bool = True) -> None:
        """Stop in reverse order: Envoy first, so nothing reaches a half-stopped backend."""
        mine = stack_state.read(self.workdir)
        if mine is not None and mine.pid == os.getpid() and mine.redis_url == self.redis_url:
            with contextlib.suppress(OSError):
                stack_state.remove(self.workdir)
        for child in (self._envoy, self._stub, self._authz, self._redis):
            if child is not None:
                with contextlib.suppress(Exception):
                    child.stop()
        if remove_workdir and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check_alive(self) -> None:
        """Raise StackError (with the log tail) if a child that should run has exited."""
        for child in self._children():
            child.check_alive()

    def _children(self) -> list[Child]:
        return [c for c in (self._redis, self._authz, self._stub, self._envoy) if c is not None]

    # --- Redis ----------------------------------------------------------------------------

    def start_redis(self) -> None:
        """(Re)start the stack's Redis on the same port and data dir (data survives a stop)."""
        if not self._own_redis:
            raise StackError("the stack uses an external Redis; it cannot start it")
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        argv = [
            find_redis_server(),
            "--port", str(self.redis_port),
            "--bind", HOST,
            "--dir", str(data),
            "--dbfilename", "dump.rdb",
            # Saved on a graceful stop and reloaded on start: tokens survive stop_redis().
            "--save", "3600 1",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        self._redis = Child("redis", argv, self.redis_log, cwd=data)
        self._redis.start()
        wait_until(
            "redis",
            redis_ping_probe(self.redis_url),
            child=self._redis,
            timeout=self.start_timeout,
        )

    def stop_redis(self) -> None:
        if not self._own_redis:
            raise StackError("the stack uses an external Redis; it cannot stop it")
        if self._redis is not None:
            self._redis.stop()

    # --- jira-authz -----------------------------------------------------------------------

    def _authz_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if self._inherit_config_env or not k.startswith(ENV_PREFIX)
        }
        env.setdefault(f"{ENV_PREFIX}JIRA_BASE_URL", self.envoy_url)
        # The console asks the stub Jira directly; plain http here, so no Secure cookie flag.
        env.update({
            f"{ENV_PREFIX}CONSOLE_LISTEN": f"{HOST}:{self.console_port}",
            f"{ENV_PREFIX}CONSOLE_JIRA_URL": self.stub_url,
            f"{ENV_PREFIX}CONSOLE_COOKIE_SECURE": "false",
        })
        env.update(self._env_overrides)
        if f"{ENV_PREFIX}ADMIN_TOKEN_FILE" not in self._env_overrides:
            env[f"{ENV_PREFIX}ADMIN_TOKEN_FILE"] = str(self._admin_secret_file())
        env.update(self.client_env())
        env.update(
            {
                f"{ENV_PREFIX}LISTEN_CHECK": self.check_addr,
                f"{ENV_PREFIX}LISTEN_CHECK_HTTP1": self.http1_addr,
                f"{ENV_PREFIX}LISTEN_ADMIN": self.admin_addr,
                f"{ENV_PREFIX}LISTEN_METRICS": self.metrics_addr,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _admin_secret_file(self) -> Path:
        """The generated admin secret, made once per workdir and readable only by its owner."""
        if not self.admin_token_file.exists():
            fd = os.open(self.admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        return self.admin_token_file

    def _write_authz_config(self) -> None:
        raw: Any = {}
        if self._authz_config_src is not None:
            raw = yaml.safe_load(self._authz_config_src.read_text(encoding="utf-8")) or {}
            if not isinstance(raw, dict):
                raise StackError(f"{self._authz_config_src}: top level must be a mapping")
        self.authz_config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")

    def start_authz(self, *, require_serving: bool = True) -> None:
        """(Re)start the server on the same ports; ready when its health service answers.

        ``require_serving=False`` accepts NOT_SERVING (e.g. restarted while Redis is down).
        """
        self._write_authz_config()
        for port in self.check_ports + self.http1_ports:
            ensure_port_free(HOST, port, "authz check port")
        argv = [sys.executable, "-m", "authz", "serve", "--config", str(self.authz_config_path)]
        # Always explicit: `serve` defaults to one process per core, and Envoy lists exactly
        # these ports.
        argv += ["--workers", str(self.workers)]
        env = self._authz_env()
        self._authz = Child("authz", argv, self.authz_log, env=env)
        self._authz.start()
        for port in self.check_ports:
            wait_until(
                f"authz check port {port}",
                tcp_probe(HOST, port),
                child=self._authz,
                timeout=self.start_timeout,
            )
            wait_until(
                f"authz gRPC health on {port}",
                grpc_health_probe(f"{HOST}:{port}", require_serving=require_serving),
                child=self._authz,
                timeout=self.start_timeout,
            )
        for port in self.http1_ports:
            wait_until(f"authz HTTP/1.1 check port {port}", tcp_probe(HOST, port),
                       child=self._authz, timeout=self.start_timeout)

        if env.get(f"{ENV_PREFIX}CONSOLE_LISTEN"):
            wait_until("authz console", tcp_probe(HOST, self.console_port), child=self._authz,
                       timeout=self.start_timeout)

    def stop_authz(self) -> None:
        if self._authz is not None:
            self._authz.stop()

    # --- stub Jira and Envoy --------------------------------------------------------------

    def _start_stub(self) -> None:
        argv = [sys.executable, "-m", "authz.stack.stub_jira", "--port", str(self.stub_port)]
        self._stub = Child("stub-jira", argv, self.stub_log, stop_timeout=5)
        self._stub.start()
        wait_until(
            "stub jira",
            tcp_probe(HOST, self.stub_port),
            child=self._stub,
            timeout=self.start_timeout,
        )

    def _start_envoy(self) -> None:
        ensure_port_free(HOST, self.envoy_port, "envoy listener",
                         hint="choose another with --port")
        ensure_port_free(HOST, self.envoy_admin_port, "envoy admin")
        clusters: dict[str, tuple[str, int | list[int]]] = {
            "jira": (HOST, self.stub_port)}
        if envoy_config.has_cluster(self._envoy_config_name, envoy_config.CHECK_CLUSTER):
            clusters[envoy_config.CHECK_CLUSTER] = (HOST, self.http1_ports)
        else:  # a config calling the gRPC port directly
            clusters["jira_authz"] = (HOST, self.check_ports)
        if envoy_config.has_cluster(self._envoy_config_name, envoy_config.CONSOLE_CLUSTER):
            clusters[envoy_config.CONSOLE_CLUSTER] = (HOST, self.console_port)
        server_cfg = load_config(self.authz_config_path, environ=self._authz_env())
        # The shipped config set to this server's identity header and unauthenticated policy
        # (the no-credentials route answers without a Check, so it must say what the server
        # would).
        envoy_config.write(envoy_config.for_server(
            envoy_config.patch(envoy_config.load(self._envoy_config_name),
                               listener_port=self.envoy_port, admin_port=self.envoy_admin_port,
                               clusters=clusters),
            identity_header=server_cfg.identity.header,
            deny_unauthenticated=server_cfg.auth.unauthenticated == "deny",
            realm=server_cfg.auth.realm,
        ), self.envoy_config_path)
        # One client-IP model (docs/operations.md): refuse an Envoy whose trusted hops
        # contradict the server's instead of starting a stack that judges the wrong address.
        ip = server_cfg.client_ip
        conflict = envoy_config.client_ip_conflict(
            envoy_config.load(self.envoy_config_path), ip.xff_trusted_hops, ip.envoy_appends_peer
        )
        if conflict:
            raise StackError(f"client IP settings contradict each other: {conflict}")
        argv = [
            find_envoy(),
            "-c", str(self.envoy_config_path),
            "--disable-hot-restart",  # several Envoys on one machine (no shared-memory clash)
            "--concurrency", "2",
            "--log-level", "warning",
            "--file-flush-interval-msec", "200",  # access log lines show up while debugging
        ]  # fmt: skip
        self._envoy = Child("envoy", argv, self.envoy_log, stop_timeout=10)
        self._envoy.start()
        wait_until(
            "envoy admin /ready",
            http_ok_probe(f"{self.envoy_admin_url}/ready"),
            child=self._envoy,
            timeout=self.start_timeout,
        )
        wait_until(
            "envoy listener",
            tcp_probe(HOST, self.envoy_port),
            child=self._envoy,
            timeout=self.start_timeout,
        )


# --- jira-authz up ----------------------------------------------------------------------------


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``jira-authz up``."""
    parser.add_argument(
        "--port", type=int, default=8000, help="Envoy listener port on 127.0.0.1 (default 8000)"
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis instead of starting one (default: $JIRA_AUTHZ_REDIS_URL, else "
             "up starts its own)",
    )
    parser.add_argument("--config", help="extra jira-authz YAML config for the server")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="server processes (jira-authz serve --workers N); Envoy gets one endpoint per "
             "worker port and balances Checks over them (default 1)",
    )
    parser.add_argument(
        "--workdir",
        default=".local-stack",
        help="logs, generated configs and the local Redis data (default .local-stack)",
    )


class _Stop(Exception):
    """Raised from the signal handler to leave the wait loop (once)."""


def run_up(args: argparse.Namespace) -> int:
    """Start the stack, print ``ready: URL`` when everything answers, stop on Ctrl-C/SIGTERM."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # already shutting down: let the orderly stop finish
        stopping = True
        raise _Stop(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    stack: LocalStack | None = None
    rc = 0
    try:
        try:
            running = stack_state.read(Path(args.workdir))
            if running is not None and running.alive():
                raise StackError(
                    f"a stack is already running from {args.workdir} (pid {running.pid}, "
                    f"{running.jira_url}); stop it first, or give another --workdir")
            env_url = os.environ.get(f"{ENV_PREFIX}REDIS_URL")
            redis_url = args.redis_url or env_url or None
            if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise StackError(f"{redis_url!r} is not a Redis URL (redis://host:port/db)")
            stack = LocalStack(
                redis_url=redis_url,
                envoy_port=args.port,
                authz_config=args.config,
                workdir=args.workdir,
                workers=args.workers,
                progress=lambda m: print(f"jira-authz up: {m}", file=sys.stderr, flush=True),
            )
            if redis_url and not args.redis_url:
                stack.redis_url_source = f"from {ENV_PREFIX}REDIS_URL"
            stack.start()
            _print_info(stack)
            print(f"ready: {stack.envoy_url}", flush=True)
            while True:
                stack.check_alive()
                time.sleep(0.5)
        except _Stop:
            rc = 0
        except StackError as e:
            print(f"jira-authz up: {e}", file=sys.stderr, flush=True)
            rc = 1
        finally:
            stopping = True
            if stack is not None:
                stack.stop()
                print("jira-authz up: stopped", file=sys.stderr, flush=True)
    except _Stop:  # a signal that raced with the start of the cleanup
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return rc


def _print_info(stack: LocalStack) -> None:
    here = Path.cwd()
    workdir = stack.workdir
    with contextlib.suppress(ValueError):
        workdir = workdir.relative_to(here)
    found_here = workdir == Path(stack_state.DEFAULT_WORKDIR)
    lines = [
        f"jira (through envoy): {stack.envoy_url}",
        f"console: {stack.console_url}",
        f"local users:          {LOCAL_USERS}",
        f"envoy admin:          {stack.envoy_admin_url}",
        f"authz check (gRPC):   {stack.check_addr}",
        f"authz check (HTTP/1.1, Envoy's bridge): {stack.http1_addr}",
        f"authz admin (gRPC):   {stack.admin_addr}  (credential: {stack.admin_token_file})",
        f"authz metrics:        http://{stack.metrics_addr}/metrics",
        f"redis:                {stack.redis_url}",
        *(f"log {name}: {path}" for name, path in stack.logs.items()),
        f"where everything is:  {stack.workdir / stack_state.STATE_FILE}",
        "create a token in another shell, in this directory"
        + ("" if found_here else f" (export {stack_state.ENV_STACK_DIR}={stack.workdir})")
        + ": the CLI finds this stack by itself",
        "  jira-authz token create --label try --user alice --limit '.*/rest/api/2/myself'",
        f"  curl -u alice:TOKEN {stack.envoy_url}/rest/api/2/myself",
        f"snippets point at {stack.envoy_url} (token create/snippet --base-url to change)",
        "the same through the admin API:",
        f"  jira-authz token list --admin-url {stack.admin_url} "
        f"--admin-token-file {stack.admin_token_file}",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
