"""Hardening suites: hostile input, faults, load, secret hygiene (issue 6).

Short versions run by default (well under two minutes together). The long versions run with
``JIRA_AUTHZ_HARDENING_FULL=1`` (scales every count and duration, and includes the tests
marked ``slow``) or ``pytest -m slow tests/hardening`` (only those). Set
``JIRA_AUTHZ_HARDENING_REPORT=FILE`` to write the run's figures as JSON (docs/hardening.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hardening_support import (
    FIGURES,
    FULL,
    LEDGER,
    LocalStack,
    SpanCollector,
    TokenOps,
    make_stack,
    scan_stack,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect this directory's ``slow`` tests unless a full run or ``-m`` asks for them."""
    if FULL or "slow" in (config.getoption("markexpr", "") or ""):
        return
    keep, drop = [], []
    for item in items:
        mine = HERE in Path(str(item.fspath)).resolve().parents
        (drop if mine and item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.counts and not FIGURES.notes:
        return
    tr = terminalreporter
    tr.section(f"hardening figures ({'full' if FULL else 'short'} run)")
    for k, v in sorted(FIGURES.counts.items()):
        tr.write_line(f"{k}: {v}")
    for k, v in sorted(FIGURES.notes.items()):
        tr.write_line(f"{k}: {json.dumps(v, default=str)}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("JIRA_AUTHZ_HARDENING_REPORT")
    if out and (FIGURES.counts or FIGURES.notes):
        data = FIGURES.as_dict()
        data["secret_scan"] = {"secrets": len(LEDGER.secrets),
                               "chars_scanned": dict(LEDGER.scanned),
                               "findings": LEDGER.findings}
        Path(out).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def span_collector() -> Iterator[SpanCollector]:
    c = SpanCollector()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def shared_stack(
    tmp_path_factory: pytest.TempPathFactory, span_collector: SpanCollector
) -> Iterator[LocalStack]:
    """One stack for the bypass corpus, the load run and the final hygiene scan; traces go to
    a local collector so spans can be scanned too."""
    env = {"JIRA_AUTHZ_TRACING_EXPORTER": "otlp",
           "JIRA_AUTHZ_TRACING_ENDPOINT": span_collector.endpoint}
    with make_stack(tmp_path_factory.mktemp("hardening-shared"), env) as s:
        yield s


@pytest.fixture(scope="session")
def shared_ops(shared_stack: LocalStack) -> Iterator[TokenOps]:
    ops = TokenOps(shared_stack)
    yield ops
    ops.close()


StackFactory = Callable[..., LocalStack]


@pytest.fixture
def private_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackFactory]:
    """``private_stack(env={...}, **LocalStack kwargs)``: a started stack of the test's own.

    Torn down after the test, after a secret scan whose findings the hygiene test reports.
    On failure the log tails are printed.
    """
    started: list[LocalStack] = []
    failed = request.session.testsfailed

    def factory(env: dict[str, str] | None = None, **kw: Any) -> LocalStack:
        s = make_stack(tmp_path_factory.mktemp("hardening-fault"), env, **kw)
        s.start()
        started.append(s)
        return s

    yield factory
    for s in reversed(started):
        try:
            LEDGER.findings.extend(scan_stack(s, LEDGER.secrets))
            if request.session.testsfailed > failed:
                from authz.stack.processes import tail

                for name, path in s.logs.items():
                    print(f"----- {name} ({path}) -----\n{tail(Path(path), 40)}")
        finally:
            s.stop()
