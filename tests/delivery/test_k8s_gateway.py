"""The chart's Envoy gateway config: real `envoy --mode validate`, and the same security settings as
deploy/envoy/gateway.yaml (the file the local stack and the end-to-end tests run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHART, ROOT

DEPLOY_GATEWAY = ROOT / "deploy" / "envoy" / "gateway.yaml"
HCM = "envoy.filters.network.http_connection_manager"


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
    proc = _envoy_validate(envoy_bin, _gateway_config(helm, values), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OK" in proc.stdout + proc.stderr


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


def test_plain_manifest_gateway_config_passes_envoy_validate(
    envoy_bin: str, tmp_path: Path
) -> None:
    docs = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "gateway.yaml").read_text())
    (cm,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    proc = _envoy_validate(envoy_bin, cm["data"]["envoy.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


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
    for name in ("jira", "jira_authz"):
        assert _cluster(chart, name) == _cluster(shipped, name), name
    authz = _cluster(chart, "jira_authz")
    # Balancing over every pod: headless Service resolved by STRICT_DNS, round robin.
    assert authz["type"] == "STRICT_DNS" and authz["lb_policy"] == "ROUND_ROBIN"
    (ep,) = next(c for c in chart["static_resources"]["clusters"]
                 if c["name"] == "jira_authz")["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert ep["endpoint"]["address"]["socket_address"] == {
        "address": "jira-authz-headless.jira-authz.svc.cluster.local", "port_value": 9191}
    assert chart.get("overload_manager") == shipped.get("overload_manager")
    assert chart["admin"] == shipped["admin"]  # Envoy's admin on 127.0.0.1 only


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


def test_workers_are_all_endpoints_ports_services_and_policy(helm: Any) -> None:
    """`workers: 3`: each pod runs three servers on 9191..9193, and everything that must reach
    them lists all three, so Envoy balances Checks over pods x processes (issue 5)."""
    r = helm.render(CHART, {"gateway": {"enabled": True}, "workers": 3})
    (c,) = r.find("Deployment", "jira-authz")["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--config", "/etc/jira-authz/config.yaml", "--workers", "3"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-check": 9191, "grpc-check-1": 9192, "grpc-check-2": 9193,
                     "grpc-admin": 9190, "http-metrics": 9090}
    for svc in ("jira-authz", "jira-authz-headless"):
        got = {p["name"]: p["port"] for p in r.find("Service", svc)["spec"]["ports"]}
        assert {got[n] for n in ("grpc-check", "grpc-check-1", "grpc-check-2")} == {
            9191, 9192, 9193}, svc
    policy = r.find("NetworkPolicy", "jira-authz")
    check_rule = policy["spec"]["ingress"][0]
    assert [p["port"] for p in check_rule["ports"]] == ["grpc-check", "grpc-check-1",
                                                         "grpc-check-2"]
    cfg = yaml.safe_load(r.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    (authz,) = [x for x in cfg["static_resources"]["clusters"] if x["name"] == "jira_authz"]
    endpoints = authz["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [
        9191, 9192, 9193]
    assert authz["type"] == "STRICT_DNS" and authz["lb_policy"] == "ROUND_ROBIN"


@pytest.mark.parametrize(("values", "message"), [
    ({"workers": 2, "service": {"adminPort": 9192}}, "service.adminPort or service.metricsPort"),
    ({"workers": 2, "istio": {"authorizationPolicy": {"enabled": True}}}, "one port only"),
], ids=["admin port inside the worker ports", "istio"])
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
