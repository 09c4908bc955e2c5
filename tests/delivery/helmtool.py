"""Helm's own Go code (helm-sdkpy) driven without a cluster: `lint`, and `render` a release.

helm-sdkpy has no offline `helm template`; its Install does render exactly like `helm install`
(values schema, templates, hooks, NOTES) and then talks to the Kubernetes API. `render` points it
at a small in-process fake API server on 127.0.0.1 that answers discovery and accepts every object,
with the release storage driver set to `memory`, and returns what Helm rendered. Nothing leaves
the machine.

Run as a script (one Go runtime per process, and its log lines — e.g. lint's "funcMap fail" —
are captured from stderr by the caller):
    python helmtool.py lint CHART_DIR
    python helmtool.py render CHART_DIR VALUES_JSON_FILE [NAMESPACE]
Both print one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import yaml

KUBE_VERSION = ("1", "34")
RELEASE = "jira-authz"

# group/version -> [(plural, kind, namespaced)] served by the fake discovery.
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
    "security.istio.io/v1": [("authorizationpolicies", "AuthorizationPolicy", True)],
}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class _FakeKubeAPI(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for `helm install --wait=false` to succeed."""

    # One render per process (helmtool runs as a script), so a class-level store is enough.
    store: ClassVar[dict[str, Any]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, obj: Any, ctype: str = "application/json") -> None:
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/version":
            major, minor = KUBE_VERSION
            return self._send(200, {"major": major, "minor": minor,
                                    "gitVersion": f"v{major}.{minor}.0", "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = {}
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    groups.setdefault(group, []).append(version)
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()]})
        gv = path.removeprefix("/api/") if path.startswith("/api/") else path.removeprefix("/apis/")
        if gv in RESOURCES:
            return self._send(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": _VERBS}
                for n, k, ns in RESOURCES[gv]]})
        if path in self.store:
            return self._send(200, self.store[path])
        return self._not_found()

    def _read(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        raw = self._read()
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            # Echo protobuf bodies back unchanged: the client decodes its own object.
            return self._send(201, raw, self.headers["Content-Type"])
        obj = json.loads(raw or b"{}")
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", "00000000-0000-0000-0000-000000000000")
        meta["resourceVersion"] = "1"
        self.store[self.path.split("?", 1)[0] + "/" + meta.get("name", "")] = obj
        self._send(201, obj)

    def do_PUT(self) -> None:
        obj = json.loads(self._read() or b"{}")
        self.store[self.path.split("?", 1)[0]] = obj
        self._send(200, obj)

    def do_PATCH(self) -> None:
        self._read()
        path = self.path.split("?", 1)[0]
        if path not in self.store:
            return self._not_found()
        self._send(200, self.store[path])

    def do_DELETE(self) -> None:
        self.store.pop(self.path.split("?", 1)[0], None)
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def _isolate_helm_env(tmp: str) -> None:
    # Helm writes its cache/config/registry files under these; keep them out of $HOME.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        os.environ[var] = os.path.join(tmp, var.lower())
    os.environ["HELM_DRIVER"] = "memory"


def _lint(chart: str) -> dict[str, Any]:
    import helm_sdkpy

    return asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(chart))


def _render(chart: str, values: dict[str, Any], namespace: str, tmp: str) -> dict[str, Any]:
    import helm_sdkpy

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKubeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = Path(tmp, "kubeconfig")
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {
            "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                  "namespace": namespace}}],
    }))
    try:
        cfg = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(kubeconfig))
        return asyncio.run(helm_sdkpy.Install(cfg).run(
            RELEASE, chart, values=values or None, wait=False, timeout=60))
    finally:
        server.shutdown()


# --- caller side ------------------------------------------------------------------------------


@dataclass
class LintResult:
    messages: list[dict[str, Any]]
    errors: int
    stderr: str

    @property
    def template_failures(self) -> list[str]:
        """`fail`/`required` only log in lint mode; they are errors for an install."""
        return [line for line in self.stderr.splitlines()
                if "funcMap fail" in line or "missing required value" in line]


@dataclass
class Rendered:
    manifests: list[dict[str, Any]]
    hooks: list[dict[str, Any]]
    notes: str
    raw: dict[str, Any]

    def find(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        hits = [m for m in self.manifests + self.hooks
                if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
        if len(hits) != 1:
            names = [m["metadata"]["name"] for m in self.manifests + self.hooks
                     if m["kind"] == kind]
            raise LookupError(f"{kind} *{name_suffix}: {len(hits)} matches among {names}")
        return hits[0]

    def kinds(self) -> set[str]:
        return {m["kind"] for m in self.manifests + self.hooks}


class HelmError(RuntimeError):
    pass


def _run(args: list[str]) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        raise HelmError((proc.stdout + proc.stderr).strip()[-4000:])
    return json.loads(proc.stdout), proc.stderr


def lint(chart: str | os.PathLike[str]) -> LintResult:
    out, err = _run(["lint", str(chart)])
    return LintResult(out.get("Messages") or [], len(out.get("Errors") or []), err)


def render(chart: str | os.PathLike[str], values: dict[str, Any] | None = None,
           namespace: str = "jira-authz") -> Rendered:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(values or {}, f)
    try:
        out, _ = _run(["render", str(chart), f.name, namespace])
    finally:
        os.unlink(f.name)
    docs = [d for d in yaml.safe_load_all(out.get("manifest") or "") if d]
    hooks = [yaml.safe_load(h["manifest"]) for h in out.get("hooks") or []]
    return Rendered(docs, hooks, (out.get("info") or {}).get("notes", ""), out)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        _isolate_helm_env(tmp)
        try:
            if argv[0] == "lint":
                result = _lint(argv[1])
            elif argv[0] == "render":
                values = json.loads(Path(argv[2]).read_text())
                result = _render(argv[1], values, argv[3] if len(argv) > 3 else "default", tmp)
            else:
                print(__doc__, file=sys.stderr)
                return 2
        except Exception as e:  # one line for the caller, which shows it in the test failure
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
