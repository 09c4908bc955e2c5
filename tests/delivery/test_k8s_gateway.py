"""The chart's Envoy gateway config: real `envoy --mode validate`, and the same security settings as
deploy/envoy/gateway.yaml (the file the local stack and the end-to-end tests run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import envoy_bridge
import pytest
import yaml
from conftest import CHART, ROOT

from authz.stack import envoy_config

DEPLOY_GATEWAY = ROOT / "deploy" / "envoy" / "gateway.yaml"
PLAIN_GATEWAY = ROOT / "deploy" / "kubernetes" / "gateway.yaml"
PLAIN_AUTHZ = ROOT / "deploy" / "kubernetes" / "authz.yaml"
HCM = "envoy.filters.network.http_connection_manager"
HEADLESS = "jira-authz-headless.jira-authz.svc.cluster.local"


def _gateway_config(helm: Any, values: dict) -> str:
    values = dict(values)
    top: dict[str, Any] = {"workers": values.pop("__workers")} if "__workers" in values else {}
    if "__hops" in values:
        top["config"] = {"client_ip": {"xff_trusted_hops": values.pop("__hops")}}
    rendered = helm.render(CHART, {"gateway": {"enabled": True, **values}, **top})
    return rendered.find("ConfigMap", "-gateway")["data"]["envoy.yaml"]


def _envoy_validate(envoy_bin: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    return subprocess.run(
        [envoy_bin, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True, text=True, timeout=60, check=False,
    )


GATEWAY_VALUES = {
    "defaults": {},
    "three workers per pod": {"__workers": 3},
    "body routes, LB in front, custom timeout": {
        "bodyRoutes": ["/rest/api/2/issue", "/jira/rest/api/2/search"],
        "xffNumTrustedHops": 1, "__hops": 1, "checkTimeout": "0.25s",
        "maxRequestBodyBytes": 1048576,
        "jira": {"host": "jira.atlassian.svc.cluster.local", "port": 8090}, "listenPort": 10000,
    },
}


@pytest.mark.parametrize("values", GATEWAY_VALUES.values(), ids=GATEWAY_VALUES.keys())
def test_rendered_gateway_config_passes_envoy_validate(
    helm: Any, envoy_bin: str, values: dict, tmp_path: Path
) -> None:
    text = _gateway_config(helm, values)
    proc = _envoy_validate(envoy_bin, text, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OK" in proc.stdout + proc.stderr
    # Whatever the values, the Check goes through the bridge to one port per worker.
    envoy_bridge.assert_bridged(yaml.safe_load(text), host=HEADLESS,
                                ports=envoy_bridge.worker_ports(values.get("__workers", 1)))


def test_envoy_validate_rejects_a_broken_config(
    helm: Any, envoy_bin: str, tmp_path: Path
) -> None:
    """The validation above is meaningful: a misspelt field fails it."""
    text = _gateway_config(helm, {}).replace("failure_mode_allow:", "failure_mode_alow:")
    assert _envoy_validate(envoy_bin, text, tmp_path).returncode != 0


def test_contradicting_client_ip_settings_refused(helm: Any) -> None:
    """Issue 13: Envoy's trusted hops and jira-authz's are one number; the chart refuses two."""
    from helmtool import HelmError

    with pytest.raises(HelmError, match="must be the same number"):
        _gateway_config(helm, {"xffNumTrustedHops": 1})
    with pytest.raises(HelmError, match="must be the same number"):
        _gateway_config(helm, {"__hops": 2})
    cfg = yaml.safe_load(_gateway_config(helm, {"xffNumTrustedHops": 2, "__hops": 2}))
    assert _hcm(cfg)["xff_num_trusted_hops"] == 2


def test_plain_manifests_client_ip_consistent() -> None:
    from authz.stack.envoy_config import client_ip_conflict

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "gateway.yaml").read_text()))
    (cm,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    envoy = yaml.safe_load(cm["data"]["envoy.yaml"])
    authz_docs = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "authz.yaml").read_text())
    (acm,) = [d for d in authz_docs if d and d["kind"] == "ConfigMap"
              and "config.yaml" in d.get("data", {})]
    client_ip = yaml.safe_load(acm["data"]["config.yaml"]).get("client_ip", {})
    assert client_ip_conflict(envoy, client_ip.get("xff_trusted_hops", 0),
                              client_ip.get("envoy_appends_peer", True)) is None
    assert client_ip_conflict(envoy, 1) is not None


def _plain_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _plain_gateway_envoy() -> str:
    (cm,) = [d for d in _plain_docs(PLAIN_GATEWAY) if d["kind"] == "ConfigMap"]
    return str(cm["data"]["envoy.yaml"])


def test_plain_manifest_gateway_config_passes_envoy_validate(
    envoy_bin: str, tmp_path: Path
) -> None:
    proc = _envoy_validate(envoy_bin, _plain_gateway_envoy(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_plain_manifests_bridge_the_check_to_port_9291() -> None:
    """deploy/kubernetes: the gateway's Envoy calls the HTTP/1.1 Check port, and the authz
    Deployment, both Services and the NetworkPolicy expose it, the server listens on it."""
    envoy_bridge.assert_bridged(yaml.safe_load(_plain_gateway_envoy()), host=HEADLESS,
                                ports=[9291])
    docs = _plain_docs(PLAIN_AUTHZ)
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "http-check", "containerPort": 9291, "protocol": "TCP"} in c["ports"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name in ("jira-authz", "jira-authz-headless"):
        (port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == "http-check"]
        assert (port["port"], port["targetPort"]) == (9291, "http-check"), name
    (np,) = [d for d in docs if d["kind"] == "NetworkPolicy"
             and d["metadata"]["name"] == "jira-authz"]
    (rule,) = [r for r in np["spec"]["ingress"]
               if {"port": "grpc-check", "protocol": "TCP"} in r["ports"]]
    assert {"port": "http-check", "protocol": "TCP"} in rule["ports"]
    assert "gateway" in [p.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") for p in rule["from"]]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    assert yaml.safe_load(cm["data"]["config.yaml"])["listen"]["check_http1"] == "0.0.0.0:9291"


def _hcm(cfg: dict, listener: str = "jira") -> dict:
    (lst,) = [x for x in cfg["static_resources"]["listeners"] if x["name"] == listener]
    (f,) = [f for f in lst["filter_chains"][0]["filters"] if f["name"] == HCM]
    return f["typed_config"]


def _cluster(cfg: dict, name: str) -> dict:
    (c,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == name]
    return {k: v for k, v in c.items() if k != "load_assignment"}


def _routes(hcm: dict) -> list[dict]:
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


@pytest.fixture(scope="module")
def both(helm: Any) -> tuple[dict, dict]:
    if not DEPLOY_GATEWAY.exists():
        pytest.skip("deploy/envoy/gateway.yaml not in this checkout")
    return yaml.safe_load(_gateway_config(helm, {})), yaml.safe_load(DEPLOY_GATEWAY.read_text())


def test_hcm_security_settings_match_deploy_envoy(both: tuple[dict, dict]) -> None:
    chart, shipped = (_hcm(c) for c in both)
    for key, value in shipped.items():
        if key in ("access_log", "route_config", "http_filters"):
            continue
        assert chart.get(key) == value, key
    # The settings the URL limits rely on (ENVOY-NOTES, docs/product.md §6), spelt out.
    assert chart["normalize_path"] is True and chart["merge_slashes"] is True
    assert chart["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert chart["common_http_protocol_options"]["headers_with_underscores_action"] == (
        "REJECT_REQUEST")


def test_ext_authz_filter_matches_deploy_envoy(both: tuple[dict, dict]) -> None:
    chart, shipped = (_hcm(c) for c in both)
    names = [f["name"] for f in chart["http_filters"]]
    assert names == [f["name"] for f in shipped["http_filters"]]
    ext_authz = "envoy.filters.http.ext_authz"
    (c_authz,) = [f for f in chart["http_filters"] if f["name"] == ext_authz]
    (s_authz,) = [f for f in shipped["http_filters"] if f["name"] == ext_authz]
    assert c_authz == s_authz
    tc = c_authz["typed_config"]
    assert tc["failure_mode_allow"] is False
    assert tc["status_on_error"] == {"code": "ServiceUnavailable"}
    assert tc["grpc_service"]["timeout"] == "0.5s"


def test_routes_match_deploy_envoy(both: tuple[dict, dict]) -> None:
    chart, shipped = (_routes(_hcm(c)) for c in both)
    # The `;` route answers 400 without a Check, before anything else.
    assert chart[0] == shipped[0]
    assert chart[0]["match"] == {"safe_regex": {"regex": ".*;.*"}}
    assert chart[0]["direct_response"]["status"] == 400
    assert chart[0]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert chart[-1] == shipped[-1]


def test_clusters_match_deploy_envoy(both: tuple[dict, dict]) -> None:
    chart, shipped = both
    for name in ("jira", "jira_authz", envoy_config.CHECK_CLUSTER):
        assert _cluster(chart, name) == _cluster(shipped, name), name
    # ext_authz's cluster ends in the bridge listener in both, to the letter.
    (c_grpc,) = [c for c in chart["static_resources"]["clusters"] if c["name"] == "jira_authz"]
    (s_grpc,) = [c for c in shipped["static_resources"]["clusters"] if c["name"] == "jira_authz"]
    assert c_grpc == s_grpc
    authz = _cluster(chart, envoy_config.CHECK_CLUSTER)
    # Balancing over every pod: headless Service resolved by STRICT_DNS, round robin.
    assert authz["type"] == "STRICT_DNS" and authz["lb_policy"] == "ROUND_ROBIN"
    (ep,) = next(c for c in chart["static_resources"]["clusters"]
                 if c["name"] == envoy_config.CHECK_CLUSTER)["load_assignment"]["endpoints"][0][
                     "lb_endpoints"]
    assert ep["endpoint"]["address"]["socket_address"] == {"address": HEADLESS, "port_value": 9291}
    assert chart.get("overload_manager") == shipped.get("overload_manager")
    assert chart["admin"] == shipped["admin"]  # Envoy's admin on 127.0.0.1 only


def test_bridge_matches_deploy_envoy(both: tuple[dict, dict]) -> None:
    """The bridge listener and its bootstrap extension are deploy/envoy/gateway.yaml's, and both
    files route only the Check, as the server's content type, to the HTTP/1.1 ports."""
    chart, shipped = both
    bridge = envoy_config.BRIDGE_LISTENER
    assert [x for x in chart["static_resources"]["listeners"] if x["name"] == bridge] == [
        x for x in shipped["static_resources"]["listeners"] if x["name"] == bridge]
    assert chart["bootstrap_extensions"] == shipped["bootstrap_extensions"]
    envoy_bridge.assert_bridged(chart, host=HEADLESS, ports=[9291])
    envoy_bridge.assert_bridged(shipped, host="jira-authz", ports=[9291])


def test_admin_api_is_never_routed(both: tuple[dict, dict]) -> None:
    chart, _ = both
    text = yaml.safe_dump(chart)
    assert "9190" not in text
    ops = _routes(_hcm(chart, "ops"))
    # The ops listener exposes Prometheus stats only, never other Envoy admin paths.
    assert [r["match"] for r in ops] == [{"path": "/stats/prometheus"}]


def test_body_routes_send_the_body_with_the_check(helm: Any) -> None:
    cfg = yaml.safe_load(_gateway_config(helm, {"bodyRoutes": ["/rest/api/2/issue"]}))
    routes = _routes(_hcm(cfg))
    assert [r["name"] for r in routes] == ["reject-path-parameters", "no-credentials",
                                           "jira-attachments", "with-body-0", "jira"]
    (authz,) = [f for f in _hcm(cfg)["http_filters"] if f["name"].endswith("ext_authz")]
    # Filter level: pack_as_bytes is read only there; partial instead of 413 for size.
    assert authz["typed_config"]["with_request_body"] == {
        "max_request_bytes": 65536, "allow_partial_message": True, "pack_as_bytes": True}
    assert "typed_per_filter_config" not in routes[3]  # the body route inherits it
    for r in (routes[2], routes[4]):  # attachments and everything else: never buffered
        settings = r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        assert settings["check_settings"] == {"disable_request_body_buffering": True}


def test_gateway_image_is_the_validated_envoy_version(envoy_bin: str) -> None:
    """The gateway runs the Envoy release its config is validated with here."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pinned = chart["annotations"]["jira-authz/envoy-version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["gateway"]["image"]["tag"] == f"v{pinned}"
    out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert f"/{pinned}/" in out, out


def test_gateway_command_line_is_accepted_by_envoy(
    helm: Any, envoy_bin: str, tmp_path: Path
) -> None:
    """The Deployment's own Envoy flags (log format, drain, hot restart) with its config."""
    rendered = helm.render(CHART, {"gateway": {"enabled": True}})
    (c,) = rendered.find("Deployment", "-gateway")["spec"]["template"]["spec"]["containers"]
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    args = [str(config) if a == "/etc/envoy/envoy.yaml" else a for a in c["args"]]
    assert c["command"] == ["envoy"] and "--disable-hot-restart" in args
    proc = subprocess.run([envoy_bin, "--mode", "validate", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _http1_names(workers: int) -> list[str]:
    return ["http-check", *(f"http-check-{i}" for i in range(1, workers))]


def test_workers_are_all_endpoints_ports_services_and_policy(helm: Any) -> None:
    """`workers: 3`: each pod runs three servers on 9191..9193 (gRPC) and 9291..9293 (HTTP/1.1),
    and everything that must reach them lists all of them, so Envoy balances Checks over
    pods x processes (issue 5) — through the bridge, on the HTTP/1.1 ports (issue 15)."""
    r = helm.render(CHART, {"gateway": {"enabled": True}, "workers": 3})
    (c,) = r.find("Deployment", "jira-authz")["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--config", "/etc/jira-authz/config.yaml", "--workers", "3"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-check": 9191, "grpc-check-1": 9192, "grpc-check-2": 9193,
                     "http-check": 9291, "http-check-1": 9292, "http-check-2": 9293,
                     "grpc-admin": 9190, "http-metrics": 9090}
    for svc in ("jira-authz", "jira-authz-headless"):
        got = {p["name"]: p["port"] for p in r.find("Service", svc)["spec"]["ports"]}
        assert {got[n] for n in ("grpc-check", "grpc-check-1", "grpc-check-2")} == {
            9191, 9192, 9193}, svc
        assert [got[n] for n in _http1_names(3)] == [9291, 9292, 9293], svc
    policy = r.find("NetworkPolicy", "jira-authz")
    check_rule = policy["spec"]["ingress"][0]
    assert [p["port"] for p in check_rule["ports"]] == [
        "grpc-check", "grpc-check-1", "grpc-check-2", *_http1_names(3)]
    cfg = yaml.safe_load(r.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    envoy_bridge.assert_bridged(cfg, host=HEADLESS, ports=[9291, 9292, 9293])
    authz = envoy_bridge.clusters(cfg)[envoy_config.CHECK_CLUSTER]
    assert authz["type"] == "STRICT_DNS" and authz["lb_policy"] == "ROUND_ROBIN"


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_http1_check_port_per_worker(helm: Any, workers: int) -> None:
    """`workers: N`: the gateway's jira_authz_http1 lists 9291..9291+N-1 and nothing else, and
    the container, both Services and the Check rule of the NetworkPolicy carry exactly those
    ports; the server's config listens on the first (worker i adds i)."""
    r = helm.render(CHART, {"gateway": {"enabled": True}, "workers": workers})
    want = envoy_bridge.worker_ports(workers)
    names = _http1_names(workers)
    cfg = yaml.safe_load(r.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    envoy_bridge.assert_bridged(cfg, host=HEADLESS, ports=want)
    (c,) = r.find("Deployment", "jira-authz")["spec"]["template"]["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]
            if p["name"].startswith("http-check")] == list(zip(names, want, strict=True))
    for svc in ("jira-authz", "jira-authz-headless"):
        got = [(p["name"], p["port"], p["targetPort"]) for p in
               r.find("Service", svc)["spec"]["ports"] if p["name"].startswith("http-check")]
        assert got == list(zip(names, want, names, strict=True)), svc
    rule = r.find("NetworkPolicy", "jira-authz")["spec"]["ingress"][0]
    assert [p["port"] for p in rule["ports"] if p["port"].startswith("http-check")] == names
    server_cfg = yaml.safe_load(r.find("ConfigMap", "jira-authz")["data"]["config.yaml"])
    assert server_cfg["listen"]["check_http1"] == "0.0.0.0:9291"


def test_http1_check_port_follows_the_value(helm: Any) -> None:
    r = helm.render(CHART, {"gateway": {"enabled": True}, "workers": 2,
                            "service": {"checkHttp1Port": 10291}})
    cfg = yaml.safe_load(r.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    envoy_bridge.assert_bridged(cfg, host=HEADLESS, ports=[10291, 10292])
    server_cfg = yaml.safe_load(r.find("ConfigMap", "jira-authz")["data"]["config.yaml"])
    assert server_cfg["listen"]["check_http1"] == "0.0.0.0:10291"


@pytest.mark.parametrize(("values", "message"), [
    ({"workers": 2, "service": {"adminPort": 9192}}, "service.adminPort or service.metricsPort"),
    ({"workers": 2, "istio": {"authorizationPolicy": {"enabled": True}}}, "one port only"),
    ({"workers": 3, "service": {"checkHttp1Port": 9193}}, "move service.checkHttp1Port"),
    ({"workers": 2, "service": {"checkHttp1Port": 9089}}, "move service.checkHttp1Port"),
    ({"service": {"checkHttp1Port": 9180}, "console": {"enabled": True, "jiraUrl": "http://j"}},
     "move service.checkHttp1Port"),
], ids=["admin port inside the worker ports", "istio", "HTTP/1.1 ports over the gRPC ports",
        "HTTP/1.1 ports over the metrics port", "HTTP/1.1 port on the console port"])
def test_workers_that_cannot_work_are_refused(helm: Any, values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        helm.render(CHART, values)


NO_CREDENTIALS_VALUES = {
    "defaults": {},
    "deny, own realm and identity header": {"auth": {"unauthenticated": "deny", "realm": "Corp"},
                                            "identity": {"header": "X-Run-As"}},
    "pass, own identity header": {"identity": {"header": "X-Run-As"}},
}


@pytest.mark.parametrize("config", NO_CREDENTIALS_VALUES.values(), ids=NO_CREDENTIALS_VALUES.keys())
def test_no_credentials_route_says_what_the_server_would(helm: Any, config: dict) -> None:
    """The chart's route for requests without Authorization (no Check) and the Check's header
    list equal the shipped gateway set to the same server configuration."""
    from authz.stack import envoy_config

    rendered = helm.render(CHART, {"gateway": {"enabled": True}, "config": config})
    chart = yaml.safe_load(rendered.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    auth, identity = config.get("auth", {}), config.get("identity", {})
    expected = envoy_config.for_server(
        yaml.safe_load(DEPLOY_GATEWAY.read_text()),
        identity_header=identity.get("header", "contextUser"),
        deny_unauthenticated=auth.get("unauthenticated") == "deny",
        realm=auth.get("realm", "Jira"))
    (route,) = [r for r in _routes(_hcm(chart)) if r["name"] == "no-credentials"]
    (want,) = [r for r in _routes(_hcm(expected)) if r["name"] == "no-credentials"]
    assert route == want
    ext_authz = "envoy.filters.http.ext_authz"
    (c_authz,) = [f for f in _hcm(chart)["http_filters"] if f["name"] == ext_authz]
    (e_authz,) = [f for f in _hcm(expected)["http_filters"] if f["name"] == ext_authz]
    assert c_authz == e_authz
