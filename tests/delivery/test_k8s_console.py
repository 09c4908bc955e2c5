"""The web console in the chart: its port on the Deployment and Services, the NetworkPolicy
rule, the server config, and the gateway route (no Check, identity header removed) that
`envoy --mode validate` accepts and that matches deploy/envoy/gateway.yaml's route."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHART, ROOT

from authz.config import load_config

VALUES = {"gateway": {"enabled": True}, "console": {"enabled": True}}


def _routes(envoy: dict) -> list[dict]:
    (lst,) = [x for x in envoy["static_resources"]["listeners"] if x["name"] == "jira"]
    (f,) = [f for f in lst["filter_chains"][0]["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]
    return f["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def _console_route(envoy: dict) -> dict:
    (r,) = [r for r in _routes(envoy) if r["name"] == "jira-authz-console"]
    return r


@pytest.fixture(scope="module")
def rendered(helm: Any) -> Any:
    return helm.render(CHART, VALUES)


def test_console_is_off_by_default(helm: Any) -> None:
    r = helm.render(CHART, {"gateway": {"enabled": True}})
    envoy = yaml.safe_load(r.find("ConfigMap", "-gateway")["data"]["envoy.yaml"])
    assert not [x for x in _routes(envoy) if x["name"] == "jira-authz-console"]
    cfg = yaml.safe_load(r.find("ConfigMap", "jira-authz")["data"]["config.yaml"])
    assert "console" not in cfg


def test_console_port_config_and_policy(rendered: Any, tmp_path: Path) -> None:
    dep = rendered.find("Deployment", "jira-authz")
    ports = {p["name"]: p["containerPort"] for p in
             dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["http-console"] == 9180
    for svc in ("jira-authz", "jira-authz-headless"):
        names = [p["name"] for p in rendered.find("Service", svc)["spec"]["ports"]]
        assert "http-console" in names, svc
    assert "http-console" not in [p["name"] for p in
                                  rendered.find("Service", "-admin")["spec"]["ports"]]
    policy = rendered.find("NetworkPolicy", "jira-authz")
    (rule,) = [r for r in policy["spec"]["ingress"]
               if any(p["port"] == "http-console" for p in r["ports"])]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in rule["from"]] == ["gateway"]
    text = rendered.find("ConfigMap", "jira-authz")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = load_config(path, environ={})  # the server accepts what the chart renders
    assert cfg.console.listen == "0.0.0.0:9180"
    assert cfg.console.jira_url == "http://jira.jira.svc.cluster.local:8080"  # the gateway's Jira
    assert cfg.console.cookie_secure is True


def test_console_needs_a_jira_url_without_the_gateway(helm: Any) -> None:
    with pytest.raises(Exception, match=r"console\.jiraUrl"):
        helm.render(CHART, {"console": {"enabled": True}})
    r = helm.render(CHART, {"console": {"enabled": True, "jiraUrl": "http://jira:8080"}})
    cfg = yaml.safe_load(r.find("ConfigMap", "jira-authz")["data"]["config.yaml"])
    assert cfg["console"]["jira_url"] == "http://jira:8080"


def test_gateway_console_route(rendered: Any, envoy_bin: str, tmp_path: Path) -> None:
    text = rendered.find("ConfigMap", "-gateway")["data"]["envoy.yaml"]
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    proc = subprocess.run([envoy_bin, "--mode", "validate", "-c", str(path),
                           "--log-level", "warn"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chart = yaml.safe_load(text)
    shipped = yaml.safe_load((ROOT / "deploy" / "envoy" / "gateway.yaml").read_text())
    assert _console_route(chart) == _console_route(shipped)
    names = [r["name"] for r in _routes(chart)]
    assert names.index("reject-path-parameters") < names.index("jira-authz-console") < len(
        names) - 1
    (cluster,) = [c for c in chart["static_resources"]["clusters"]
                  if c["name"] == "jira_authz_console"]
    assert cluster["lb_policy"] == "RING_HASH"
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sock["socket_address"]["port_value"] == 9180
