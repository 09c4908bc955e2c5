"""Shared machinery of the hardening suites: stacks, token admin, traffic, logs, secret scans.

Everything talks to 127.0.0.1 only, every loop is bounded by a count or a deadline, and every
thread or process started here is stopped by whoever started it. Module name is unique on
purpose: test directories are not packages, so a generic ``helpers`` could clash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http.client
import json
import os
import queue
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from authz.adapters.redis_conn import create_client
from authz.admin.operations import TokenAdmin
from authz.config import Config, load_config
from authz.domain.issuing import TokenRequest
from authz.domain.model import Token
from authz.stack.local import LocalStack
from authz.stack.processes import StackError, find_envoy, find_redis_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envoy_http import HOST, Reply, basic, read_reply, send, send_raw
from oracles import tomcat_view

__all__ = ["HOST", "Reply", "basic", "send", "send_raw", "tomcat_view"]
FULL = os.environ.get("JIRA_AUTHZ_HARDENING_FULL", "") not in ("", "0", "false", "no")
"""Long versions: more examples, more fuzz runs, longer load and fault runs."""


def scaled(short: int | float, full: int | float) -> Any:
    """``full`` in a full run (JIRA_AUTHZ_HARDENING_FULL=1), else ``short``."""
    return full if FULL else short


# --- figures for docs/hardening.md ------------------------------------------------------------


class Figures:
    """Session-wide counters; printed at the end and written to $JIRA_AUTHZ_HARDENING_REPORT."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.notes: dict[str, Any] = {}
        self.bypass_rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def note(self, key: str, value: Any) -> None:
        with self._lock:
            self.notes[key] = value

    def as_dict(self) -> dict[str, Any]:
        return {"full": FULL, "counts": dict(sorted(self.counts.items())),
                "notes": self.notes, "bypass_rows": self.bypass_rows}


FIGURES = Figures()


# --- secrets used, for the hygiene scan -------------------------------------------------------


class SecretLedger:
    """Every credential the suites sent, and findings of scans of stacks already torn down."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.findings: list[str] = []
        self.scanned: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            self.secrets.update(s for s in secrets if len(s) >= 8)


LEDGER = SecretLedger()


# --- stacks -----------------------------------------------------------------------------------


def require_binaries() -> None:
    import pytest

    try:
        find_envoy()
        find_redis_server()
    except StackError as e:
        pytest.skip(f"hardening e2e needs Envoy and a Redis server: {e}")


BASE_ENV = {
    # Every Check in the server's access log: more text the hygiene scan can search.
    "JIRA_AUTHZ_LOG_ACCESS_LOG": "true",
    # The load and fault runs reconcile every token-like call (unknown tokens too) with its
    # audit event one by one: the rate bound of calls without a valid token is lifted here
    # and proven with its defaults in test_edges_of_trust.py (UNTRUSTED_DEFAULTS).
    "JIRA_AUTHZ_AUDIT_UNTRUSTED_PER_SECOND": "1000000",
    "JIRA_AUTHZ_AUDIT_UNTRUSTED_PER_CLIENT_PER_SECOND": "1000000",
}

UNTRUSTED_DEFAULTS = {
    "JIRA_AUTHZ_AUDIT_UNTRUSTED_PER_SECOND": "2",
    "JIRA_AUTHZ_AUDIT_UNTRUSTED_PER_CLIENT_PER_SECOND": "1",
}
"""The shipped rate bound of audit events without a valid token (config defaults)."""


def make_stack(workdir: Path, env: Mapping[str, str] | None = None, **kw: Any) -> LocalStack:
    require_binaries()
    return LocalStack(
        key_prefix=f"hard-{uuid.uuid4().hex[:8]}:",
        workdir=workdir,
        inherit_config_env=False,
        env_overrides={**BASE_ENV, **(env or {})},
        **kw,
    )


def authz_pid(stack: LocalStack) -> int:
    child = stack._authz  # the stack exposes no accessor for one child's pid
    assert child is not None and child.pid is not None
    return child.pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kill_authz(stack: LocalStack) -> None:
    """SIGKILL the server: a crash, no drain, no audit flush."""
    child = stack._authz
    assert child is not None
    child.kill()


def redis_client(stack_or_url: LocalStack | str) -> redis.Redis:
    url = stack_or_url if isinstance(stack_or_url, str) else stack_or_url.redis_url
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                decode_responses=True)


def wait_for(cond: Callable[[], Any], *, timeout: float, what: str,
             interval: float = 0.02) -> Any:
    """Poll until ``cond()`` is truthy (its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- token administration (in-process, on a private event loop) -------------------------------


class TokenOps:
    """The admin operations against a stack's Redis, callable from any one thread at a time.

    The CLI costs a Python start-up per call; load and fault runs change tokens every few
    hundred milliseconds, so they use ``TokenAdmin`` (what the CLI runs) directly.
    """

    def __init__(self, stack: LocalStack, *, redis_url: str | None = None) -> None:
        env = dict(stack.client_env())
        if redis_url:
            env["JIRA_AUTHZ_REDIS_URL"] = redis_url
        env["JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS"] = "5"
        env["JIRA_AUTHZ_POLICY_ALLOW_UNBOUND"] = "true"  # unbound tokens are attacked too
        self.cfg: Config = load_config(environ=env)
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._client = create_client(self.cfg.redis, client_name="hardening-admin")
        self.admin = TokenAdmin(self._client, self.cfg, actor="hardening")

    def _run(self, coro: Any) -> Any:
        with self._lock:
            return self._loop.run_until_complete(asyncio.wait_for(coro, 30))

    def create(self, **kw: Any) -> tuple[Token, str]:
        kw.setdefault("label", "hardening")
        kw.setdefault("any_user", kw.get("user") is None)
        token, secret = self._run(self.admin.create(TokenRequest(**kw)))
        LEDGER.add(secret)
        return token, secret

    def update_limits(self, token_id: str, limits: Sequence[str]) -> Token:
        return self._run(self.admin.update(token_id, limits=list(limits)))

    def revoke(self, token_id: str) -> Token:
        return self._run(self.admin.revoke(token_id))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._client.aclose())
        self._loop.close()


# --- HTTP through Envoy -----------------------------------------------------------------------


# --- traffic at a steady rate -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request a traffic run sends: what it is and what may legitimately happen."""

    kind: str
    """Scenario label (e.g. warm, cold, revoked)."""
    path: str
    auth: str
    token_id: str = ""
    method: str = "GET"
    extra_headers: tuple[tuple[str, str], ...] = ()
    audited: bool = True
    """A token call (audited); False for requests without one of our tokens."""


@dataclass
class Sent:
    n: int
    call: Call
    tag: str
    """Unique Host (``:authority``) of this request: Envoy's access log and the audit event
    both record it, which joins the three views of one request."""
    due: float
    start: float = 0.0
    end: float = 0.0
    status: int = 0
    from_jira: bool = False
    identity: Any = None
    error: str = ""


class Traffic:
    """Open-loop requests through Envoy at ``rate`` per second until stopped or ``duration``.

    Each request carries a unique Host (``<run>-<n>.hardening.test``; the shipped route
    matches any host): Envoy's access log (``authority``) and the audit event (``host``) both
    record it, which joins the three views of one request.
    """

    def __init__(self, port: int, pick: Callable[[int, float], Call | None], *, rate: float,
                 duration: float, workers: int = 12, run_id: str | None = None) -> None:
        self.port = port
        self.pick = pick
        self.rate = rate
        self.duration = duration
        self.workers = workers
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.sent: list[Sent] = []
        self._jobs: queue.Queue[Sent | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.max_lag = 0.0

    @property
    def tag_prefix(self) -> str:
        return f"{self.run_id}-"

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"traffic-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        pacer = threading.Thread(target=self._pace, name="traffic-pacer", daemon=True)
        pacer.start()
        self._threads.append(pacer)

    def stop(self, timeout: float = 30) -> None:
        """Stop scheduling, let queued requests finish (each bounded by its own timeout)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"traffic threads still running: {alive}"

    def wait(self) -> None:
        """Until the run's duration has passed, then stop."""
        end = self._t0 + self.duration
        while time.monotonic() < end and not self._stop.is_set():
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        self.stop()

    def _pace(self) -> None:
        t0 = self._t0
        n = 0
        try:
            while not self._stop.is_set():
                due = t0 + n / self.rate
                if due - t0 >= self.duration:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    if self._stop.is_set():
                        break
                call = self.pick(n, time.time())
                if call is not None:
                    s = Sent(n, call, f"{self.tag_prefix}{n}.hardening.test", due)
                    with self._lock:
                        self.sent.append(s)
                    self._jobs.put(s)
                n += 1
        finally:
            for _ in range(self.workers):
                self._jobs.put(None)

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            self.max_lag = max(self.max_lag, time.monotonic() - job.due)
            c = job.call
            headers = [("Authorization", c.auth)] if c.auth else []
            headers += [("Host", job.tag), ("User-Agent", "hardening"), *c.extra_headers]
            job.start = time.time()
            for attempt in range(2):  # a kept-alive connection Envoy closed: reopen once
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
                    conn.putrequest(c.method, c.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for k, v in headers:
                        conn.putheader(k, v)
                    conn.endheaders()
                    r = read_reply(conn.getresponse())
                    job.status, job.from_jira = r.status, r.from_jira
                    if r.echo is not None:
                        job.identity = r.echo["headers"].get("contextuser")
                    if r.headers.get("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    job.error = f"{type(e).__name__}: {e}"
                    if attempt == 1 or not isinstance(
                        e, http.client.RemoteDisconnected | ConnectionResetError
                    ):
                        break
                    job.error = ""
            job.end = time.time()
        if conn is not None:
            conn.close()


# --- Envoy's access log and the audit stream --------------------------------------------------


def envoy_access_log(stack: LocalStack) -> list[dict[str, str]]:
    """JSON access-log lines (deploy/envoy/sidecar.yaml's format) from Envoy's stdout file."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in stack.envoy_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out


def access_by_tag(stack: LocalStack, prefix: str) -> dict[str, list[dict[str, str]]]:
    """Envoy's access-log lines by the request's Host (``authority``)."""
    out: dict[str, list[dict[str, str]]] = {}
    for rec in envoy_access_log(stack):
        tag = rec.get("authority") or ""
        if tag.startswith(prefix):
            out.setdefault(tag, []).append(rec)
    return out


def audit_events(r: redis.Redis, stream: str) -> list[dict[str, str]]:
    """Every entry of the audit stream, oldest first (paged XRANGE)."""
    out: list[dict[str, str]] = []
    lo = "-"
    while True:
        page = r.xrange(stream, min=lo, max="+", count=5000)
        for entry_id, fields in page:
            out.append({"_id": entry_id, **fields})
        if len(page) < 5000:
            return out
        lo = "(" + page[-1][0]


def audit_by_tag(r: redis.Redis, stream: str, prefix: str) -> dict[str, list[dict[str, str]]]:
    """Audit events by the request's Host."""
    out: dict[str, list[dict[str, str]]] = {}
    for ev in audit_events(r, stream):
        tag = ev.get("host", "")
        if tag.startswith(prefix):
            out.setdefault(tag, []).append(ev)
    return out


# Envoy's %RESPONSE_CODE_DETAILS% for answers the server decided (an allow reaches Jira).
DECIDED_DETAILS = ("via_upstream", "ext_authz_denied")


@dataclass
class AuditReconciliation:
    """Envoy's access log against the audit stream, request by request (by Host tag)."""

    requests: int = 0
    envoy_lines: int = 0
    decided: int = 0
    """Token calls the server answered (Envoy's details: via_upstream / ext_authz_denied)."""
    envoy_errors: int = 0
    """Calls Envoy answered 503 itself because the Check failed (server down or too slow)."""
    audited: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing_in_envoy: list[str] = field(default_factory=list)
    errors_audited: int = 0
    """Envoy gave up on the Check (503) but the server still decided and audited it."""
    not_token_calls: int = 0
    unexpected_events: list[str] = field(default_factory=list)
    """Events for requests that were not token calls."""

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "envoy_lines": self.envoy_lines, "decided": self.decided,
            "envoy_errors": self.envoy_errors, "audited": self.audited,
            "lost": len(self.lost), "duplicated": len(self.duplicated),
            "mismatched": len(self.mismatched), "errors_audited": self.errors_audited,
            "missing_in_envoy": len(self.missing_in_envoy),
            "not_token_calls": self.not_token_calls,
            "unexpected_events": len(self.unexpected_events),
        }


def reconcile(stack: LocalStack, traffic: Traffic, *, settle: float = 15.0) -> AuditReconciliation:
    """Wait until Envoy logged every request and the audit stopped growing, then compare."""
    done = [s for s in traffic.sent if s.status]
    want = {s.tag for s in done}
    wait_for(lambda: want <= set(access_by_tag(stack, traffic.tag_prefix)), timeout=settle,
             what="Envoy's access log to show every request")
    r = redis_client(stack)
    try:
        last = -1
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:  # audit flushes every 50 ms; wait until it is quiet
            found = audit_by_tag(r, stack.audit_stream, traffic.tag_prefix)
            n = sum(len(v) for v in found.values())
            if n == last:
                break
            last = n
            time.sleep(0.5)
        audit = audit_by_tag(r, stack.audit_stream, traffic.tag_prefix)
    finally:
        r.close()
    access = access_by_tag(stack, traffic.tag_prefix)
    rec = AuditReconciliation(requests=len(done))
    for s in done:
        lines = access.get(s.tag, [])
        events = audit.get(s.tag, [])
        rec.audited += len(events)
        if not lines:
            rec.missing_in_envoy.append(s.tag)
            continue
        rec.envoy_lines += len(lines)
        line = lines[0]
        if not s.call.audited:
            rec.not_token_calls += 1
            if events:
                rec.unexpected_events.append(s.tag)
            continue
        details = line.get("details", "")
        if details not in DECIDED_DETAILS:
            rec.envoy_errors += 1
            if events:
                rec.errors_audited += 1
            if len(events) > 1:
                rec.duplicated.append(s.tag)
            continue
        rec.decided += 1
        if not events:
            rec.lost.append(s.tag)
        elif len(events) > 1:
            rec.duplicated.append(s.tag)
        else:
            ev = events[0]
            ok = (ev.get("request_id") == line.get("request_id")
                  and ev.get("status") == str(line.get("status"))
                  and (ev.get("decision") == "allow") == (str(line.get("status")) == "200"))
            if not ok:
                rec.mismatched.append(f"{s.tag}: envoy {line} audit {ev}")
    return rec


# --- secret scanning --------------------------------------------------------------------------

_JAT = re.compile(r"jat_[0-9A-Za-z]{38}")
_ALNUM_RUN = re.compile(r"[0-9A-Za-z]{38,}")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


def _b64_views(run: str) -> Iterator[str]:
    """Text of a base64-looking run decoded at every alignment (standard and URL alphabet)."""
    std = run.replace("-", "+").replace("_", "/").rstrip("=")
    for i in range(4):
        chunk = std[i:]
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
        if len(chunk) < 12:
            continue
        with contextlib.suppress(binascii.Error, ValueError):
            yield base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("latin-1")


def find_secrets(text: str, secrets: Iterable[str]) -> list[str]:
    """Which of ``secrets`` appear in ``text``: verbatim, without the ``jat_`` prefix, or
    base64-encoded at any offset (as in a logged ``Basic`` header). Linear in ``text``."""
    secrets = set(secrets)
    if not text or not secrets:
        return []
    bodies = {s[4:]: s for s in secrets if s.startswith("jat_")}
    others = [s for s in secrets if not s.startswith("jat_")]
    found: set[str] = set()

    def scan(t: str) -> None:
        found.update(m for m in _JAT.findall(t) if m in secrets)
        for run in _ALNUM_RUN.findall(t):
            for i in range(len(run) - 37):
                hit = bodies.get(run[i : i + 38])
                if hit:
                    found.add(hit)
        found.update(s for s in others if s in t)

    scan(text)
    for run in _B64_RUN.findall(text):
        for view in _b64_views(run):
            scan(view)
    return sorted(found)


def redis_dump(r: redis.Redis) -> str:
    """Every key name and every value in the database, as text."""
    parts: list[str] = []
    for key in r.scan_iter(count=1000):
        parts.append(key)
        kind = r.type(key)
        if kind == "string":
            parts.append(str(r.get(key)))
        elif kind == "hash":
            parts.extend(f"{k}={v}" for k, v in r.hgetall(key).items())
        elif kind == "set":
            parts.extend(r.smembers(key))
        elif kind == "list":
            parts.extend(r.lrange(key, 0, -1))
        elif kind == "zset":
            parts.extend(r.zrange(key, 0, -1))
        elif kind == "stream":
            parts.extend(json.dumps(ev) for ev in audit_events(r, key))
        else:
            parts.append(f"<{kind}>")
    return "\n".join(parts)


def scrape(url: str) -> str:
    host, _, port = url.removeprefix("http://").partition("/")[0].partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/" + url.removeprefix("http://").partition("/")[2])
        return conn.getresponse().read().decode("utf-8", "replace")
    finally:
        conn.close()


def stack_texts(stack: LocalStack, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Everything a secret must never reach, by source name."""
    out: dict[str, str] = {}
    with contextlib.suppress(Exception):
        r = redis_client(stack)
        try:
            out["redis"] = redis_dump(r)
        finally:
            r.close()
    with contextlib.suppress(Exception):
        out["metrics"] = scrape(f"http://{stack.metrics_addr}/metrics")
    for name in ("authz", "envoy"):
        path = stack.logs.get(name)
        if path is not None and path.exists():
            out[f"{name} log"] = path.read_text(encoding="utf-8", errors="replace")
    out.update(extra or {})
    return out


def scan_stack(stack: LocalStack, secrets: Iterable[str],
               extra: Mapping[str, str] | None = None) -> list[str]:
    """Findings (``source: secret-id``) for one stack; records what was scanned."""
    secrets = set(secrets)
    findings = []
    for source, text in stack_texts(stack, extra).items():
        LEDGER.scanned[source] += len(text)
        for s in find_secrets(text, secrets):
            findings.append(f"{source}: secret {s[:8]}… found")
    return findings


# --- a tiny OTLP collector (for scanning spans) -----------------------------------------------


class SpanCollector:
    """OTLP/gRPC trace receiver on 127.0.0.1 keeping the raw export requests."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        outer = self
        self.requests: list[bytes] = []

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                outer.requests.append(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port(f"{HOST}:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def text(self) -> str:
        return "\n".join(b.decode("latin-1") for b in self.requests)

    def spans(self) -> int:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        n = 0
        for raw in self.requests:
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
            n += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        return n

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)


# --- a TCP proxy that delays bytes (a slow Redis) ---------------------------------------------


class DelayProxy:
    """127.0.0.1 TCP proxy adding ``delay`` seconds to every chunk, both directions.

    Bytes already sent are delivered even after the sender closed (as on a real network with
    latency), so a command whose reply timed out still runs on the server. ``stall_subscribers``
    silently stops forwarding on connections that sent SUBSCRIBE (a half-dead pub/sub link).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.stall_subscribers = False
        self._paused_until = 0.0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "delay proxy did not start"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def pause(self, seconds: float) -> None:
        """Hold every byte for ``seconds`` (Redis frozen, connections open), then deliver."""
        self._paused_until = self._loop.time() + seconds

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, HOST, 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ur, uw = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            cw.close()
            return
        state = {"subscriber": False}
        up = asyncio.ensure_future(self._pump(cr, uw, state, to_server=True))
        down = asyncio.ensure_future(self._pump(ur, cw, state, to_server=False))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.ALL_COMPLETED)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    state: dict[str, bool], *, to_server: bool) -> None:
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await pending.get()
                if not chunk:
                    break
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.stall_subscribers and state["subscriber"]:
                    continue  # swallowed: the link looks alive but nothing gets through
                writer.write(chunk)
                with contextlib.suppress(OSError):
                    await writer.drain()

        deliverer = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    chunk = await reader.read(65536)
                except OSError:
                    chunk = b""
                if to_server and b"SUBSCRIBE" in chunk.upper():
                    state["subscriber"] = True
                due = max(self._loop.time() + self.delay, self._paused_until)
                await pending.put((due, chunk))
                if not chunk:
                    break
            await deliverer
        finally:
            deliverer.cancel()
            with contextlib.suppress(Exception):
                writer.close()

    def close(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        assert not self._thread.is_alive(), "delay proxy thread did not stop"
        self._loop.close()
