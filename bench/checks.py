"""CheckRequests as Envoy sends them, for calling the Check RPC directly (no Envoy)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from envoy.service.auth.v3 import external_auth_pb2

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def check_request(method: str, path: str, headers: Mapping[str, str],
                  host: str = "127.0.0.1:8000") -> external_auth_pb2.CheckRequest:
    """What Envoy 1.40 sends: lower-cased headers including pseudo-headers, full :path."""
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.source.address.socket_address.port_value = 40000
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 8000
    http = attrs.request.http
    http.id = "1234567890"
    http.method = method
    http.path = path
    http.host = host
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    hdrs = {":method": method, ":path": path, ":authority": host, ":scheme": "http",
            "x-request-id": "9b1f0c9e-0000-4000-8000-000000000000",
            "x-forwarded-proto": "http"}
    hdrs.update({k.lower(): v for k, v in headers.items()})
    for k, v in hdrs.items():
        http.headers[k] = v
    return req


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message (the request body h2load replays)."""
    return struct.pack(">BI", 0, len(message)) + message
