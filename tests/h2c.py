"""A prior-knowledge HTTP/2 cleartext (h2c) client on the ``h2`` protocol library.

Client libraries normalise what an attacker would not: this one sends the pseudo-headers and
headers exactly as given (a lower-case ``:method``, ``:scheme https`` on a cleartext
connection), so the tests see what Envoy does with them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events

from authz.stack import stub_jira

HOST = "127.0.0.1"


@dataclass
class H2Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def echo(self) -> dict[str, Any] | None:
        """What the stub Jira saw, when the request reached it."""
        if self.headers.get("x-stub-jira") != "1":
            return None
        return stub_jira.echo_of(self.headers, self.body)  # type: ignore[no-any-return]


def request(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    scheme: str = "http",
    authority: str | None = None,
    body: bytes | None = None,
    timeout: float = 10,
) -> H2Reply:
    """One request on a new h2c connection; pseudo-headers sent as given, not normalised."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False,
                                    validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", scheme),
                (":authority", authority or f"{HOST}:{port}"), (":path", path), *headers]
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        conn.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            view = memoryview(body)
            while view:
                # Respect the peer's flow-control window and frame size.
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    _pump(conn, s, sid, {}, bytearray())
                    continue
                chunk, view = view[:window], view[window:]
                conn.send_data(sid, bytes(chunk), end_stream=not view)
                s.sendall(conn.data_to_send())
        s.sendall(conn.data_to_send())
        resp_headers: dict[str, str] = {}
        data = bytearray()
        while not _pump(conn, s, sid, resp_headers, data):
            pass
    return H2Reply(int(resp_headers.get(":status", "0")), resp_headers, bytes(data))


def _pump(conn: h2.connection.H2Connection, s: socket.socket, sid: int,
          headers: dict[str, str], data: bytearray) -> bool:
    """Read once and handle the events; True when the stream ended."""
    raw = s.recv(65536)
    if not raw:
        raise ConnectionError("connection closed before the response ended")
    done = False
    for ev in conn.receive_data(raw):
        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
            headers.update({_s(k): _s(v) for k, v in ev.headers})
        elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
            data.extend(ev.data)
            conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset) and ev.stream_id == sid:
            done = True
            if isinstance(ev, h2.events.StreamReset):
                headers.setdefault(":status", "0")
    out = conn.data_to_send()
    if out:
        s.sendall(out)
    return done


def _s(v: str | bytes) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else v
