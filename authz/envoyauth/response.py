"""``Decision`` → Envoy ``CheckResponse``: what reaches Jira, and what reaches the client."""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from authz.domain.model import Decision, Outcome

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Exactly what Jira sends: atlassian-python-api reads a 401 body only with this value.
_JSON = "application/json;charset=UTF-8"
_ERROR_TEXT = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    503: "unavailable",
}


def deny_body(status: int, message: str) -> str:
    """Jira's own error shape (``errorMessages``, ``errors``), which client libraries such as
    ``jira`` and ``atlassian-python-api`` read and show, plus our ``error`` and ``reason``."""
    return json.dumps(
        {"errorMessages": [message], "errors": {}, "error": _ERROR_TEXT.get(status, "denied"),
         "reason": message},
        separators=(",", ":"),
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    # append_action set explicitly: an unset action means *append* in newer Envoy.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


CACHED_RESPONSES = 4096
"""Distinct responses kept built (one per effective user, one per deny message)."""


class ResponseBuilder:
    """Holds the response settings; builds one CheckResponse per decision.

    A response depends only on the settings and on (outcome, effective user) or (status,
    message), so built messages are kept and reused: building one costs more than the rest of
    a cached decision's translation. Callers must not mutate what ``build`` returns.
    """

    def __init__(
        self, identity_header: str, realm: str, upstream_authorization: str | None = None
    ) -> None:
        self.identity_header = identity_header.lower()
        self.realm = realm
        self.upstream_authorization = upstream_authorization
        self._built: dict[tuple[object, ...], external_auth_pb2.CheckResponse] = {}
        self._serialized: dict[tuple[object, ...], bytes] = {}

    @staticmethod
    def _key(decision: Decision) -> tuple[object, ...]:
        outcome = decision.outcome
        if outcome is Outcome.ALLOW:
            return (outcome, decision.effective_user)
        if outcome is Outcome.PASS:
            return (outcome,)
        return (outcome, decision.status, decision.reason, decision.message)

    def serialized(self, decision: Decision) -> bytes:
        """``build``'s answer as bytes, kept too: the HTTP/1.1 port sends them as they are."""
        key = self._key(decision)
        out = self._serialized.get(key)
        if out is None:
            if len(self._serialized) >= CACHED_RESPONSES:
                self._serialized.clear()
            out = self._serialized[key] = self.build(decision).SerializeToString()
        return out

    def build(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        key = self._key(decision)
        response = self._built.get(key)
        if response is None:
            if len(self._built) >= CACHED_RESPONSES:
                self._built.clear()  # bounded; distinct users or messages beyond it rebuild
            response = self._built[key] = self._build(decision)
        return response

    def _build(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        if decision.outcome is Outcome.ALLOW:
            return self._allow(decision.effective_user)
        if decision.outcome is Outcome.PASS:
            # Not a token call: forwarded untouched, except that a client-sent identity
            # header is never trusted.
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers_to_remove=[self.identity_header]
                ),
            )
        return self._deny(decision)

    def _allow(self, user: str) -> external_auth_pb2.CheckResponse:
        headers = [_header(self.identity_header, user)]
        remove: list[str] = []
        if self.upstream_authorization:
            headers.append(_header("authorization", self.upstream_authorization))
        else:
            remove.append("authorization")
        # Never list the identity header in headers_to_remove: it is applied after `headers`.
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(headers=headers, headers_to_remove=remove),
        )

    def _deny(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        status = decision.status
        body = deny_body(status, decision.message or decision.reason.value)
        headers = [_header("content-type", _JSON), _header("cache-control", "no-store")]
        if status == 401:
            headers.append(_header("www-authenticate", f'Basic realm="{self.realm}"'))
        grpc_code = {
            401: code_pb2.UNAUTHENTICATED,
            503: code_pb2.UNAVAILABLE,
            400: code_pb2.INVALID_ARGUMENT,
        }.get(status, code_pb2.PERMISSION_DENIED)
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=grpc_code),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=status),
                headers=headers,
                body=body,
            ),
        )
