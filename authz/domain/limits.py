"""Restriction lines (Extender's "limits"): grammar, compilation with RE2, matching.

A line is ``[method]URL-REGEX[QueryParam::name==REGEX][JsonData::path==REGEX]``. A token without
lines may call every supported endpoint; with lines, a request is allowed when one line matches.
Every regex is compiled with RE2 (linear time, the semantics of Envoy's ``safe_regex``), so a
line that RE2 cannot run is refused when the token is created or edited, never at request time.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import re2

from authz.domain.re2_programs import PROGRAMS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
MAX_LINE_LENGTH = 4096
MAX_LINES = 200
_QUERY = "[QueryParam::"
_JSON = "[JsonData::"
_MARKERS = (_QUERY, _JSON)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 1 << 20


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
    regex: Any
    """A compiled regex for ``fullmatch`` (no public type)."""


class Limit(NamedTuple):
    """One parsed line: what ``parse_line`` returns. Its method list and RE2 programs are not
    objects the garbage collector tracks; see ``CompiledLine`` for the cached form."""

    line: str
    methods: tuple[str, ...] | None
    """None: any method."""
    url: Any
    """A compiled regex for ``fullmatch`` (no public type)."""
    clauses: tuple[Clause, ...]

    @property
    def needs_body(self) -> bool:
        return any(c.kind == "json" for c in self.clauses)


CompiledLine = tuple[str, tuple[str, ...] | None, Any, tuple[tuple[str, str, Any], ...]]
"""A ``Limit`` as plain tuples (line, methods, url, clauses as (kind, name, regex)): what
``compile_limits`` caches. A replica keeps tens of thousands of lines; the collector walks
every object it tracks on each full collection (~0.6 µs each here, stalling every Check behind
it), and it stops tracking plain tuples of untracked values, but never NamedTuples or
dataclass instances. ``match`` takes either form."""


def _direct_fullmatch() -> Any:
    """``program, utf8_bytes -> bool`` straight on RE2's matcher, or None if unavailable.

    google-re2's ``fullmatch`` wraps every call in a Python generator that re-encodes the text
    and builds a match object with offset maps: most of a limit line's cost. This asks RE2 the
    same question (whole text, anchored both ends) and reads only the overall span, on the
    wrapper's private program object (``_regexp``), which is also what compiled lines keep. It
    relies on private names, so it proves itself on a probe first and is not used if anything
    differs (the public API is the fallback, same answers).
    """
    try:
        anchor, null = re2._Anchor.ANCHOR_BOTH, (-1, -1)

        def full(program: Any, text: bytes) -> bool:
            return bool(program.Match(anchor, text, 0, len(text))[0] != null)

        probe = re2.compile(r"[a-zé]+/\d", options=_RE2_OPTIONS)
        checks = {"ab/1": True, "é/2": True, "ab/1x": False, "1ab/1": False, "": False}
        ok = all(full(probe._regexp, t.encode()) is want
                 and (probe.fullmatch(t) is not None) is want for t, want in checks.items())
    except Exception:  # any difference in the private API: use the public one
        ok = False
    return full if ok else None


_FULL = _direct_fullmatch()


def fullmatch(regex: Any, text: str) -> bool:
    """Whether a compiled line regex matches all of ``text``. Text that is not valid Unicode
    (a lone surrogate from a JSON escape) matches nothing: it can only narrow access."""
    try:
        if _FULL is not None:
            return bool(_FULL(regex, text.encode("utf-8")))
        return regex.fullmatch(text) is not None
    except UnicodeEncodeError:
        return False


def _compile_re2(pattern: str) -> Any:
    compiled = re2.compile(pattern, options=_RE2_OPTIONS)
    return compiled._regexp if _FULL is not None else compiled


def _compile(pattern: str, what: str) -> Any:
    if not pattern:
        raise LimitSyntaxError(f"{what} is empty")
    try:
        compiled = PROGRAMS.get(pattern, _compile_re2)
    except re2.error as e:
        msg = e.args[0].decode("utf-8", "replace") if e.args and isinstance(
            e.args[0], bytes) else str(e)
        raise LimitSyntaxError(f"{what} {pattern!r} is not a valid RE2 regex: {msg}") from None
    return compiled


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
    methods, rest = _split_method(text)
    cut = _find_marker(rest)
    url_part, clause_part = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
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


# --- lint: lines that parse but do not mean what they look like --------------------------------

# Every URL a line is matched against starts with one of these (``scheme://host/path``).
_URL_LOW, _URL_HIGH = b"http://", b"https://\xff"
_WIDENING_END = ("[", "]", "}", ")", "+", "-", "_")


def _never_matches_a_url(url_regex: str) -> bool:
    """True when no ``http(s)://…`` string can match: RE2 bounds every possible match from
    below and above, so a line starting with '/' (or 'a') is caught without guessing."""
    try:
        ok, low, high = re2.compile(url_regex, options=_RE2_OPTIONS)._regexp.PossibleMatchRange(
            16)
    except (re2.error, AttributeError):
        return False
    return bool(ok) and (high < _URL_LOW or low > _URL_HIGH)


def _widening_tail(url_regex: str) -> str | None:
    """The identifier a trailing ``.*`` extends (``…/ALLOWED-1.*`` also allows ALLOWED-10),
    or None when the line ends at a separator such as ``/.*``."""
    for tail in (".*", ".+"):
        if url_regex.endswith(tail) and not url_regex.endswith("\\" + tail):
            before = url_regex[: -len(tail)]
            if not before:
                return None
            last = before[-1]
            if last.isalnum() or last in _WIDENING_END:
                return before.rsplit("/", 1)[-1] or before
    return None


def lint_line(line: str) -> list[str]:
    """Warnings for one line that parses (none for a line that does not: parse_line says why)."""
    try:
        parse_line(line)
    except LimitSyntaxError:
        return []
    _, rest = _split_method(line.strip())
    cut = _find_marker(rest)
    url_part = rest if cut < 0 else rest[:cut]
    out: list[str] = []
    if _never_matches_a_url(url_part):
        out.append(f"{url_part!r} can never match: the URL regex must match the whole "
                   "scheme://host/path (start it with '.*', e.g. '.*/rest/…')")
    tail = None if out else _widening_tail(url_part)  # a line that never matches: enough said
    if tail is not None:
        out.append(f"'{tail}.*' also allows longer names such as '{tail}0' and '{tail}x'; "
                   f"end with '{tail}(/.*)?' to allow only '{tail}' and what is below it")
    return out


def lint(lines: Sequence[str]) -> list[str]:
    """``line N: warning`` for every line that parses but never matches or matches more than
    it seems to (SPEC §4): shown wherever lines are written, never a refusal on its own."""
    return [f"line {n}: {w}" for n, line in enumerate(lines, 1) for w in lint_line(line)]


_NEVER = _compile(r"[^\s\S]", "URL regex")


def _url_matcher(url: str) -> Any:
    """``regex -> bool`` for this URL, encoding it once for every line of the token; a URL that
    is not valid Unicode matches nothing, as in ``fullmatch``."""
    if _FULL is None:
        return lambda regex: fullmatch(regex, url)
    try:
        encoded, full = url.encode("utf-8"), _FULL
    except UnicodeEncodeError:
        return lambda regex: False
    return lambda regex: full(regex, encoded)


DEFAULT_COMPILED_LIMITS = 16_384


class _CompiledLimits:
    """LRU of compiled line sets by content, sized by ``cache.max_compiled_limits``.

    Compiled RE2 programs cost several KB per line (far more than the cached token record),
    so their number is bounded on its own; an evicted set is recompiled on next use.
    """

    def __init__(self, capacity: int = DEFAULT_COMPILED_LIMITS) -> None:
        self.capacity = capacity
        self._sets: OrderedDict[tuple[str, ...], tuple[CompiledLine, ...]] = OrderedDict()
        self.compiled = 0
        """Line sets compiled so far (misses)."""

    def __len__(self) -> int:
        return len(self._sets)

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._trim()

    def get(self, lines: tuple[str, ...]) -> tuple[CompiledLine, ...]:
        got = self._sets.get(lines)
        if got is not None:
            self._sets.move_to_end(lines)
            return got
        got = self._sets[lines] = _compile_set(lines)
        self.compiled += 1
        self._trim()
        return got

    def _trim(self) -> None:
        while len(self._sets) > self.capacity:
            self._sets.popitem(last=False)


COMPILED = _CompiledLimits()


def compile_limits(lines: tuple[str, ...]) -> tuple[CompiledLine, ...]:
    """Compiled lines, cached by content (``COMPILED``)."""
    return COMPILED.get(lines)


def _compile_set(lines: tuple[str, ...]) -> tuple[CompiledLine, ...]:
    """Lines were validated when stored; one that no longer parses (a corrupt record) becomes
    a line that matches nothing, so it can only narrow access — dropping it could leave a
    token with no lines, i.e. unrestricted."""
    out: list[CompiledLine] = []
    for line in lines:
        try:
            lim = parse_line(line)
        except LimitSyntaxError:
            lim = Limit(line, (), _NEVER, ())
        out.append((lim.line, lim.methods, lim.url, tuple(tuple(c) for c in lim.clauses)))
    return tuple(out)


# --- matching ---------------------------------------------------------------------------------


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


_NO_BODY = object()


def _json_node(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _NO_BODY
    return node


def _json_text(node: Any) -> str:
    if isinstance(node, str):
        return node
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _clause_failure(
    clause: tuple[str, str, Any], query: dict[str, list[str]] | None, body: Any
) -> str | None:
    kind, name, regex = clause
    if kind == "query":
        if query is None:
            return "query string is not valid UTF-8"
        values = query.get(name)
        if not values:
            return f"query parameter {name!r} is absent"
        for v in values:
            if not fullmatch(regex, v):
                return f"query parameter {name!r} has a value that does not match"
        return None
    if isinstance(body, BodyProblem):
        return body.reason
    node = _json_node(body, name)
    if node is _NO_BODY:
        return f"JSON node {name!r} is absent"
    if not fullmatch(regex, _json_text(node)):
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
    parsed_query: dict[str, list[str]] | object | None = _NO_BODY
    parsed_body: Any = None
    body_parsed = False
    closest: tuple[int, str] = (0, "no limit line matches")
    url_matches = _url_matcher(url)
    for line, methods, regex, clauses in limits:
        url_ok = url_matches(regex)
        if methods is not None and method not in methods:
            if url_ok:
                closest = max(closest, (2, f"method {method} is not allowed by {line!r}"))
            continue
        if not url_ok:
            closest = max(closest, (1, "URL matches no limit line"))
            continue
        failure = None
        for clause in clauses:
            kind = clause[0]
            if kind == "query" and parsed_query is _NO_BODY:
                parsed_query = _query_values(query)
            if kind == "json" and not body_parsed:
                parsed_body, body_parsed = _parse_body(body, body_truncated), True
            failure = _clause_failure(clause, parsed_query, parsed_body)  # type: ignore[arg-type]
            if failure:
                break
        if failure:
            closest = max(closest, (3, f"{failure} ({line!r})"))
            continue
        return Match(True, line)
    return Match(False, why=closest[1])
