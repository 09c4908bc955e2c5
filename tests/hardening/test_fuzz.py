"""The atheris target fuzz/fuzz_decision.py, run for a bounded number of inputs.

CI runs a few thousand inputs with a fixed seed (reproducible); the slow version runs half a
million with a random one. Skipped, saying why, only when atheris cannot be imported.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hardening_support import FIGURES, FULL

TARGET = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_decision.py"


def _run(tmp_path: Path, runs: int, *extra: str, timeout: float) -> str:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris): fuzz target not run")
    proc = subprocess.run(
        [sys.executable, str(TARGET), f"-atheris_runs={runs}", "-max_len=2048",
         f"-artifact_prefix={tmp_path}/", *extra],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    crashes = sorted(tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, f"fuzz target failed:\n{out[-4000:]}"
    done = re.search(r"Done (\d+) in", out)
    assert done, out[-2000:]
    cov = re.findall(r"cov: (\d+)", out)
    FIGURES.add("fuzz inputs", int(done.group(1)))
    FIGURES.note("fuzz coverage (edges)", int(cov[-1]) if cov else 0)
    return out


def test_fuzz_short(tmp_path: Path) -> None:
    out = _run(tmp_path, 4000 if not FULL else 20000, "-seed=1", timeout=120)
    assert int(re.findall(r"cov: (\d+)", out)[-1]) > 100, "target lost its instrumentation"


@pytest.mark.slow
def test_fuzz_long(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _run(tmp_path, 500_000, str(corpus), timeout=1800)
