"""Matching a request against a token's compiled lines: the first line that allows it, or the
closest line's failing part as the reason."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from authz.domain.limits import engine
from authz.domain.limits.grammar import CompiledLine, Limit


class Match(NamedTuple):
    """Outcome of matching a request against a token's lines (a NamedTuple: one per Check)."""

    allowed: bool
    line: str = ""
    """The first matching line (allowed), or ''."""
    why: str = ""
    """Why nothing matched (denied): the closest line's failing part."""


def _query_values(query: str) -> dict[str, list[str]] | None:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


_ABSENT = object()
"""A JSON path that names no node of the body."""
_NOT_PARSED = object()
"""The query string has not been parsed yet (most lines have no QueryParam clause)."""


class _Miss(enum.IntEnum):
    """How close a line came to allowing the request: the closest line's reason is reported."""

    NOTHING = 0
    URL = 1
    """The URL regex does not match."""
    METHOD = 2
    """The URL matches, the method is not allowed."""
    CLAUSE = 3
    """URL and method match, a QueryParam/JsonData clause fails."""


def _json_node(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
    return node


def _json_text(node: Any) -> str:
    if isinstance(node, str):
        return node
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _clause_failure(
    clause: tuple[str, str, engine.Program], query: dict[str, list[str]] | None, body: Any
) -> str | None:
    kind, name, regex = clause
    if kind == "query":
        if query is None:
            return "query string is not valid UTF-8"
        values = query.get(name)
        if not values:
            return f"query parameter {name!r} is absent"
        for v in values:
            if not engine.fullmatch(regex, v):
                return f"query parameter {name!r} has a value that does not match"
        return None
    if isinstance(body, BodyProblem):
        return body.reason
    node = _json_node(body, name)
    if node is _ABSENT:
        return f"JSON node {name!r} is absent"
    if not engine.fullmatch(regex, _json_text(node)):
        return f"JSON node {name!r} does not match"
    return None


class BodyProblem(str):
    """Why the body cannot be judged: a JsonData clause then fails with this reason."""

    @property
    def reason(self) -> str:
        return str(self)


class _Ambiguous(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Ambiguous(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _Ambiguous(f"{name} is not JSON")


def _parse_body(body: bytes | None, truncated: bool) -> Any:
    """The JSON document Jira will read from exactly these bytes, or why there is none.

    Judged only when Jira can read the bytes one way: complete, UTF-8 (RFC 8259; Jackson
    would also read UTF-16/32 or skip a BOM, Python's decoder guesses differently), one value
    per key (Jackson keeps the last duplicate, another parser the first), no NaN/Infinity
    (Jackson refuses them, Python accepts them).
    """
    if body is None or not body:
        return BodyProblem("request body is absent (a JsonData line needs Envoy to send it)")
    if truncated:
        return BodyProblem("request body is larger than the part Envoy sends for the check")
    if body.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or (
        len(body) >= 2 and (body[0] == 0 or body[1] == 0)
    ):
        return BodyProblem("request body is not UTF-8 JSON (byte-order mark or UTF-16/32)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return BodyProblem("request body is not valid UTF-8")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Ambiguous as e:
        return BodyProblem(f"request body is ambiguous JSON ({e})")
    except (ValueError, RecursionError):
        return BodyProblem("request body is not JSON")


def match(
    limits: Iterable[Limit | CompiledLine],
    *,
    method: str,
    url: str,
    query: str,
    body: bytes | None = None,
    body_truncated: bool = False,
) -> Match:
    """First line that allows the request, or why none did. No lines: allowed."""
    limits = tuple(limits)
    if not limits:
        return Match(True)
    method = method.upper()
    parsed_query: dict[str, list[str]] | object | None = _NOT_PARSED
    parsed_body: Any = None
    body_parsed = False
    closest: tuple[_Miss, str] = (_Miss.NOTHING, "no limit line matches")
    url_matches = engine.matcher(url)
    for line, methods, regex, clauses in limits:
        url_ok = url_matches(regex)
        if methods is not None and method not in methods:
            if url_ok:
                closest = max(closest,
                              (_Miss.METHOD, f"method {method} is not allowed by {line!r}"))
            continue
        if not url_ok:
            closest = max(closest, (_Miss.URL, "URL matches no limit line"))
            continue
        failure = None
        for clause in clauses:
            kind = clause[0]
            if kind == "query" and parsed_query is _NOT_PARSED:
                parsed_query = _query_values(query)
            if kind == "json" and not body_parsed:
                parsed_body, body_parsed = _parse_body(body, body_truncated), True
            failure = _clause_failure(clause, parsed_query, parsed_body)  # type: ignore[arg-type]
            if failure:
                break
        if failure:
            closest = max(closest, (_Miss.CLAUSE, f"{failure} ({line!r})"))
            continue
        return Match(True, line)
    return Match(False, why=closest[1])
