"""Envoy ``CheckRequest`` → ``HttpRequest``: the only place that reads Envoy's request types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from envoy.service.auth.v3 import external_auth_pb2

from authz.domain.decide import METHOD_OVERRIDE_HEADERS
from authz.domain.model import NO_CONTEXT, HttpRequest
from authz.domain.paths import split_path

HEADERS_READ = (
    "authorization", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "user-agent",
    "content-type", "content-length", "x-envoy-auth-partial-body", *METHOD_OVERRIDE_HEADERS,
)
"""Every request header the decision and the audit event read, besides the configured
identity header: the shipped Envoy configs send exactly these to the Check
(``allowed_headers``), so the CheckRequest stays small. A rule that reads another header adds it
here (tests/unit/test_envoy_config.py compares the configs with this list)."""


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
            return cast(Mapping[str, str], headers)  # protobuf's map: untyped
        return {k.lower(): v for k, v in headers.items()}
    # encode_raw_headers: one entry per occurrence, bytes; join repeats like Envoy does.
    out: dict[str, str] = {}
    for h in http.header_map.headers:
        key = h.key.lower()
        val = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[key] = f"{out[key]},{val}" if key in out else val
    return out


def _scheme(http: external_auth_pb2.AttributeContext.HttpRequest,
            headers: Mapping[str, str]) -> str:
    """The scheme of the connection, as Envoy knows it, never the client's ``:scheme``.

    An HTTP/2 client chooses ``:scheme`` freely (``https`` on a cleartext connection). With
    ``use_remote_address: true`` Envoy overwrites ``x-forwarded-proto`` with its downstream
    connection's scheme, or keeps the one a trusted proxy (xff_num_trusted_hops) set — where
    TLS was really terminated. Only a direct Check without the header falls back to the
    request's scheme; anything that is not exactly http or https is refused later.
    """
    forwarded = headers.get("x-forwarded-proto")
    if forwarded is not None:
        return forwarded.strip()
    return http.scheme or headers.get(":scheme", "")


def _body(http: external_auth_pb2.AttributeContext.HttpRequest,
          headers: Mapping[str, str]) -> tuple[bytes | None, bool]:
    """The exact body bytes and whether they are only part of the body.

    Only ``raw_body`` (``pack_as_bytes: true``) is the body Jira receives: the UTF-8 ``body``
    field has invalid bytes replaced by Envoy, so a body judged from it is another body than
    the one forwarded — it is ignored (a JsonData line then finds no body). Partial: Envoy's
    flag, or fewer bytes than the Content-Length announced (independent of the flag).
    """
    raw = http.raw_body
    if not raw:
        return None, False
    partial = headers.get("x-envoy-auth-partial-body") == "true"
    length = headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) != len(raw):
        partial = True
    return raw, partial


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
    body, partial = _body(http, headers)
    return HttpRequest(
        # As sent: a non-canonical method (``post`` over HTTP/2) is refused, never upper-cased
        # into one a limit line allows while Jira receives the original.
        method=http.method or headers.get(":method", ""),
        scheme=_scheme(http, headers),
        host=http.host or headers.get(":authority", ""),
        path=path,
        query=query,
        headers=headers,
        source_ip=attrs.source.address.socket_address.address,
        body=body,
        body_truncated=partial,
        request_id=headers.get("x-request-id", ""),
        trace_id=trace_id_from_metadata(metadata),
        context=attrs.context_extensions or NO_CONTEXT,
    )
