"""deploy/kubernetes/{authz,redis,gateway}.yaml are the chart rendered by Helm itself.

One source of truth: the plain manifests are `helm template` output of helm/jira-authz with
examples/plain-manifests.yaml (release and namespace `jira-authz`), minus Helm's own labels,
split by component. tests/delivery/test_k8s_manifests.py fails when they drift from the chart.

Regenerate after a chart change:
    python tests/delivery/plain_manifests.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import helmtool  # sibling module; this file is also run as a script

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "jira-authz"
VALUES = CHART / "examples" / "plain-manifests.yaml"
OUT = ROOT / "deploy" / "kubernetes"
NAMESPACE = "jira-authz"
FILES = ("authz.yaml", "redis.yaml", "gateway.yaml")

_HELM_LABELS = re.compile(
    r"^\s+(helm\.sh/chart: .*|app\.kubernetes\.io/managed-by: Helm)\n", re.MULTILINE
)


def _header(name: str) -> str:
    return (
        f"# {name}: generated from helm/jira-authz with examples/plain-manifests.yaml by\n"
        "# tests/delivery/plain_manifests.py. Do not edit: change the chart and regenerate.\n"
        "# Apply with `kubectl apply -k deploy/kubernetes` after creating the Secrets\n"
        "# (docs/kubernetes.md).\n"
    )


def generate() -> dict[str, str]:
    values = yaml.safe_load(VALUES.read_text())
    rendered = helmtool.render(CHART, values, namespace=NAMESPACE)
    chunks: dict[str, list[str]] = {name: [] for name in FILES}
    for chunk in re.split(r"^---\n", rendered.raw["manifest"], flags=re.MULTILINE):
        doc = yaml.safe_load(chunk)
        if not doc:
            continue
        component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        target = f"{component}.yaml" if f"{component}.yaml" in chunks else "authz.yaml"
        chunks[target].append(_HELM_LABELS.sub("", chunk).strip() + "\n")
    return {
        name: _header(name) + "".join("---\n" + c for c in docs)
        for name, docs in chunks.items()
    }


def main() -> int:
    for name, text in generate().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
