"""The chart's token-lifecycle parts (issue 17): alert rules checked and unit-tested with
Prometheus' own ``promtool``, dashboard panels on real series, the webhook Secret mount."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHART
from test_k8s_chart import _exported_metric_names, _referenced

LIFECYCLE_ALERTS = {
    "JiraAuthzTokensExpiringSoon": "jira_authz_tokens_expiring_soon",
    "JiraAuthzStaleTokens": "jira_authz_tokens_unused",
    "JiraAuthzLifecycleMetricsStale": "jira_authz_lifecycle_scan_timestamp_seconds",
    "JiraAuthzWebhookDeliveryFailing": "jira_authz_webhook_deliveries_total",
    "JiraAuthzWebhookEventsDropped": "jira_authz_webhook_dropped_total",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed: it ships in Debian's `prometheus` package "
                    "(apt-get install --no-install-recommends prometheus); there is no PyPI "
                    "package of it. The rules are still checked structurally by the other tests.")
    return found


@pytest.fixture(scope="module")
def rule(rendered_examples: dict[str, Any]) -> dict[str, Any]:
    return rendered_examples["production"].find("PrometheusRule", "jira-authz")


def test_lifecycle_alerts_use_real_series_and_max(rule: dict[str, Any]) -> None:
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for name, metric in LIFECYCLE_ALERTS.items():
        expr = alerts[name]["expr"]
        assert metric in expr, name
        assert 'namespace="jira-authz",service="jira-authz"' in expr, name
        assert alerts[name]["labels"]["severity"] in ("warning", "critical")
    # Store-wide gauges are exposed by every replica alike: summing would multiply them.
    for name in ("JiraAuthzTokensExpiringSoon", "JiraAuthzStaleTokens"):
        assert alerts[name]["expr"].startswith("max(")
    assert "> 20" in alerts["JiraAuthzStaleTokens"]["expr"]  # values default
    assert "{{ $value }}" in alerts["JiraAuthzStaleTokens"]["annotations"]["summary"]
    unknown = _referenced(json.dumps(rule)) - _exported_metric_names()
    assert not unknown, unknown


def test_promtool_checks_and_unit_tests_the_rules(rule: dict[str, Any], tmp_path: Path) -> None:
    promtool = _promtool()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout

    sel = 'namespace="jira-authz",service="jira-authz"'
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # Two replicas expose the same store-wide count: 3, not 6.
                {"series": f'jira_authz_tokens_expiring_soon{{{sel},pod="a"}}',
                 "values": "3x120"},
                {"series": f'jira_authz_tokens_expiring_soon{{{sel},pod="b"}}',
                 "values": "3x120"},
                {"series": f'jira_authz_tokens_unused{{{sel},pod="a"}}', "values": "25x420"},
                {"series": f'jira_authz_tokens_unused{{{sel},pod="b"}}', "values": "25x420"},
                {"series": f'jira_authz_webhook_dropped_total{{{sel},pod="a"}}',
                 "values": "0 0 0 4 4 4 4"},
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": "JiraAuthzTokensExpiringSoon",
                 "exp_alerts": []},  # "for: 1h" not reached yet
                {"eval_time": "90m", "alertname": "JiraAuthzTokensExpiringSoon",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                     "summary": "3 token(s) expire within lifecycle.expiring_window",
                     "description": rule_annotation(rule, "JiraAuthzTokensExpiringSoon",
                                                    "description")}}]},
                {"eval_time": "7h", "alertname": "JiraAuthzStaleTokens",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                     "summary": "25 usable token(s) have not been used for "
                                "lifecycle.unused_after",
                     "description": rule_annotation(rule, "JiraAuthzStaleTokens",
                                                    "description")}}]},
                {"eval_time": "5m", "alertname": "JiraAuthzWebhookEventsDropped",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"}, "exp_annotations": {
                     "summary": rule_annotation(rule, "JiraAuthzWebhookEventsDropped",
                                                "summary")}}]},
            ],
        }],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    r = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def rule_annotation(rule: dict[str, Any], alert: str, key: str) -> str:
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            if r.get("alert") == alert:
                return str(r["annotations"][key])
    raise KeyError(alert)


def test_dashboard_has_lifecycle_panels(rendered_default: Any) -> None:
    dash = json.loads(rendered_default.find("ConfigMap", "-dashboard")["data"]["jira-authz.json"])
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dash["panels"]}
    assert "max(jira_authz_tokens_expiring_soon" in exprs["Tokens expiring soon"]
    assert "max(jira_authz_tokens_unused" in exprs["Stale tokens (unused)"]
    assert "max by (state) (jira_authz_tokens{" in exprs["Tokens by state"]
    assert "jira_authz_webhook_deliveries_total" in exprs["Webhook deliveries"]
    assert "jira_authz_webhook_queue_depth" in exprs["Webhook queue"]
    boxes = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]]
    assert len(boxes) == len(set(boxes))  # no two panels on the same spot


def test_webhooks_mount_the_signing_secret(helm: Any, tmp_path: Path) -> None:
    from authz import config as service_config

    r = helm.render(CHART, {"webhooks": {"url": "https://hooks.example.com/jira-authz",
                                         "existingSecret": "jira-authz-webhooks"},
                            "config": {"lifecycle": {"expiring_window": "7d"},
                                       "policy": {"allow_unbound": False,
                                                  "max_active_tokens_per_user": 5}}})
    text = r.find("ConfigMap", "jira-authz")["data"]["config.yaml"]
    cfg = yaml.safe_load(text)
    assert cfg["webhooks"] == {"url": "https://hooks.example.com/jira-authz",
                               "secret_file": "/etc/jira-authz/webhooks/secret"}
    (tmp_path / "config.yaml").write_text(text)
    loaded = service_config.load_config(tmp_path / "config.yaml", environ={})
    assert loaded.lifecycle.expiring_window_seconds == 7 * 86400
    assert loaded.policy.max_active_tokens_per_user == 5
    pod = r.find("Deployment", "jira-authz")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["webhooks"]["secret"]["secretName"] == "jira-authz-webhooks"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["webhooks"]["mountPath"] == "/etc/jira-authz/webhooks"
    assert mounts["webhooks"]["readOnly"] is True
    with pytest.raises(helm.HelmError, match=r"webhooks\.existingSecret"):
        helm.render(CHART, {"webhooks": {"url": "https://hooks.example.com/x"}})
    with pytest.raises(helm.HelmError, match="expiring_window"):
        helm.render(CHART, {"config": {"lifecycle": {"expiring_window": "14"}}})
