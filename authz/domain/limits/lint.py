"""Lint of restriction lines: lines that parse but do not mean what they look like.

Shown wherever lines are written (CLI, admin API, console), never a refusal on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from authz.domain.limits import engine
from authz.domain.limits.grammar import LimitSyntaxError, parse_line, split_parts

# Every URL a line is matched against starts with one of these (``scheme://host/path``).
_URL_LOW, _URL_HIGH = b"http://", b"https://\xff"
_WIDENING_END = ("[", "]", "}", ")", "+", "-", "_")


def _never_matches_a_url(url_regex: str) -> bool:
    """True when no ``http(s)://…`` string can match: RE2 bounds every possible match from
    below and above, so a line starting with '/' (or 'a') is caught without guessing."""
    bounds = engine.possible_match_range(url_regex)
    if bounds is None:
        return False
    low, high = bounds
    return high < _URL_LOW or low > _URL_HIGH


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
    _, url_part, _ = split_parts(line.strip())
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
    it seems to (product.md §4): shown wherever lines are written, never a refusal on its own."""
    return [f"line {n}: {w}" for n, line in enumerate(lines, 1) for w in lint_line(line)]
