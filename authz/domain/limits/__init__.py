"""Restriction lines (Extender's "limits"), docs/product.md §3.

A line is ``[method]URL-REGEX[QueryParam::name==REGEX][JsonData::path==REGEX]``. A token without
lines may call every supported endpoint; with lines, a request is allowed when one line matches.

One job per module: ``grammar`` (parsing, validation), ``engine`` (RE2: the only module that
touches its internals), ``cache`` (the compiled-line cache the server owns and passes in),
``matching`` (a request against compiled lines), ``lint`` (lines that parse but mislead).
Callers use the names re-exported here.
"""

from __future__ import annotations

from authz.domain.limits.cache import DEFAULT_COMPILED_LIMITS, CompiledLimits, compile_limits
from authz.domain.limits.engine import fullmatch
from authz.domain.limits.grammar import (
    MAX_LINE_LENGTH,
    MAX_LINES,
    METHODS,
    Clause,
    CompiledLine,
    InvalidLimits,
    Limit,
    LimitSyntaxError,
    parse_line,
    split_lines,
    validate,
)
from authz.domain.limits.lint import lint, lint_line
from authz.domain.limits.matching import BodyProblem, Match, match

__all__ = [
    "DEFAULT_COMPILED_LIMITS", "MAX_LINES", "MAX_LINE_LENGTH", "METHODS", "BodyProblem",
    "Clause", "CompiledLimits", "CompiledLine", "InvalidLimits", "Limit", "LimitSyntaxError",
    "Match", "compile_limits", "fullmatch", "lint", "lint_line", "match", "parse_line",
    "split_lines", "validate",
]
