"""The server's event loop: uvloop by default, asyncio on request, a clear error otherwise."""

from __future__ import annotations

import asyncio

import pytest

from authz import event_loop


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_default_is_uvloop() -> None:
    assert event_loop.run(_loop_type()).startswith("uvloop")


def test_asyncio_on_request() -> None:
    assert event_loop.loop_factory("asyncio") is None
    assert event_loop.run(_loop_type(), "asyncio").startswith("asyncio")


def test_unknown_loop_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="one of uvloop, asyncio"):
        event_loop.loop_factory("trio")


def test_serve_offers_the_choice() -> None:
    from authz.cli.main import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.event_loop == "uvloop" and args.workers is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--event-loop", "trio"])
