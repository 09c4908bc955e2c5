"""`--workers 2` behind the shipped sidecar Envoy config (issue 5): both processes decide,
Envoy balances per Check over the worker ports, and each worker sees revocations."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.stack import envoy_config
from authz.stack.local import LocalStack
from authz.stack.processes import wait_until

pytestmark = pytest.mark.e2e


def _checks_per_worker(stack: LocalStack) -> dict[str, float]:
    url = f"http://{stack.metrics_addr}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:  # 127.0.0.1 only
        text = resp.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(
        r'^jira_authz_check_duration_seconds_count\{[^}]*worker="(\d+)"[^}]*\} (\S+)$',
        text, re.M,
    ):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def test_envoy_gets_one_endpoint_per_worker_port(workers_stack: LocalStack) -> None:
    cfg = yaml.safe_load(Path(workers_stack.envoy_config_path).read_text())
    (cluster,) = [c for c in cfg["static_resources"]["clusters"]
                  if c["name"] == envoy_config.CHECK_CLUSTER]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    # The bridge's HTTP/1.1 cluster lists every worker's HTTP/1.1 Check port, in order.
    assert ports == workers_stack.http1_ports
    assert workers_stack.http1_ports == [workers_stack.http1_port, workers_stack.http1_port + 1]


def test_checks_spread_over_both_workers_and_both_decide(
    workers_stack: LocalStack, api: Any
) -> None:
    tok = api.create_token(workers_stack, "--label", "spread", "--user", "alice")
    auth = [("Authorization", api.basic("alice", tok["secret"]))]
    before = _checks_per_worker(workers_stack)
    statuses = [api.send(workers_stack, f"/rest/api/2/issue/W-{i}", auth).status
                for i in range(60)]
    assert statuses == [200] * 60
    after = _checks_per_worker(workers_stack)
    delta = {w: after.get(w, 0) - before.get(w, 0) for w in ("0", "1")}
    assert sum(delta.values()) >= 60
    # Round robin per Check (per Envoy worker thread): far from the 0/100 of SO_REUSEPORT.
    assert min(delta.values()) >= 0.3 * sum(delta.values()), delta

    api.revoke_token(workers_stack, tok["id"])

    def all_denied() -> bool:
        return all(api.send(workers_stack, f"/rest/api/2/issue/W-{i}", auth).status == 401
                   for i in range(8))

    wait_until("revocation seen by both workers", all_denied, timeout=5)
