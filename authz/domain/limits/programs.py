"""One compiled RE2 program per distinct pattern text.

A compiled program costs kilobytes of C++ memory; tokens of one team mostly carry the same
restriction lines, so identical patterns share one program instead of one per token. Pure:
the caller passes the compiler (``engine.compile_program``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

DEFAULT_CAPACITY = 65_536


class Programs:
    """Bounded LRU of compiled programs by (pattern, kind). Evicting one only stops new line
    sets from sharing it: the sets that hold it keep it alive."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._programs: OrderedDict[str, Any] = OrderedDict()
        self.compiled = 0

    def __len__(self) -> int:
        return len(self._programs)

    def get(self, pattern: str, compile_: Callable[[str], Any]) -> Any:
        """The shared program for ``pattern``; a compile error propagates and is not kept."""
        got = self._programs.get(pattern)
        if got is not None:
            self._programs.move_to_end(pattern)
            return got
        got = self._programs[pattern] = compile_(pattern)
        self.compiled += 1
        if len(self._programs) > self.capacity:
            self._programs.popitem(last=False)
        return got

    def clear(self) -> None:
        self._programs.clear()


PROGRAMS = Programs()
