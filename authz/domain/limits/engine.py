"""The regex engine of restriction lines: RE2, and the only module that touches its internals.

Every line regex is compiled with RE2 (linear time, the semantics of Envoy's ``safe_regex``)
into a *program*: the object ``matcher`` runs. google-re2's public ``fullmatch`` wraps every
call in a Python generator that re-encodes the text and builds a match object with offset maps:
most of a line's cost. So when the private API behaves as probed, a program is the wrapper's
private ``_regexp`` and matching asks RE2 directly (whole text, anchored both ends); otherwise
it is the public compiled regex and the public API answers (same answers, slower).

Sharing programs between identical lines (interning) belongs here too: ``compile_program``
is the one place a program is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2

from authz.domain.limits.programs import PROGRAMS

Program = Any
"""A compiled line regex (no public type): what ``matcher`` runs."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 1 << 20


class RegexError(ValueError):
    """RE2 refuses the pattern; the message says why."""


def _direct_fullmatch() -> Callable[[Program, bytes], bool] | None:
    """``program, utf8_bytes -> bool`` straight on RE2's matcher, or None if unavailable.

    It relies on private names, so it proves itself on a probe first and is not used if
    anything differs.
    """
    try:
        anchor, null = re2._Anchor.ANCHOR_BOTH, (-1, -1)

        def full(program: Program, text: bytes) -> bool:
            return bool(program.Match(anchor, text, 0, len(text))[0] != null)

        probe = re2.compile(r"[a-zé]+/\d", options=_OPTIONS)
        checks = {"ab/1": True, "é/2": True, "ab/1x": False, "1ab/1": False, "": False}
        ok = all(full(probe._regexp, t.encode()) is want
                 and (probe.fullmatch(t) is not None) is want for t, want in checks.items())
    except Exception:  # any difference in the private API: use the public one
        ok = False
    return full if ok else None


_FULL = _direct_fullmatch()
DIRECT = _FULL is not None
"""Whether programs run on RE2 directly (the fast path) rather than through the public API."""


def compile_program(pattern: str) -> Program:
    """The program for ``pattern``, shared by every line with the same pattern text (programs
    cost kilobytes each); RegexError with RE2's reason when it cannot run it."""
    return PROGRAMS.get(pattern, _compile_program)


def _compile_program(pattern: str) -> Program:
    try:
        compiled = re2.compile(pattern, options=_OPTIONS)
    except re2.error as e:
        msg = e.args[0].decode("utf-8", "replace") if e.args and isinstance(
            e.args[0], bytes) else str(e)
        raise RegexError(msg) from None
    return compiled._regexp if _FULL is not None else compiled


NEVER = compile_program(r"[^\s\S]")
"""A program that matches nothing (what a stored line that no longer parses becomes)."""


def _never(_program: Program) -> bool:
    return False


def matcher(text: str) -> Callable[[Program], bool]:
    """``program -> bool``: whether a program matches all of ``text``, which is encoded once
    for every program it is matched against (a URL against every line of a token). Text that
    is not valid Unicode (a lone surrogate from a JSON escape) matches nothing: it can only
    narrow access."""
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return _never
    full = _FULL
    if full is None:
        return lambda program: program.fullmatch(text) is not None
    return lambda program: full(program, encoded)


def fullmatch(program: Program, text: str) -> bool:
    """Whether one program matches all of ``text`` (``matcher`` for a single program)."""
    return matcher(text)(program)


def possible_match_range(pattern: str, max_len: int = 16) -> tuple[bytes, bytes] | None:
    """Bounds every string ``pattern`` can match lies between (RE2's PossibleMatchRange), or
    None when RE2 cannot bound it (lint uses it to find lines that can never match a URL)."""
    try:
        ok, low, high = re2.compile(pattern, options=_OPTIONS)._regexp.PossibleMatchRange(
            max_len)
    except (re2.error, AttributeError):
        return None
    return (low, high) if ok else None
