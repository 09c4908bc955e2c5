"""Envoy ``CheckRequest`` → ``HttpRequest``: the only place that reads Envoy's request types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.service.auth.v3 import external_auth_pb2

from authz.domain.model import NO_CONTEXT, HttpRequest
from authz.domain.paths import split_path


def trace_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """W3C ``traceparent`` (or B3) trace id that Envoy puts in the Check call's gRPC metadata."""
    if not metadata:
        return ""
    for key, value in metadata:
        if isinstance(value, bytes):
            continue
        if key == "traceparent":
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32:
                return parts[1]
        elif key == "x-b3-traceid":
            return value
    return ""


def _headers(http: external_auth_pb2.AttributeContext.HttpRequest) -> Mapping[str, str]:
    headers = http.headers
    if headers:
        # Envoy sends lower-cased names: the request's own map is then used as it is (a copy
        # costs more than the rest of the translation); anything else is lower-cased here.
        names = "".join(headers)
        if names == names.lower():
            return headers
        return {k.lower(): v for k, v in headers.items()}
    # encode_raw_headers: one entry per occurrence, bytes; join repeats like Envoy does.
    out: dict[str, str] = {}
    for h in http.header_map.headers:
        key = h.key.lower()
        val = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[key] = f"{out[key]},{val}" if key in out else val
    return out


def to_http_request(
    check: external_auth_pb2.CheckRequest,
    metadata: Iterable[tuple[str, str | bytes]] | None = None,
) -> HttpRequest:
    attrs = check.attributes
    http = attrs.request.http
    headers = _headers(http)
    path, query = split_path(http.path or headers.get(":path", ""))
    if not query and http.query:
        query = http.query
    body: bytes | None = None
    if http.raw_body:
        body = http.raw_body
    elif http.body:
        body = http.body.encode("utf-8", "surrogateescape")
    return HttpRequest(
        method=(http.method or headers.get(":method", "")).upper(),
        scheme=http.scheme or headers.get(":scheme", "http"),
        host=http.host or headers.get(":authority", ""),
        path=path,
        query=query,
        headers=headers,
        source_ip=attrs.source.address.socket_address.address,
        body=body,
        body_truncated=headers.get("x-envoy-auth-partial-body") == "true",
        request_id=headers.get("x-request-id", ""),
        trace_id=trace_id_from_metadata(metadata),
        context=attrs.context_extensions or NO_CONTEXT,
    )
