"""The HTTP/1.1 Check port (authz.check_http1) as a hostile client sees it: raw sockets only.

The answer function is a stand-in here (the decision behind it is the gRPC servicer's, tested
with it); what is tested is the transport: what it accepts, what it refuses, in what order it
answers, and that nothing but a well-formed bridged Check reaches the decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz import check_http1
from authz.check_http1 import CheckHttp1Server

pytestmark = pytest.mark.integration

CHECK = b"/envoy.service.auth.v3.Authorization/Check"


def check_body(path: str = "/rest/api/2/myself") -> bytes:
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.path = path
    return req.SerializeToString()


def post(body: bytes, *, ctype: bytes = b"application/x-protobuf", extra: bytes = b"",
         target: bytes = CHECK, method: bytes = b"POST", version: bytes = b"HTTP/1.1") -> bytes:
    return (method + b" " + target + b" " + version + b"\r\nhost: authz\r\n"
            + (b"content-type: " + ctype + b"\r\n" if ctype else b"") + extra
            + b"content-length: %d\r\n\r\n" % len(body) + body)


class Harness:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self.ready = True
        self.delays: dict[str, float] = {}
        self.fail = False
        self.server = CheckHttp1Server(self.answer, lambda: self.ready,
                                       answer_now=self.answer_now)
        self.port = 0
        self.now_calls: list[str] = []

    def answer_now(self, req: external_auth_pb2.CheckRequest,
                   trace: list[tuple[str, str]]) -> bytes | None:
        """Paths under /now are decided without I/O; anything else defers to ``answer``."""
        path = req.attributes.request.http.path
        if not path.startswith("/now"):
            return None
        self.now_calls.append(path)
        return b"now:" + path.encode()

    async def answer(self, req: external_auth_pb2.CheckRequest,
                     trace: list[tuple[str, str]]) -> bytes:
        path = req.attributes.request.http.path
        self.calls.append((path, trace))
        if self.fail:
            raise RuntimeError("boom")
        await asyncio.sleep(self.delays.get(path, 0))
        return b"answer:" + path.encode()

    async def exchange(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send ``data``, half-close, read until the server closes or ``timeout``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()


@asynccontextmanager
async def running() -> AsyncIterator[Harness]:
    harness = Harness()
    harness.port = await harness.server.start("127.0.0.1", 0)
    try:
        yield harness
    finally:
        await harness.server.stop(1.0)


def responses(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split a stream of HTTP/1.1 responses (content-length framed) into (status, head, body)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (x.partition(b": ") for x in lines[1:])
                      if k.lower() == b"content-length")
        out.append((status, head, rest[:length]))
        raw = rest[length:]
    return out


async def test_a_bridged_check_is_answered_with_the_serialized_response() -> None:
    async with running() as h:
        raw = await h.exchange(post(check_body(), extra=b"traceparent: 00-" + b"a" * 32
                                    + b"-" + b"b" * 16 + b"-01\r\nconnection: close\r\n"))
        ((status, head, body),) = responses(raw)
        assert status == 200
        assert b"content-type: application/x-protobuf" in head
        assert body == b"answer:/rest/api/2/myself"
        assert h.calls == [("/rest/api/2/myself",
                            [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])]


async def test_pipelined_checks_are_answered_in_order_whatever_their_speed() -> None:
    async with running() as h:
        h.delays = {"/slow": 0.2, "/mid": 0.05}
        data = b"".join(post(check_body(p)) for p in ("/slow", "/mid", "/fast"))
        data += post(check_body("/last"), extra=b"connection: close\r\n")
        got = [body for _, _, body in responses(await h.exchange(data))]
        assert got == [b"answer:/slow", b"answer:/mid", b"answer:/fast", b"answer:/last"]


@pytest.mark.parametrize(("data", "status"), [
    (post(check_body(), method=b"GET"), 405),
    (post(check_body(), method=b"PUT"), 405),
    (post(check_body(), target=b"/envoy.service.auth.v3.Authorization/Check/"), 404),
    (post(check_body(), target=b"/envoy.service.auth.v3.Authorization/check"), 404),
    (post(check_body(), target=b"/grpc.health.v1.Health/Check"), 404),
    (post(check_body(), target=CHECK + b"?x=1"), 404),
    (post(check_body(), target=b"http://evil" + CHECK), 404),
    (post(check_body(), ctype=b"application/grpc"), 415),
    (post(check_body(), ctype=b"application/json"), 415),
    (post(check_body(), ctype=b""), 415),
    (post(check_body(), extra=b"content-type: application/x-protobuf\r\n"), 400),
    (b"POST " + CHECK + b" HTTP/1.1\r\ncontent-type: application/x-protobuf\r\n"
     b"content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST " + CHECK + b" HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST " + CHECK + b" HTTP/1.1\r\nbad header\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n", 400),
    (b"POST " + CHECK + b" HTTP/1.1\r\nx: " + b"a" * (check_http1.MAX_HEADER_BYTES + 1)
     + b"\r\n\r\n", 431),
    (b"POST /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", 414),
    (b"POST " + CHECK + b" HTTP/1.1\r\ncontent-type: application/x-protobuf\r\n"
     b"content-length: %d\r\n\r\n" % (check_http1.MAX_BODY_BYTES + 1), 413),
])
async def test_anything_but_a_bridged_check_is_refused_and_the_connection_closed(
        data: bytes, status: int) -> None:
    async with running() as h:
        raw = await h.exchange(data + post(check_body("/after")))
        got = responses(raw)
        assert [s for s, _, _ in got] == [status]
        assert b"connection: close" in got[0][1]
        assert h.calls == []  # neither the refused request nor anything after it was decided


async def test_checks_before_a_refused_request_are_still_answered_first() -> None:
    async with running() as h:
        h.delays = {"/first": 0.1}
        raw = await h.exchange(post(check_body("/first")) + b"GET /nope HTTP/1.1\r\n\r\n"
                               + post(check_body("/never")))
        assert [(s, b) for s, _, b in responses(raw)] == [(200, b"answer:/first"),
                                                           (404, b"not found")]
        assert [p for p, _ in h.calls] == ["/first"]


async def test_a_body_that_is_not_a_check_request_is_400_and_the_connection_stays() -> None:
    async with running() as h:
        raw = await h.exchange(post(b"\xff\xff\xff") + post(check_body("/next"),
                                                            extra=b"connection: close\r\n"))
        got = responses(raw)
        assert [s for s, _, _ in got] == [400, 200]
        assert [p for p, _ in h.calls] == ["/next"]


async def test_a_failing_decision_is_a_500_never_an_answer() -> None:
    async with running() as h:
        h.fail = True
        ((status, _, body),) = responses(await h.exchange(
            post(check_body(), extra=b"connection: close\r\n")))
        assert status == 500 and b"answer" not in body


async def test_health_follows_readiness() -> None:
    async with running() as h:
        req = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        assert responses(await h.exchange(req))[0][0] == 200
        h.ready = False
        assert responses(await h.exchange(req))[0][0] == 503


async def test_http_1_0_is_answered_then_closed() -> None:
    async with running() as h:
        raw = await h.exchange(post(check_body(), version=b"HTTP/1.0"), timeout=2)
        assert [s for s, _, _ in responses(raw)] == [200]


async def test_a_stalled_request_is_timed_out(monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    async with running() as h:
        monkeypatch.setattr(check_http1, "STALLED_SECONDS", 0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        writer.write(b"POST " + CHECK + b" HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert responses(raw)[0][0] == 408
        assert h.calls == []


async def test_stop_answers_in_flight_checks_then_closes() -> None:
    async with running() as h:
        h.delays = {"/slow": 0.3}
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        writer.write(post(check_body("/slow")))
        await writer.drain()
        while not h.calls:
            await asyncio.sleep(0.01)
        await h.server.stop(2.0)
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert [(s, b) for s, _, b in responses(raw)] == [(200, b"answer:/slow")]
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", h.port)


async def test_checks_decided_without_io_are_answered_at_once_and_still_in_order() -> None:
    async with running() as h:
        h.delays = {"/slow": 0.2}
        raw = await h.exchange(post(check_body("/now/1")) + post(check_body("/slow"))
                               + post(check_body("/now/2"), extra=b"connection: close\r\n"))
        assert [b for _, _, b in responses(raw)] == [b"now:/now/1", b"answer:/slow",
                                                      b"answer:/now/2"]
        # Behind a pending answer the synchronous path is not taken (order first).
        assert h.now_calls == ["/now/1"]
        assert [p for p, _ in h.calls] == ["/slow", "/now/2"]


async def test_a_chunked_check_as_envoys_bridge_sends_it_is_decided() -> None:
    """Envoy's HTTP/1.1 codec streams the bridged body chunked (no Content-Length)."""
    async with running() as h:
        body = check_body("/rest/chunked")
        half = len(body) // 2
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
        raw = await h.exchange(b"POST " + CHECK + b" HTTP/1.1\r\nhost: authz\r\n"
                               b"content-type: application/x-protobuf\r\n"
                               b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                               + chunked + b"0\r\n\r\n")
        assert [(s, b) for s, _, b in responses(raw)] == [(200, b"answer:/rest/chunked")]


async def test_draining_closes_connections_cleanly_and_fails_the_health_check() -> None:
    """SIGTERM: no new connections; a Check still arriving on an open one is answered with
    ``connection: close`` (Envoy's pool drops it without a reset) and health turns 503."""
    async with running() as h:
        h.delays = {"/slow": 0.3}
        r1, w1 = await asyncio.open_connection("127.0.0.1", h.port)  # busy during the stop
        r2, w2 = await asyncio.open_connection("127.0.0.1", h.port)  # idle during the stop
        w1.write(post(check_body("/slow")))
        await w1.drain()
        while not h.calls:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(h.server.stop(2.0))
        await asyncio.sleep(0.05)
        w2.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        await w2.drain()
        (health,) = responses(await asyncio.wait_for(r2.read(), 5))
        assert health[0] == 503 and b"connection: close" in health[1]
        (slow,) = responses(await asyncio.wait_for(r1.read(), 5))
        assert slow[2] == b"answer:/slow" and b"connection: close" in slow[1]
        await stopping
        for w in (w1, w2):
            w.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", h.port)


async def test_nothing_after_a_closing_request_is_decided() -> None:
    """``connection: close`` ends the connection: a Check pipelined behind it in the same
    read is neither answered nor decided (it would be audited without an answer)."""
    async with running() as h:
        raw = await h.exchange(post(check_body("/now/a"), extra=b"connection: close\r\n")
                               + post(check_body("/now/b")) + post(check_body("/later")))
        assert [b for _, _, b in responses(raw)] == [b"now:/now/a"]
        assert h.now_calls == ["/now/a"] and h.calls == []
