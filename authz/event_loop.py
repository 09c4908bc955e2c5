"""Which event loop the server runs on: uvloop by default (measured in docs/performance.md,
"Framework levers"), the standard asyncio loop on request or where uvloop is missing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("uvloop", "asyncio")
DEFAULT = "uvloop"
log = logging.getLogger(__name__)


def loop_factory(name: str = DEFAULT) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner``; None means asyncio's own loop."""
    if name not in LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(LOOPS)}, not {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a stripped install: still serve, and say so
        log.warning("uvloop is not installed: running on the asyncio event loop")
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, T], name: str = DEFAULT) -> T:
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
