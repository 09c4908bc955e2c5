"""The compiled-line cache: an instance the server owns (sized by
``cache.max_compiled_limits``) and passes to the decision; no module-level state."""

from __future__ import annotations

from collections import OrderedDict

from authz.domain.limits import engine
from authz.domain.limits.grammar import CompiledLine, Limit, LimitSyntaxError, parse_line

DEFAULT_COMPILED_LIMITS = 16_384


class CompiledLimits:
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


def compile_limits(
    lines: tuple[str, ...], cache: CompiledLimits | None = None
) -> tuple[CompiledLine, ...]:
    """Compiled lines: from ``cache`` (by content) when given, else compiled afresh."""
    return cache.get(lines) if cache is not None else _compile_set(lines)


def _compile_set(lines: tuple[str, ...]) -> tuple[CompiledLine, ...]:
    """Lines were validated when stored; one that no longer parses (a corrupt record) becomes
    a line that matches nothing, so it can only narrow access — dropping it could leave a
    token with no lines, i.e. unrestricted."""
    out: list[CompiledLine] = []
    for line in lines:
        try:
            lim = parse_line(line)
        except LimitSyntaxError:
            lim = Limit(line, (), engine.NEVER, ())
        out.append((lim.line, lim.methods, lim.url, tuple(tuple(c) for c in lim.clauses)))
    return tuple(out)
