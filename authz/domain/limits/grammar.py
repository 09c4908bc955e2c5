"""The grammar of restriction lines:
``[method]URL-REGEX[QueryParam::name==REGEX][JsonData::path==REGEX]``.

``parse_line`` reads one line into a ``Limit`` (its regexes compiled by ``engine``), so a line
RE2 cannot run is refused when the token is created or edited, never at request time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import re2

from authz.domain.limits import engine
from authz.domain.limits.engine import Program

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
MAX_LINE_LENGTH = 4096
MAX_LINES = 200
_QUERY = "[QueryParam::"
_JSON = "[JsonData::"
_MARKERS = (_QUERY, _JSON)

class LimitSyntaxError(ValueError):
    """A line is refused; ``reason`` says why (the caller adds the line number)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidLimits(ValueError):
    """One or more lines of a set are refused: ``errors`` is ``[(line_number, reason)]``."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"line {n}: {r}" for n, r in errors))


class Clause(NamedTuple):
    kind: str
    """``query`` or ``json``."""
    name: str
    regex: Program


class Limit(NamedTuple):
    """One parsed line: what ``parse_line`` returns. Its method list and RE2 programs are not
    objects the garbage collector tracks; see ``CompiledLine`` for the cached form."""

    line: str
    methods: tuple[str, ...] | None
    """None: any method."""
    url: Program
    clauses: tuple[Clause, ...]

    @property
    def needs_body(self) -> bool:
        return any(c.kind == "json" for c in self.clauses)


CompiledLine = tuple[str, tuple[str, ...] | None, Program, tuple[tuple[str, str, Program], ...]]
"""A ``Limit`` as plain tuples (line, methods, url, clauses as (kind, name, regex)): what
``compile_limits`` caches. A replica keeps tens of thousands of lines; the collector walks
every object it tracks on each full collection (~0.6 µs each here, stalling every Check behind
it), and it stops tracking plain tuples of untracked values, but never NamedTuples or
dataclass instances. ``match`` takes either form."""


def _compile(pattern: str, what: str) -> Program:
    if not pattern:
        raise LimitSyntaxError(f"{what} is empty")
    try:
        return engine.compile_program(pattern)
    except engine.RegexError as e:
        raise LimitSyntaxError(f"{what} {pattern!r} is not a valid RE2 regex: {e}") from None


def _split_method(line: str) -> tuple[tuple[str, ...] | None, str]:
    if not line.startswith("[") or line.startswith(_MARKERS):
        return None, line
    close = line.find("]")
    inner = line[1:close] if close > 0 else ""
    words = [w.strip() for w in inner.split(",")]
    if close < 0 or not all(w.isalpha() and w.isascii() for w in words):
        return None, line  # a character class such as [0-9] starting the regex
    methods = {w.upper() for w in words}
    unknown = sorted(methods - METHODS)
    if unknown:
        # A letters-only bracket is read as a method list: a typo such as [gte] must not
        # silently become a character class that matches nothing.
        raise LimitSyntaxError(
            f"unknown HTTP method {unknown[0]!r} in [{inner}]"
            f" (known: {', '.join(sorted(METHODS))}; write a leading letter class as (h|H))"
        )
    return tuple(sorted(methods)), line[close + 1 :]


# A bracket that looks like a clause ([Name::…) but is not one of ours: RE2 would read it as a
# character class ([Foo::a==b] matches one of F, o, :, a, =, b) and the line would silently
# match almost nothing.
_CLAUSE_LIKE = re2.compile(r"\[([A-Za-z][A-Za-z0-9_]*)::")


def _refuse_unknown_clause(url_part: str) -> None:
    m = _CLAUSE_LIKE.search(url_part)
    if m is None:
        return
    name = m.group(1)
    hint = next((k for k in ("QueryParam", "JsonData") if k.lower() == name.lower()), None)
    known = f"did you mean [{hint}::…]?" if hint else "known clauses: [QueryParam::…], " \
        "[JsonData::…]"
    raise LimitSyntaxError(f"unknown clause [{name}::…] ({known})")


def _find_marker(text: str, start: int = 0) -> int:
    hits = [i for i in (text.find(m, start) for m in _MARKERS) if i >= 0]
    return min(hits) if hits else -1


def _parse_clauses(text: str) -> tuple[Clause, ...]:
    clauses: list[Clause] = []
    i = 0
    while i < len(text):
        marker = next((m for m in _MARKERS if text.startswith(m, i)), None)
        if marker is None:
            raise LimitSyntaxError(f"unexpected text {text[i:]!r} after a clause")
        body_start = i + len(marker)
        eq = text.find("==", body_start)
        if eq < 0:
            raise LimitSyntaxError(f"{marker}…] lacks '==' between name and regex")
        name = text[body_start:eq]
        if not name or "]" in name or name != name.strip():
            raise LimitSyntaxError(f"{marker}…] has an empty or malformed name {name!r}")
        # The regex ends at the first ']' followed by the end of the line or another clause.
        end = -1
        j = eq + 2
        while True:
            k = text.find("]", j)
            if k < 0:
                break
            rest = text[k + 1 :]
            if not rest or rest.startswith(_MARKERS):
                end = k
                break
            j = k + 1
        if end < 0:
            raise LimitSyntaxError(f"{marker}{name}==…] is not closed by ']'")
        kind = "query" if marker == _QUERY else "json"
        if kind == "json" and any(not part for part in name.split(".")):
            raise LimitSyntaxError(f"JSON path {name!r} has an empty segment")
        what = f"{'QueryParam' if kind == 'query' else 'JsonData'} {name!r} regex"
        clauses.append(Clause(kind, name, _compile(text[eq + 2 : end], what)))
        i = end + 1
    return tuple(clauses)


def split_parts(text: str) -> tuple[tuple[str, ...] | None, str, str]:
    """A stripped line's methods (None: any), URL regex text and clause text, uncompiled."""
    methods, rest = _split_method(text)
    cut = _find_marker(rest)
    return (methods, rest, "") if cut < 0 else (methods, rest[:cut], rest[cut:])


def parse_line(line: str) -> Limit:
    """One restriction line, compiled; raises LimitSyntaxError with the reason."""
    if len(line) > MAX_LINE_LENGTH:
        raise LimitSyntaxError(f"line is longer than {MAX_LINE_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        raise LimitSyntaxError("line contains control characters")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise LimitSyntaxError("line is not valid Unicode text") from None
    text = line.strip()
    if not text:
        raise LimitSyntaxError("line is empty")
    methods, url_part, clause_part = split_parts(text)
    if not url_part:
        raise LimitSyntaxError("URL regex is missing")
    _refuse_unknown_clause(url_part)
    url = _compile(url_part, "URL regex")
    return Limit(text, methods, url, _parse_clauses(clause_part))


def split_lines(text: str) -> list[str]:
    """Lines of a multi-line limits text (``\\n`` or Extender's ``<br>``), blanks dropped."""
    text = text.replace("\r\n", "\n").replace("<br/>", "\n").replace("<br>", "\n")
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def validate(lines: Sequence[str]) -> tuple[str, ...]:
    """The lines, normalised (stripped), or InvalidLimits naming each bad line (1-based)."""
    if len(lines) > MAX_LINES:
        raise InvalidLimits([(MAX_LINES + 1, f"more than {MAX_LINES} lines")])
    errors: list[tuple[int, str]] = []
    out: list[str] = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(parse_line(line).line)
        except LimitSyntaxError as e:
            errors.append((n, e.reason))
    if errors:
        raise InvalidLimits(errors)
    return tuple(out)
