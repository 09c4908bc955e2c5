"""The Check over HTTP/1.1, behind Envoy's ``grpc_http1_reverse_bridge``: same messages, less work.

Why: a grpc.aio unary call costs this process ~0.2-0.35 ms of CPU in gRPC's own machinery —
more than the whole decision — while an HTTP/1.1 exchange parsed by ``httptools`` on uvloop
costs a few tens of µs. Envoy's ``grpc_http1_reverse_bridge`` filter (docs/performance.md,
"Serving model") turns the ext_authz gRPC call into ``POST /envoy.service.auth.v3.Authorization/
Check`` with the serialized ``CheckRequest`` as the body (gRPC frame withheld) and frames our
serialized ``CheckResponse`` back into gRPC. The decision, its translation and the response are
the gRPC servicer's own (``AuthorizationServicer.answer``); only the transport differs. The gRPC
port stays for every other client (Istio's ``envoyExtAuthzGrpc``, direct callers).

Everything that reaches this port is hostile until parsed: one request line, bounded headers
and body, exactly one method and path, the bridge's content type; anything else is answered
4xx and the connection closed. A non-200 answer becomes a gRPC error at the bridge, which the
ext_authz filter treats as an error (``status_on_error``, fail closed) — never as an allow.
``GET /healthz`` answers 200 while the server is ready (Envoy's HTTP health check).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError

from authz import metrics

log = logging.getLogger(__name__)

CHECK_PATH = b"/envoy.service.auth.v3.Authorization/Check"
HEALTH_PATH = b"/healthz"
CONTENT_TYPE = b"application/x-protobuf"
"""The ``content_type`` the shipped bridge filters set on the request and expect back."""
TRACE_HEADERS = frozenset((b"traceparent", b"tracestate", b"b3", b"x-b3-traceid",
                           b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled",
                           b"x-b3-flags"))
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Above what any shipped ``with_request_body`` (``max_request_bytes``) lets Envoy send."""
MAX_PIPELINED = 32
"""Requests of one connection decided ahead of their turn to answer: more pauses reading."""
IDLE_SECONDS = 600.0
"""A connection silent this long is closed (Envoy's pool closes its own idle ones first)."""
LINGER_SECONDS = 1.0
"""Draining: how long an idle connection may still bring a request (answered, then closed)."""
STALLED_SECONDS = 10.0
"""A request started but not complete for this long is a stalled or slow client: closed."""

_HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: "
_EMPTY = b""


def _plain(status: int, reason: str, text: str, *, close: bool) -> bytes:
    body = text.encode()
    conn = b"connection: close\r\n" if close else b""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n".encode() + conn + b"\r\n" + body)


Answer = Callable[[external_auth_pb2.CheckRequest, list[tuple[str, str]]], Awaitable[bytes]]
AnswerNow = Callable[[external_auth_pb2.CheckRequest, list[tuple[str, str]]], bytes | None]


def _closing(answer: bytes) -> bytes:
    """The answer announcing that the connection closes after it (draining: Envoy's pool then
    drops the connection cleanly instead of reusing one that is about to close)."""
    return answer.replace(b"\r\n", b"\r\nconnection: close\r\n", 1)


async def _ready(value: bytes) -> bytes:
    return value


class _Refused(Exception):
    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parse, decide (possibly several pipelined), answer in order."""

    __slots__ = (
        "body",
        "body_bytes",
        "closing",
        "ctype",
        "headers_bytes",
        "in_message",
        "keep_alive",
        "last",
        "parser",
        "paused",
        "pending",
        "server",
        "started",
        "tail",
        "trace",
        "transport",
        "url",
    )

    def __init__(self, server: CheckHttp1Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.tail: asyncio.Future[Any] | None = None
        self.pending = 0
        self.paused = False
        self.closing = False
        self.in_message = False
        self.started = 0.0
        self.last = 0.0
        self._reset()

    def _reset(self) -> None:
        self.url = _EMPTY
        self.ctype = _EMPTY
        self.headers_bytes = 0
        self.trace: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.keep_alive = True

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last = self.server.loop.time()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last = self.server.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Bad Request", "protocol upgrade is not supported")
        except httptools.HttpParserError as err:
            # A callback's refusal arrives wrapped (HttpParserCallbackError, as context).
            refused = err.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.reason, refused.text)
            else:
                self._refuse(400, "Bad Request", "malformed HTTP/1.1 request")

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.started = self.server.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > 256:
            raise _Refused(414, "URI Too Long", "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers_bytes += len(name) + len(value)
        if self.headers_bytes > MAX_HEADER_BYTES:
            raise _Refused(431, "Request Header Fields Too Large", "headers too large")
        key = name.lower()
        if key == b"content-length":
            # llhttp has checked the syntax (and refused a repeat or a chunked body beside it)
            if value.strip().isdigit() and int(value) > MAX_BODY_BYTES:
                raise _Refused(413, "Content Too Large", "request body too large")
        elif key == b"content-type":
            if self.ctype:
                raise _Refused(400, "Bad Request", "repeated content-type")
            self.ctype = value
        elif key in TRACE_HEADERS:
            self.trace.append((key.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            raise _Refused(400, "Bad Request", "protocol upgrade is not supported")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            raise _Refused(413, "Content Too Large", "request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.closing:  # behind a closing answer in the same read: never decided
            return
        method = self.parser.get_method()
        self.keep_alive = self.parser.should_keep_alive()
        url = self.url
        if url == CHECK_PATH and method == b"POST":
            if self.ctype.split(b";", 1)[0].strip().lower() != CONTENT_TYPE:
                raise _Refused(415, "Unsupported Media Type",
                               "expected content-type application/x-protobuf")
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            trace = self.trace
            keep = self.keep_alive
            self._reset()
            if self.tail is None:  # nothing ahead of it on this connection: answer now if we can
                request = self.server.parse(body)
                out = (request if isinstance(request, bytes)
                       else self.server.decide_now(request, trace))
                if out is not None:
                    self._write_now(out, keep)
                    return
                self._queue(self.server.decide(request, trace), keep)
            else:
                self._queue(self.server.decide(self.server.parse(body), trace), keep)
        elif url == HEALTH_PATH and method in (b"GET", b"HEAD"):
            keep = self.keep_alive
            self._reset()
            self._queue(self.server.health(), keep)
        elif url in (CHECK_PATH, HEALTH_PATH):
            raise _Refused(405, "Method Not Allowed", "method not allowed")
        else:
            raise _Refused(404, "Not Found", "not found")

    # --- answering in order ----------------------------------------------------------------

    def _write_now(self, out: bytes, keep_alive: bool) -> None:
        """Send one answer (its turn has come); close after it when the request or a drain
        says so."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if keep_alive and self.server.draining:
            out, keep_alive = _closing(out), False
        transport.write(out)
        if not keep_alive:
            self.closing = True
            transport.close()

    def _queue(self, answer: Awaitable[bytes], keep_alive: bool) -> None:
        previous = self.tail
        self.pending += 1
        self.tail = task = asyncio.ensure_future(self._answer(answer, previous, keep_alive))
        task.add_done_callback(self._answered)
        if self.pending > MAX_PIPELINED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    async def _answer(self, answer: Awaitable[bytes], previous: asyncio.Future[Any] | None,
                      keep_alive: bool) -> None:
        out = await answer
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        self._write_now(out, keep_alive)

    def _answered(self, task: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if self.tail is task:
            self.tail = None
        if not task.cancelled() and task.exception() is not None:
            # decide() answers every failure itself; reaching here is a bug: fail closed.
            log.error("check answer failed", exc_info=task.exception())
            metrics.CHECK_HTTP1_REFUSED.labels("500").inc()
            self.closing = True
            if self.transport is not None:
                self.transport.abort()
            return
        resume = self.paused and not self.closing and self.pending <= MAX_PIPELINED // 2
        if resume and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, reason: str, text: str) -> None:
        """Answer a request that is not a Check and close: what follows it cannot be trusted.

        Requests before it on the connection are still answered, in order, first."""
        metrics.CHECK_HTTP1_REFUSED.labels(str(status)).inc()
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.pause_reading()
        self._queue(_ready(_plain(status, reason, text, close=True)), keep_alive=False)

    def idle_check(self, now: float) -> None:
        if self.closing or self.transport is None:
            return
        if self.in_message and now - self.started > STALLED_SECONDS:
            self._refuse(408, "Request Timeout", "request not completed in time")
        elif not self.in_message and self.pending == 0 and now - self.last > IDLE_SECONDS:
            self.closing = True
            self.transport.close()

    def close_when_idle(self) -> None:
        """Drain: an idle connection closes now, a busy one after its last answer."""
        if self.pending == 0 and not self.in_message and self.transport is not None:
            self.closing = True
            self.transport.close()


class CheckHttp1Server:
    """Listens for bridged Checks; ``answer`` is the gRPC servicer's own decision path."""

    def __init__(self, answer: Answer, ready: Callable[[], bool], *,
                 answer_now: AnswerNow | None = None) -> None:
        self.answer = answer
        self.answer_now = answer_now
        self.ready = ready
        self.connections: set[_Connection] = set()
        self.draining = False
        self.loop: asyncio.AbstractEventLoop  # the running loop, set by start()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host or None, port, backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name="check-http1-sweep")
        return self.port

    @staticmethod
    def parse(body: bytes) -> external_auth_pb2.CheckRequest | bytes:
        """The CheckRequest, or the 400 answer to a body that is not one."""
        try:
            return external_auth_pb2.CheckRequest.FromString(body)
        except DecodeError:
            metrics.CHECK_HTTP1_REFUSED.labels("400").inc()
            return _plain(400, "Bad Request", "body is not a CheckRequest", close=False)

    def decide_now(self, request: external_auth_pb2.CheckRequest,
                   trace: list[tuple[str, str]] | None = None) -> bytes | None:
        """The whole answer when it needs no I/O, else None (then ``decide``)."""
        if self.answer_now is None:
            return None
        try:
            out = self.answer_now(request, trace or [])
        except Exception:
            log.exception("check failed on the HTTP/1.1 port")
            metrics.CHECK_HTTP1_REFUSED.labels("500").inc()
            return _plain(500, "Internal Server Error", "internal error", close=False)
        return None if out is None else b"%s%d\r\n\r\n%s" % (_HEAD_200, len(out), out)

    async def decide(self, request: external_auth_pb2.CheckRequest | bytes,
                     trace: list[tuple[str, str]]) -> bytes:
        if isinstance(request, bytes):
            return request  # already the answer (a body that was not a CheckRequest)
        try:
            out = await self.answer(request, trace)
        except Exception:
            log.exception("check failed on the HTTP/1.1 port")
            metrics.CHECK_HTTP1_REFUSED.labels("500").inc()
            return _plain(500, "Internal Server Error", "internal error", close=False)
        return b"%s%d\r\n\r\n%s" % (_HEAD_200, len(out), out)

    async def health(self) -> bytes:
        if self.ready() and not self.draining:
            return _plain(200, "OK", "SERVING", close=False)
        return _plain(503, "Service Unavailable", "NOT_SERVING", close=False)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.idle_check(now)

    async def stop(self, grace: float) -> None:
        """Drain within ``grace``: stop accepting (Envoy's bridge retries a refused connection
        on another endpoint), answer in-flight and arriving Checks with ``connection: close``,
        close idle connections after a short linger, abort what is left at the deadline."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        now = self.loop.time()
        linger_until, deadline = now + min(LINGER_SECONDS, grace), now + grace
        while self.connections and self.loop.time() < deadline:
            if self.loop.time() >= linger_until:
                for conn in list(self.connections):
                    conn.close_when_idle()
            if not self.connections:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
