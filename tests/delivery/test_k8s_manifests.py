"""deploy/kubernetes (plain manifests) and deploy/istio (mesh config, AuthorizationPolicy)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, require_module

KUBE_DIR = ROOT / "deploy" / "kubernetes"
ISTIO_DIR = ROOT / "deploy" / "istio"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifest_files() -> list[Path]:
    return sorted(p for p in KUBE_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_plain_manifests_validate_strictly(path: Path) -> None:
    """Every object under deploy/kubernetes passes the Kubernetes schemas of the newest version
    kubernetes-validate knows, in strict mode (unknown fields are errors)."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate as kv
    from kubernetes_validate.utils import latest_version

    docs = _docs(path)
    assert docs
    for doc in docs:
        try:
            kv.validate(doc, latest_version(), strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")
        assert doc["metadata"].get("namespace", "jira-authz") == "jira-authz"


def test_plain_manifests_are_the_chart_rendered(helm: Any) -> None:
    """deploy/kubernetes/{authz,redis,gateway}.yaml equal the chart rendered now: regenerate with
    `python tests/delivery/plain_manifests.py` after changing the chart."""
    import plain_manifests

    for name, text in plain_manifests.generate().items():
        assert (KUBE_DIR / name).read_text() == text, (
            f"deploy/kubernetes/{name} is stale: python tests/delivery/plain_manifests.py")


def test_plain_manifests_reference_only_documented_secrets() -> None:
    refs = set()
    for path in _manifest_files():
        for doc in _docs(path):
            assert doc["kind"] != "Secret", "plain manifests must not carry secret values"
            _collect_secret_refs(doc, refs)
    assert refs == {"jira-authz-redis", "jira-authz-admin"}
    guide = (ROOT / "docs" / "kubernetes.md").read_text()
    for name in refs:
        assert f"kubectl -n jira-authz create secret generic {name}" in guide


def test_yaml_in_the_install_guide_validates() -> None:
    """The Kubernetes objects shown in docs/kubernetes.md (e.g. Jira's NetworkPolicy) are valid."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate as kv
    from kubernetes_validate.utils import latest_version

    text = (ROOT / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert blocks
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            kv.validate(doc, latest_version(), strict=True)


def _collect_secret_refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            out.add(node["secretKeyRef"]["name"])
        if "secretName" in node:
            out.add(node["secretName"])
        for v in node.values():
            _collect_secret_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _collect_secret_refs(v, out)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(p.name for p in _manifest_files())


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (Debian package kubernetes-client); "
                    "test_kustomization_lists_every_manifest covers the file list")
    proc = subprocess.run([kubectl, "kustomize", str(KUBE_DIR)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert kinds[0] == "Namespace" and "Deployment" in kinds and "StatefulSet" in kinds


def test_namespace_enforces_restricted_pod_security() -> None:
    (ns,) = _docs(KUBE_DIR / "namespace.yaml")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- Istio ----------------------------------------------------------------------------------------
# The Istio CRDs (IstioOperator, AuthorizationPolicy) are not in kubernetes-validate's schemas:
# their structure is checked here against the fields Istio documents for these kinds.


def _check_fields(obj: dict, allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    assert not unknown, f"{where}: unknown fields {unknown}"


def test_istio_mesh_config_declares_the_provider() -> None:
    (op,) = _docs(ISTIO_DIR / "mesh-config.yaml")
    assert op["apiVersion"] == "install.istio.io/v1alpha1" and op["kind"] == "IstioOperator"
    mesh = op["spec"]["meshConfig"]
    assert mesh["pathNormalization"] == {"normalization": "DECODE_AND_MERGE_SLASHES"}
    (provider,) = mesh["extensionProviders"]
    _check_fields(provider, {"name", "envoyExtAuthzGrpc"}, "extensionProviders[0]")
    grpc = provider["envoyExtAuthzGrpc"]
    _check_fields(grpc, {"service", "port", "timeout", "failOpen", "statusOnError",
                         "includeRequestBodyInCheck", "clearRouteCache"}, "envoyExtAuthzGrpc")
    assert provider["name"] == "jira-authz"
    # The chart's check Service (release and namespace jira-authz) and port.
    assert grpc["service"] == "jira-authz.jira-authz.svc.cluster.local"
    assert grpc["port"] == 9191
    assert grpc["failOpen"] is False and grpc["statusOnError"] == "503"
    assert grpc["timeout"] == "0.5s"


def test_istio_authorization_policy_is_custom_for_rest() -> None:
    docs = _docs(ISTIO_DIR / "authorizationpolicy.yaml")
    (ap,) = docs
    assert ap["apiVersion"] == "security.istio.io/v1" and ap["kind"] == "AuthorizationPolicy"
    _check_fields(ap["spec"], {"selector", "action", "provider", "rules", "targetRefs"}, "spec")
    assert ap["spec"]["action"] == "CUSTOM"
    assert ap["spec"]["provider"] == {"name": "jira-authz"}
    for rule in ap["spec"]["rules"]:
        _check_fields(rule, {"from", "to", "when"}, "rule")
        for cond in rule.get("when", []):
            _check_fields(cond, {"key", "values", "notValues"}, "when")
    assert ap["spec"]["rules"][0]["to"][0]["operation"]["paths"] == ["/rest/*"]
    # Only token calls reach the Check: the path rule also needs an Authorization header, and
    # no rule lets a request without one through unchecked while it carries the identity
    # header (the second rule sends those to jira-authz, which strips it).
    assert ap["spec"]["rules"][0]["when"] == [{"key": "request.headers[authorization]",
                                               "values": ["*"]}]
    assert ap["spec"]["rules"][1] == {"when": [{"key": "request.headers[contextuser]",
                                                "values": ["*"]}]}
    # Same policy as the chart renders for examples/istio.yaml.
    assert ap["spec"]["rules"][1]["when"][0]["key"] == "request.headers[contextuser]"


def test_istio_policy_equals_the_chart(rendered_examples: dict[str, Any]) -> None:
    (shipped,) = _docs(ISTIO_DIR / "authorizationpolicy.yaml")
    chart = rendered_examples["istio"].find("AuthorizationPolicy", "jira-authz")
    assert chart["spec"] == shipped["spec"]
    assert chart["metadata"]["namespace"] == shipped["metadata"]["namespace"]
