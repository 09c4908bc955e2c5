"""The Helm chart: Helm's own lint and render (Go SDK via helm-sdkpy), values schema, and what the
rendered objects must guarantee (security, probes, wiring, alerts)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    CHART,
    EXAMPLES,
    HELM_TEST_SCRIPT,
    ROOT,
    default_values,
    example_values,
    merge_values,
    require_module,
)

from authz import config as service_config
from authz import server

EXAMPLE_IDS = [p.stem for p in EXAMPLES]

# Helm lint severities (helm.sh/helm/v4/pkg/chart/v2/lint/support): 1 info, 2 warning, 3 error.
LINT_WARNING = 2


# --- lint ---------------------------------------------------------------------------------------


def _assert_lint_clean(result: Any) -> None:
    bad = [m for m in result.messages if m["Severity"] >= LINT_WARNING]
    assert not bad and result.errors == 0, f"helm lint: {bad} (stderr: {result.stderr[-2000:]})"
    # In lint mode `fail`/`required` only log; an install would stop there.
    assert not result.template_failures, result.template_failures


def test_lint_default_values(helm: Any) -> None:
    _assert_lint_clean(helm.lint(CHART))


@pytest.mark.parametrize("example", EXAMPLES, ids=EXAMPLE_IDS)
def test_lint_with_example_values(helm: Any, example: Path, tmp_path: Path) -> None:
    # helm-sdkpy's Lint takes no values file: lint a copy whose values.yaml is the defaults
    # coalesced with the example, which is what `helm lint -f example.yaml` lints.
    chart = tmp_path / "jira-authz"
    shutil.copytree(CHART, chart)
    merged = merge_values(default_values(), example_values(example))
    (chart / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    _assert_lint_clean(helm.lint(chart))


def test_lint_catches_a_broken_template(helm: Any, tmp_path: Path) -> None:
    """The lint above can fail: a template error is reported as an error."""
    chart = tmp_path / "jira-authz"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.image | nosuchfunc }}\n")
    assert helm.lint(chart).errors > 0


# --- values schema --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    require_module("jsonschema", "jsonschema")
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_default_values_match_schema(schema_validator: Any) -> None:
    errors = [e.message for e in schema_validator.iter_errors(default_values())]
    assert not errors


@pytest.mark.parametrize("example", EXAMPLES, ids=EXAMPLE_IDS)
def test_example_values_match_schema(schema_validator: Any, example: Path) -> None:
    merged = merge_values(default_values(), example_values(example))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator.iter_errors(merged)]
    assert not errors


INVALID_VALUES = {
    "unknown top-level key": {"replicas": 3},
    "unknown service config key": {"config": {"auth": {"unauthenticaed": "deny"}}},
    "chart-owned config key": {"config": {"listen": {"check": "0.0.0.0:1"}}},
    "redis url in config": {"config": {"redis": {"url": "redis://x:6379"}}},
    "bad unauthenticated mode": {"config": {"auth": {"unauthenticated": "allow"}}},
    "bad scheme": {"config": {"auth": {"schemes": ["digest"]}}},
    "identity header Authorization": {"config": {"identity": {"header": "Authorization"}}},
    "identity header with underscore": {"config": {"identity": {"header": "context_user"}}},
    "no redis at all": {"redis": {"bundled": {"enabled": False}}},
    "redis url with password": {
        "redis": {"bundled": {"enabled": False}, "external": {"url": "redis://:pw@r:6379"}}},
    "admin mTLS without secret": {"admin": {"tls": {"enabled": True}}},
    "image digest not sha256": {"image": {"digest": "latest"}},
    "check timeout not a duration": {"gateway": {"enabled": True, "checkTimeout": "1 second"}},
    "check timeout in ms (Envoy wants seconds)": {"gateway": {"checkTimeout": "500ms"}},
    "privileged gateway port": {"gateway": {"listenPort": 80}},
    "appendfsync no": {"redis": {"bundled": {"appendfsync": "no"}}},
    "string replica count": {"replicaCount": "2"},
    "zero workers": {"workers": 0},
    "empty istio selector": {
        "istio": {"authorizationPolicy": {"enabled": True, "selector": {"app": None}}}},
}


@pytest.mark.parametrize("values", INVALID_VALUES.values(), ids=INVALID_VALUES.keys())
def test_invalid_values_are_refused_by_schema(schema_validator: Any, values: dict) -> None:
    merged = merge_values(default_values(), values)
    assert list(schema_validator.iter_errors(merged)), "schema accepted invalid values"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (INVALID_VALUES["bad unauthenticated mode"], "/config/auth/unauthenticated"),
        (INVALID_VALUES["chart-owned config key"], "'listen' not allowed"),
        (INVALID_VALUES["no redis at all"], "/redis/external"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not exceed"),
        ({"config": {"server": {"grace_seconds": 60}}}, "terminationGracePeriodSeconds (30)"),
    ],
    ids=["enum", "chart-owned key", "no redis", "replicas", "grace"],
)
def test_helm_install_refuses_invalid_values_clearly(helm: Any, values: dict, message: str) -> None:
    """What the installer sees: Helm itself stops the install and names the value."""
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        helm.render(CHART, values)


def _schema_type(typ: Any) -> str:
    if typing.get_origin(typ) is tuple:
        return "array"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[typ]


# Keys of the service config the chart sets itself (ports, Redis URL, Secret mounts).
CHART_OWNED = {"listen", "admin", "redis.url", "identity.upstream_authorization_file",
               "webhooks.url", "webhooks.secret_file",
               # values.console (the web console) sets these:
               "console.listen", "console.path_prefix", "console.jira_url", "console.admin_group",
               "console.session_seconds", "console.recheck_seconds", "console.cookie_secure"}


def test_schema_config_section_matches_service_config() -> None:
    """values.config accepts exactly the service's config keys (authz/config.py) the chart does
    not own, with the same types: a new server option is either added here or fails this test."""
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    hints = typing.get_type_hints(service_config.Config)
    expected: dict[str, str] = {}
    for section in dataclasses.fields(service_config.Config):
        if section.name in CHART_OWNED:
            continue
        section_hints = typing.get_type_hints(hints[section.name])
        for f in dataclasses.fields(hints[section.name]):
            if f"{section.name}.{f.name}" not in CHART_OWNED:
                expected[f"{section.name}.{f.name}"] = _schema_type(section_hints[f.name])
    found = {
        f"{sec}.{key}": spec["type"]
        for sec, sec_schema in schema["properties"].items()
        for key, spec in sec_schema["properties"].items()
    }
    assert found == expected
    assert all(s.get("additionalProperties") is False for s in schema["properties"].values())


def test_values_config_defaults_equal_service_defaults() -> None:
    """values.yaml spells out some server defaults; they must not drift from authz/config.py."""
    defaults = service_config.as_dict(service_config.Config())
    for section, keys in default_values()["config"].items():
        for key, value in keys.items():
            assert defaults[section][key] == value, f"config.{section}.{key}"


# --- rendered objects -----------------------------------------------------------------------------


def test_default_install_renders_the_expected_objects(rendered_default: Any) -> None:
    r = rendered_default
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap", "Secret", "StatefulSet", "ServiceAccount"} <= r.kinds()
    assert r.find("Service", "jira-authz-headless")["spec"]["clusterIP"] == "None"
    assert r.find("ConfigMap", "-dashboard")
    # Opt-in objects stay out by default (CRDs may be missing; the gateway is one of two ways).
    assert not {"ServiceMonitor", "PrometheusRule", "AuthorizationPolicy"} & r.kinds()
    assert not [m for m in r.manifests if m["metadata"]["name"].endswith("-gateway")]


def test_example_installs_render(rendered_examples: dict[str, Any]) -> None:
    assert {"ServiceMonitor", "PrometheusRule", "AuthorizationPolicy"} <= (
        rendered_examples["production"].kinds())
    assert "AuthorizationPolicy" in rendered_examples["istio"].kinds()
    gateway = rendered_examples["envoy-gateway"]
    assert gateway.find("Deployment", "-gateway") and gateway.find("ConfigMap", "-gateway")
    assert "StatefulSet" not in rendered_examples["production"].kinds()


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _pod_specs(rendered: Any) -> list[tuple[str, dict]]:
    out = []
    for m in rendered.manifests + rendered.hooks:
        if m["kind"] in ("Deployment", "StatefulSet"):
            out.append((m["metadata"]["name"], m["spec"]["template"]["spec"]))
        elif m["kind"] == "Pod":
            out.append((m["metadata"]["name"], m["spec"]))
    return out


@pytest.mark.parametrize("which", ["default", *EXAMPLE_IDS])
def test_every_pod_meets_the_restricted_pod_security_standard(
    which: str, rendered_default: Any, rendered_examples: dict[str, Any]
) -> None:
    rendered = rendered_default if which == "default" else rendered_examples[which]
    for name, spec in _pod_specs(rendered):
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "add" not in sc["capabilities"], (name, c["name"])
            # A read-only root needs a writable /tmp.
            assert any(v["mountPath"] == "/tmp" for v in c["volumeMounts"]), (name, c["name"])


def test_authz_deployment(rendered_default: Any) -> None:
    dep = rendered_default.find("Deployment", "jira-authz")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    # Always explicit: `serve` alone would run one process per core, more than Envoy lists.
    assert c["args"] == ["--config", "/etc/jira-authz/config.yaml", "--workers", "1"]
    assert c["image"] == "ghcr.io/jira-authz/jira-authz:0.1.0"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "grpc-check": 9191, "http-check": 9291, "grpc-admin": 9190, "http-metrics": 9090}
    # Readiness = overall gRPC health (Redis-aware); liveness and start-up ask the `liveness`
    # service, which stays SERVING during a Redis outage (no restart storm).
    assert c["readinessProbe"]["grpc"] == {"port": 9191}
    assert c["livenessProbe"]["grpc"] == {"port": 9191, "service": server.LIVENESS_SERVICE}
    assert c["startupProbe"]["grpc"] == {"port": 9191, "service": server.LIVENESS_SERVICE}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in dep["spec"]  # owned by the HPA
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["admin"] == "/etc/jira-authz/admin"
    env = {e["name"]: e for e in c["env"]}
    # The Redis password reaches the URL through the environment, never the ConfigMap.
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "jira-authz-redis"
    assert env["JIRA_AUTHZ_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
    assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_image_digest_wins_over_tag(helm: Any) -> None:
    digest = "sha256:" + "ab" * 32
    r = helm.render(CHART, {"image": {"digest": digest, "tag": "9.9.9"}})
    c = r.find("Deployment", "jira-authz")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"ghcr.io/jira-authz/jira-authz@{digest}"


@pytest.mark.parametrize("which", ["default", *EXAMPLE_IDS])
def test_rendered_config_is_accepted_by_the_service(
    which: str, rendered_default: Any, rendered_examples: dict[str, Any], tmp_path: Path
) -> None:
    """The ConfigMap's config.yaml loads with the service's own loader (plus the env the
    Deployment sets), so a chart release never crash-loops on its config."""
    rendered = rendered_default if which == "default" else rendered_examples[which]
    text = rendered.find("ConfigMap", "jira-authz")["data"]["config.yaml"]
    c = rendered.find("Deployment", "jira-authz")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in c.get("env", []) if "value" in e}
    if "JIRA_AUTHZ_REDIS_URL" in env:
        env["JIRA_AUTHZ_REDIS_URL"] = env["JIRA_AUTHZ_REDIS_URL"].replace(
            "$(REDIS_PASSWORD)", "pw")
    elif any(e["name"] == "JIRA_AUTHZ_REDIS_URL" for e in c.get("env", [])):
        env["JIRA_AUTHZ_REDIS_URL"] = "rediss://:pw@redis.example:6380/0"  # from a Secret
    (tmp_path / "config.yaml").write_text(text)
    cfg = service_config.load_config(tmp_path / "config.yaml", environ=env)
    assert cfg.listen.check == "0.0.0.0:9191"
    assert cfg.listen.check_http1 == "0.0.0.0:9291"  # the container's http-check port
    assert cfg.listen.admin == "0.0.0.0:9190"
    assert cfg.listen.metrics == "0.0.0.0:9090"
    assert cfg.admin.token_file == "/etc/jira-authz/admin/token"
    assert "password" not in text.lower() and ":pw@" not in text
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for path in (cfg.admin.token_file, cfg.admin.tls_cert_file,
                 cfg.identity.upstream_authorization_file):
        if path:
            assert str(Path(path).parent) in mounts, f"{path} is not mounted"


def test_secrets_are_generated_only_when_not_provided(
    rendered_default: Any, rendered_examples: dict[str, Any]
) -> None:
    names = {m["metadata"]["name"] for m in rendered_default.manifests if m["kind"] == "Secret"}
    assert names == {"jira-authz-admin", "jira-authz-redis"}
    for m in rendered_default.manifests:
        if m["kind"] == "Secret":
            assert m["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            assert all(len(v) >= 40 for v in m["data"].values())
    assert "Secret" not in rendered_examples["production"].kinds()
    assert "Secret" not in rendered_examples["plain-manifests"].kinds()


def test_network_policy_admits_only_named_clients(
    rendered_default: Any, rendered_examples: dict[str, Any]
) -> None:
    def rules(rendered: Any) -> dict[str, list]:
        np = rendered.find("NetworkPolicy", "jira-authz")
        out = {}
        for rule in np["spec"]["ingress"]:
            assert rule.get("from"), "an ingress rule without `from` admits everyone"
            for port in rule["ports"]:
                out[port["port"]] = rule["from"]
        return out

    default = rules(rendered_default)
    assert "grpc-admin" not in default  # nobody over the network by default
    check_peers = [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                   for p in default["grpc-check"]]
    assert check_peers == ["test"]
    gw = rules(rendered_examples["envoy-gateway"])
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in gw["grpc-check"]] == ["test", "gateway"]
    # The HTTP/1.1 Check port (Envoy's bridge) admits exactly the gRPC Check port's peers.
    for rendered in (rendered_default, rendered_examples["envoy-gateway"],
                     rendered_examples["production"]):
        got = rules(rendered)
        assert got["http-check"] == got["grpc-check"]
    prod = rules(rendered_examples["production"])
    assert prod["grpc-admin"][0]["podSelector"]["matchLabels"] == {"app": "jira-authz-operator"}
    redis_np = rendered_default.find("NetworkPolicy", "-redis")
    (rule,) = redis_np["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "authz"


def test_admin_port_is_never_on_the_check_service(rendered_default: Any) -> None:
    ports = {p["name"] for p in rendered_default.find("Service", "jira-authz")["spec"]["ports"]}
    assert ports == {"grpc-check", "http-check", "http-metrics"}
    admin = rendered_default.find("Service", "jira-authz-admin")
    assert [p["port"] for p in admin["spec"]["ports"]] == [9190]


def test_bundled_redis_is_persistent_and_authenticated(rendered_default: Any) -> None:
    sts = rendered_default.find("StatefulSet", "-redis")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    conf = rendered_default.find("ConfigMap", "-redis")["data"]["redis.conf"]
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction",
                 "include /tmp/redis-auth.conf"):
        assert line in conf.splitlines()
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert "$REDISCLI_AUTH" in c["args"][0] and "requirepass" in c["args"][0]


def test_rendered_redis_conf_runs_on_a_real_redis(rendered_default: Any, tmp_path: Path) -> None:
    """The bundled redis.conf is accepted by a real Redis, which then demands the password and
    writes an append-only file."""
    import redis

    from authz.stack.processes import Child, StackError, find_redis_server, free_port, wait_until

    try:
        binary = find_redis_server()
    except StackError as e:
        pytest.skip(str(e))
    conf = rendered_default.find("ConfigMap", "-redis")["data"]["redis.conf"]
    port = free_port()
    conf = (conf.replace("port 6379", f"port {port}").replace("bind * -::*", "bind 127.0.0.1")
            .replace("dir /data", f"dir {tmp_path}")
            .replace("/tmp/redis-auth.conf", str(tmp_path / "auth.conf")))
    (tmp_path / "auth.conf").write_text("requirepass s3cret\n")
    (tmp_path / "redis.conf").write_text(conf)
    child = Child("redis", [binary, str(tmp_path / "redis.conf")], tmp_path / "redis.log")
    child.start()
    try:
        client = redis.Redis(port=port, password="s3cret", socket_timeout=2)
        wait_until("redis", lambda: _pings(client), child=child, timeout=20)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).set("k", "v")
        client.set("jira-authz:probe", "1")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert any(tmp_path.rglob("*.aof")), "no append-only file written"
        client.close()
    finally:
        child.stop()


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_helm_test_hook_runs_the_check_script(rendered_default: Any) -> None:
    pod = rendered_default.find("Pod", "-test-check")
    cm = rendered_default.find("ConfigMap", "-test-check")
    for obj in (pod, cm):
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "test"
        # Not deleted on success: `helm test --logs` reads the pod afterwards.
        assert obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == (
            "before-hook-creation")
    assert cm["data"]["check.py"] == HELM_TEST_SCRIPT.read_text().rstrip("\n")
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "ghcr.io/jira-authz/jira-authz:0.1.0"  # the release's own image
    assert c["command"] == ["python", "/opt/jira-authz-test/check.py"]
    args = dict(zip(c["args"][::2], c["args"][1::2], strict=True))
    assert args == {
        "--target": "jira-authz.jira-authz.svc:9191", "--path-prefix": "/rest/",
        "--http1-target": "jira-authz.jira-authz.svc:9291",
        "--identity-header": "contextUser", "--schemes": "basic,bearer",
        "--unauthenticated": "pass",
    }
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


def test_notes_tell_how_to_create_a_token(rendered_default: Any) -> None:
    notes = rendered_default.notes
    assert "helm test jira-authz" in notes
    assert "jira-authz token create" in notes
    assert "kubectl -n jira-authz get secret jira-authz-admin" in notes
    assert "jira-authz-headless.jira-authz.svc.cluster.local:9291" in notes  # the bridge's port


# --- monitoring -----------------------------------------------------------------------------------

class _Zero:
    """Stands in for the cache and audit components: every counter reads 0."""

    stats = property(lambda self: self)
    subscribed = False

    def __getattr__(self, name: str) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def _exported_metric_names() -> set[str]:
    """Every series name the service exposes: module-level metrics plus the runtime collector
    (cache and audit counters read at scrape time)."""
    from prometheus_client import REGISTRY

    from authz import metrics

    unregister = metrics.register_runtime(_Zero(), _Zero())
    try:
        families = list(REGISTRY.collect())
    finally:
        unregister()
    names = set()
    for family in families:
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":  # a labelled counter has no samples until first use
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\bjira_authz_[a-z0-9_]+", text)) - {"jira_authz_"}


def test_alerts_cover_the_required_conditions_with_real_metrics(
    rendered_examples: dict[str, Any],
) -> None:
    rule = rendered_examples["production"].find("PrometheusRule", "jira-authz")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    required = {
        "JiraAuthzDenyRateSpike": "jira_authz_decisions_total",
        "JiraAuthzRedisErrors": "jira_authz_redis_errors_total",
        "JiraAuthzAuditDropped": "jira_authz_audit_dropped_total",
        "JiraAuthzCheckLatencyHigh": "jira_authz_check_duration_seconds_bucket",
        "JiraAuthzRevocationPropagationSlow": "jira_authz_revocation_propagation_seconds_bucket",
    }
    for name, metric in required.items():
        assert metric in alerts[name]["expr"], name
    for a in alerts.values():
        assert a["labels"]["severity"] in ("warning", "critical")
        # Scoped to this release's series; balanced braces and parentheses.
        assert 'namespace="jira-authz",service="jira-authz"' in a["expr"], a["alert"]
        assert a["expr"].count("(") == a["expr"].count(")"), a["alert"]
        assert a["expr"].count("{") == a["expr"].count("}"), a["alert"]
    assert "> 0.025" in alerts["JiraAuthzCheckLatencyHigh"]["expr"]  # production override
    assert "More than 50% of token calls" in alerts["JiraAuthzDenyRateSpike"]["annotations"][
        "summary"]
    assert "(50% of audit.buffer_size)" in alerts["JiraAuthzAuditBacklog"]["annotations"]["summary"]
    unknown = _referenced(json.dumps(rule)) - _exported_metric_names()
    assert not unknown, f"alerts use metrics the service does not export: {unknown}"


def test_dashboard_is_valid_and_uses_real_metrics(rendered_default: Any) -> None:
    dash = json.loads(rendered_default.find("ConfigMap", "-dashboard")["data"]["jira-authz.json"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    unknown = _referenced(exprs) - _exported_metric_names()
    assert not unknown, unknown
    for metric in ("jira_authz_decisions_total", "jira_authz_check_duration_seconds_bucket",
                   "jira_authz_redis_errors_total", "jira_authz_audit_queue_depth",
                   "jira_authz_audit_dropped_total",
                   "jira_authz_revocation_propagation_seconds_bucket",
                   "jira_authz_check_http1_refused_total"):
        assert metric in exprs, metric
    # Panels do not overlap on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells and g["x"] + g["w"] <= 24, p["title"]
        cells |= mine


def test_service_monitor_scrapes_the_metrics_port(rendered_examples: dict[str, Any]) -> None:
    r = rendered_examples["production"]
    sm = r.find("ServiceMonitor", "jira-authz")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["http-metrics"]
    selected = [s for s in r.manifests if s["kind"] == "Service" and all(
        s["metadata"]["labels"].get(k) == v
        for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    assert [s["metadata"]["name"] for s in selected] == ["jira-authz"]
    assert "http-metrics" in {p["name"] for p in selected[0]["spec"]["ports"]}


# --- Istio ----------------------------------------------------------------------------------------


def test_istio_authorization_policy(rendered_examples: dict[str, Any]) -> None:
    ap = rendered_examples["istio"].find("AuthorizationPolicy", "jira-authz")
    assert ap["apiVersion"] == "security.istio.io/v1"
    assert ap["metadata"]["namespace"] == "jira"
    spec = ap["spec"]
    assert spec["action"] == "CUSTOM" and spec["provider"] == {"name": "jira-authz"}
    assert spec["selector"] == {"matchLabels": {"app": "jira"}}
    # Only token calls: the REST paths AND an Authorization header (presence match).
    assert spec["rules"][0] == {"to": [{"operation": {"paths": ["/rest/*"]}}],
                                "when": [{"key": "request.headers[authorization]",
                                          "values": ["*"]}]}
    assert spec["rules"][1] == {"when": [{"key": "request.headers[contextuser]",
                                          "values": ["*"]}]}


def test_istio_policy_follows_context_path(helm: Any) -> None:
    r = helm.render(CHART, {"config": {"auth": {"context_path": "/jira"}},
                            "istio": {"authorizationPolicy": {"enabled": True}}})
    ap = r.find("AuthorizationPolicy", "jira-authz")
    assert ap["spec"]["rules"][0]["to"][0]["operation"]["paths"] == ["/jira/rest/*"]


# --- Kubernetes schemas ---------------------------------------------------------------------------


def _validate_core(rendered: Any) -> list[str]:
    """kubernetes-validate (strict: unknown fields refused) on every built-in kind; returns the
    CRD kinds it has no schema for (checked by the dedicated tests above)."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate as kv
    from kubernetes_validate.utils import latest_version

    skipped = []
    for m in rendered.manifests + rendered.hooks:
        try:
            kv.validate(m, latest_version(), strict=True)
        except kv.SchemaNotFoundError:
            skipped.append(m["kind"])
        except kv.ValidationError as e:
            pytest.fail(f"{m['kind']}/{m['metadata']['name']}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")
    return skipped


@pytest.mark.parametrize("which", ["default", *EXAMPLE_IDS])
def test_rendered_manifests_validate_against_kubernetes_schemas(
    which: str, rendered_default: Any, rendered_examples: dict[str, Any]
) -> None:
    rendered = rendered_default if which == "default" else rendered_examples[which]
    skipped = _validate_core(rendered)
    assert set(skipped) <= {"ServiceMonitor", "PrometheusRule", "AuthorizationPolicy"}


def test_kubernetes_validate_is_strict() -> None:
    """The validation above would catch a misspelt field."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate as kv
    from kubernetes_validate.utils import latest_version

    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"prots": [{"port": 1}]}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, latest_version(), strict=True)


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert version and chart["appVersion"] == version.group(1)
    assert chart["apiVersion"] == "v2" and chart["kubeVersion"]
