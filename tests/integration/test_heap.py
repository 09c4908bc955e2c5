"""The serving process freezes its start-up heap, so full collections skip it."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json, time
import authz.server
gc.collect()
before = len(gc.get_objects())
t = time.perf_counter(); gc.collect(); full_before = time.perf_counter() - t
frozen = authz.server.settle_heap()
after = len(gc.get_objects())
t = time.perf_counter(); gc.collect(); full_after = time.perf_counter() - t
print(json.dumps({"before": before, "frozen": frozen, "after": after,
                  "full_before": full_before, "full_after": full_after}))
"""


def test_settle_heap_takes_the_start_up_heap_out_of_full_collections() -> None:
    # A process of its own: freezing is for the serving process, not the test runner.
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["before"] > 20_000  # what the server's imports alone leave to walk
    assert got["frozen"] > 20_000
    assert got["after"] < 1_000
    print(f"full collection {got['full_before'] * 1e3:.1f} ms -> {got['full_after'] * 1e3:.1f} ms")
