"""``jira-authz serve --workers N``: one server process per core, each on its own port.

Why processes, and why one port each: a Python process decides on one core (the GIL), so a
multi-core pod needs several processes. ``SO_REUSEPORT`` on one shared port spreads
*connections*, not requests, and Envoy keeps only a few long-lived HTTP/2 connections to an
ext_authz cluster: measured, one process got 74-100 % of the Checks. Worker ``i`` therefore
listens on ``check port + i`` and Envoy's ``jira_authz`` cluster lists every port as an
endpoint, so its round-robin spreads individual Checks evenly (see docs/performance.md).

The supervisor (this module's ``run``) owns no request path. It

* starts the workers (``python -m authz.workers --worker I``) with per-worker listen
  addresses as ``JIRA_AUTHZ_LISTEN_*`` overrides: worker 0 alone serves the admin API;
* restarts a worker that exits, with a back-off if it keeps dying;
* forwards SIGTERM/SIGINT to every worker (each drains its in-flight Checks and flushes its
  audit buffer) and kills what is left after ``stop_timeout``;
* serves the one Prometheus ``/metrics`` endpoint of the pod on ``listen.metrics``: it scrapes
  each worker's private endpoint (127.0.0.1, kernel-chosen port) and re-labels every sample
  with ``worker="I"``. This keeps any collector a worker has working (Prometheus' multiprocess
  mode does not support custom collectors and needs per-metric gauge modes) and keeps the
  scrape configuration of a single-process pod unchanged.

Workers die with the supervisor (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no
orphan holding a port.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from authz.config import ENV_PREFIX, Config, load_config
from authz.domain.network import split_hostport

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.1
_BACKOFF_START = 0.5
_BACKOFF_CAP = 10.0
_STABLE_SECONDS = 30.0
"""A worker that ran this long before dying is restarted without back-off."""
_SCRAPE_TIMEOUT = 2.0


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The container's CPU limit in cores (cgroup v2 ``cpu.max``, else v1 CFS quota), or None
    when unlimited or unreadable. Kubernetes' ``resources.limits.cpu`` lands here."""
    try:
        quota, period = Path(root, "cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text(encoding="ascii"))
        per = int(Path(root, "cpu", "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return q / per if q > 0 and per > 0 else None


def default_workers(root: str = "/sys/fs/cgroup") -> int:
    """One process per core this process may use: the CPUs it may run on
    (``sched_getaffinity``: cpusets, taskset), capped by the cgroup CPU limit rounded up."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def worker_check_addresses(check: str, workers: int, key: str = "listen.check") -> list[str]:
    """``host:port`` of each worker: consecutive ports from the configured check port."""
    host, port = split_hostport(check)
    if port == 0:
        raise ValueError(f"{key}: --workers needs a fixed port, not 0")
    if port + workers - 1 > 65535:
        raise ValueError(f"{key}: ports {port}..{port + workers - 1} exceed 65535")
    return [f"{host}:{port + i}" for i in range(workers)]


def check_no_port_clash(cfg: Config, workers: int) -> None:
    """The workers' consecutive check ports (9191, 9192, ... by default; the HTTP/1.1 ones from
    9291) must not take each other's or the admin or metrics port: refuse at start, naming the
    keys."""
    ranges = [("listen.check", cfg.listen.check)]
    if cfg.listen.check_http1:
        ranges.append(("listen.check_http1", cfg.listen.check_http1))
    singles = [(k, a) for k, a in (("listen.admin", cfg.listen.admin),
                                   ("listen.metrics", cfg.listen.metrics)) if a]
    for i, (rkey, raddr) in enumerate(ranges):
        _, first = split_hostport(raddr)
        last = first + workers - 1
        for key, addr, width in ([(k, a, 1) for k, a in singles]
                                 + [(k, a, workers) for k, a in ranges[:i]]):
            port = split_hostport(addr)[1]
            if port <= last and first <= port + width - 1:
                raise ValueError(
                    f"{key} {addr} overlaps the worker ports of {rkey} ({first}..{last}):"
                    f" move one of them so every worker has its own ports"
                )


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    index: int
    check: str
    metrics: str
    """Private 127.0.0.1 metrics address, or "" when metrics are off."""
    admin: str
    check_http1: str = ""
    """This worker's HTTP/1.1 Check address, or "" when that port is off."""
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = _BACKOFF_START
    restart_at: float | None = None

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env[f"{ENV_PREFIX}LISTEN_CHECK"] = self.check
        env[f"{ENV_PREFIX}LISTEN_CHECK_HTTP1"] = self.check_http1
        env[f"{ENV_PREFIX}LISTEN_METRICS"] = self.metrics
        env[f"{ENV_PREFIX}LISTEN_ADMIN"] = self.admin
        if self.index > 0:  # worker 0 alone serves the console (its sessions live there)
            env[f"{ENV_PREFIX}CONSOLE_LISTEN"] = ""
        return env


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    cfg: Config
    workers: int
    worker_argv: Sequence[str] = ()
    """Extra arguments for each ``python -m authz.workers`` (config file, redis url, level)."""
    stop_timeout: float = 15.0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    slots: list[Worker] = field(default_factory=list)
    _stopping: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("--workers must be >= 1")
        check_no_port_clash(self.cfg, self.workers)
        checks = worker_check_addresses(self.cfg.listen.check, self.workers)
        http1 = (worker_check_addresses(self.cfg.listen.check_http1, self.workers,
                                        "listen.check_http1")
                 if self.cfg.listen.check_http1 else [""] * self.workers)
        metrics_on = bool(self.cfg.listen.metrics)
        self.slots = [
            Worker(
                index=i,
                check=checks[i],
                check_http1=http1[i],
                metrics=f"127.0.0.1:{_free_local_port()}" if metrics_on else "",
                admin=self.cfg.listen.admin if i == 0 else "",
            )
            for i in range(self.workers)
        ]

    # --- lifecycle ------------------------------------------------------------------------

    def argv(self, w: Worker) -> list[str]:
        return [sys.executable, "-m", "authz.workers", "--worker", str(w.index),
                *self.worker_argv]

    def spawn(self, w: Worker) -> None:
        # Own session: a terminal's Ctrl-C reaches the supervisor only, which stops workers
        # in order instead of racing them.
        w.proc = subprocess.Popen(self.argv(w), env=w.env(self.env), stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        w.started_at = time.monotonic()
        w.restart_at = None
        log.info("worker started", extra={"worker": w.index, "pid": w.proc.pid,
                                          "listen": w.check})

    def start(self) -> None:
        for w in self.slots:
            self.spawn(w)

    def poll(self, now: float | None = None) -> None:
        """Restart workers that exited (after their back-off); call periodically."""
        now = time.monotonic() if now is None else now
        for w in self.slots:
            if self._stopping:
                return
            if w.proc is not None and w.proc.poll() is not None:
                code = w.proc.returncode
                ran = now - w.started_at
                w.backoff = _BACKOFF_START if ran >= _STABLE_SECONDS else w.backoff
                w.restart_at = now + w.backoff
                log.warning("worker exited; restarting", extra={
                    "worker": w.index, "pid": w.proc.pid, "code": code,
                    "ran_seconds": round(ran, 1), "restart_in_seconds": w.backoff})
                w.backoff = min(w.backoff * 2, _BACKOFF_CAP)
                w.proc = None
            if w.proc is None and w.restart_at is not None and now >= w.restart_at:
                w.restarts += 1
                self.spawn(w)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Forward ``sig`` to every worker, wait up to ``stop_timeout``, then SIGKILL."""
        self._stopping = True
        live = [w.proc for w in self.slots if w.proc is not None and w.proc.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        deadline = time.monotonic() + self.stop_timeout
        for p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killing", extra={"pid": p.pid})
                p.kill()
                p.wait(timeout=5)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.slots if w.proc is not None and w.proc.poll() is None]


# --- metrics: one endpoint for the pod -----------------------------------------------------------


class WorkerMetricsCollector:
    """Scrapes every worker's private /metrics and adds a ``worker`` label to each sample."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterable[object]:
        from prometheus_client.core import GaugeMetricFamily, Metric
        from prometheus_client.parser import text_string_to_metric_families
        from prometheus_client.samples import Sample

        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("jira_authz_worker_up", "Worker answered the last scrape",
                               labels=["worker"])
        restarts = GaugeMetricFamily("jira_authz_worker_restarts",
                                     "Times the supervisor restarted this worker",
                                     labels=["worker"])
        for w in self.supervisor.slots:
            label = str(w.index)
            restarts.add_metric([label], w.restarts)
            try:
                url = f"http://{w.metrics}/metrics"
                with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT) as resp:
                    text = resp.read().decode("utf-8", "replace")
            except (OSError, ValueError):
                up.add_metric([label], 0)
                continue
            up.add_metric([label], 1)
            for fam in text_string_to_metric_families(text):
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type,
                                                    fam.unit)
                out.samples.extend(
                    Sample(s.name, {**s.labels, "worker": label}, s.value, s.timestamp,
                           s.exemplar)
                    for s in fam.samples
                )
        yield up
        yield restarts
        yield from merged.values()


def _serve_metrics(sup: Supervisor) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetricsCollector(sup))  # type: ignore[arg-type]
    host, port = split_hostport(sup.cfg.listen.metrics)
    start_http_server(port, addr=host, registry=registry)


# --- entry points ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def run(cfg: Config, workers: int, worker_argv: Sequence[str]) -> int:
    """The supervisor's main loop; returns when SIGTERM/SIGINT stopped every worker."""
    sup = Supervisor(cfg, workers, worker_argv, stop_timeout=cfg.server.grace_seconds + 5.0)
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    if cfg.listen.metrics:
        _serve_metrics(sup)
    sup.start()
    log.info("supervising workers", extra={"workers": workers,
                                           "listen": ",".join(w.check for w in sup.slots)})
    while True:
        time.sleep(_POLL_SECONDS)
        if received:
            break
        sup.poll()
    log.info("stopping workers", extra={"signal": received[0]})
    sup.stop(signal.SIGTERM)
    return 0


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies; exit if it already has."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        raise SystemExit(0)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """One worker: the ordinary single-process server, addresses from the environment."""
    p = argparse.ArgumentParser(prog="python -m authz.workers")
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--config")
    p.add_argument("--redis-url")
    p.add_argument("--log-level")
    p.add_argument("--event-loop", default="uvloop")
    args = p.parse_args(argv)
    _die_with_parent()

    from authz import event_loop, logs
    from authz.server import serve

    cfg = load_config(args.config)
    if args.redis_url:
        cfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=args.redis_url))
    logs.setup(args.log_level or cfg.log.level)
    logging.getLogger().handlers[0].addFilter(_WorkerTag(args.worker))
    event_loop.run(serve(cfg), args.event_loop)
    return 0


class _WorkerTag(logging.Filter):
    """Adds ``worker`` to every log line of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
        return True


if __name__ == "__main__":
    raise SystemExit(worker_main())
