"""--workers takes consecutive check ports: it must never silently take the admin port."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import load_config
from authz.workers import check_no_port_clash, worker_check_addresses


def test_consecutive_ports() -> None:
    assert worker_check_addresses("0.0.0.0:9191", 3) == [
        "0.0.0.0:9191", "0.0.0.0:9192", "0.0.0.0:9193"]


def test_default_ports_leave_room_for_workers() -> None:
    """Admin (9190) and metrics (9090) sit below the check port, so workers count upwards."""
    cfg = load_config(environ={})
    for n in (1, 2, 8, 64):
        check_no_port_clash(cfg, n)


def test_admin_port_inside_the_worker_ports_is_refused() -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_LISTEN_ADMIN": "127.0.0.1:9192"})
    check_no_port_clash(cfg, 1)
    with pytest.raises(ValueError, match=r"listen\.admin"):
        check_no_port_clash(cfg, 2)
    cfg = load_config(environ={"JIRA_AUTHZ_LISTEN_ADMIN": "127.0.0.1:9200"})
    check_no_port_clash(cfg, 4)
    with pytest.raises(ValueError, match=r"listen\.metrics"):
        check_no_port_clash(load_config(environ={
            "JIRA_AUTHZ_LISTEN_ADMIN": "127.0.0.1:9300",
            "JIRA_AUTHZ_LISTEN_METRICS": "0.0.0.0:9193"}), 4)


# --- every core by default (issue 15) ---------------------------------------------------------


def _cgroup(tmp_path: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> str:
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return str(tmp_path)


@pytest.mark.parametrize(("v2", "v1", "limit"), [
    ("max 100000\n", None, None),
    ("150000 100000\n", None, 1.5),
    ("50000 100000\n", None, 0.5),
    (None, ("200000", "100000"), 2.0),
    (None, ("-1", "100000"), None),
    (None, None, None),
    ("garbage\n", None, None),
])
def test_cgroup_cpu_limit(tmp_path: Path, v2: str | None, v1: tuple[str, str] | None,
                          limit: float | None) -> None:
    from authz.workers import cgroup_cpu_limit

    assert cgroup_cpu_limit(_cgroup(tmp_path, v2, v1)) == limit


def test_default_workers_is_cores_capped_by_the_cpu_limit(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import authz.workers as w

    monkeypatch.setattr(w.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert w.default_workers(str(tmp_path)) == 4  # no cgroup files: no limit
    for quota, expected in (("150000 100000", 2), ("50000 100000", 1), ("800000 100000", 4),
                            ("max 100000", 4)):
        d = tmp_path / quota.replace(" ", "_")
        d.mkdir()
        assert w.default_workers(_cgroup(d, quota)) == expected, quota


def test_serve_runs_every_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` without --workers (or with 0) supervises default_workers() processes; 1 serves
    in-process."""
    import authz.cli.main as cli
    import authz.server
    import authz.workers as w

    calls: list[object] = []
    monkeypatch.setattr(w, "default_workers", lambda: 3)
    monkeypatch.setattr(w, "run", lambda cfg, n, extra: calls.append(n) or 0)

    async def fake_serve(cfg: object) -> None:
        calls.append("in-process")

    monkeypatch.setattr(authz.server, "serve", fake_serve)
    for argv, expected in ((["serve"], 3), (["serve", "--workers", "0"], 3),
                           (["serve", "--workers", "2"], 2),
                           (["serve", "--workers", "1"], "in-process")):
        calls.clear()
        assert cli.main(argv) == 0
        assert calls == [expected], argv


@pytest.mark.parametrize(("http1", "workers", "clash"), [
    ("0.0.0.0:9291", 4, False),   # the defaults: 9191.. and 9291.. never meet below 100 workers
    ("0.0.0.0:9192", 2, True),    # worker 1's gRPC port is worker 0's HTTP/1.1 port
    ("0.0.0.0:9190", 1, True),    # the admin port
    ("0.0.0.0:9089", 2, True),    # worker 1's HTTP/1.1 port is the metrics port
    ("0.0.0.0:9189", 2, True),    # 9189..9190: worker 1 would take the admin port
    ("0.0.0.0:9189", 1, False),   # one worker: 9189 alone is free
])
def test_http1_ports_clash_with_nothing(http1: str, workers: int, clash: bool) -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_LISTEN_CHECK_HTTP1": http1})
    if clash:
        with pytest.raises(ValueError, match="listen"):
            check_no_port_clash(cfg, workers)
    else:
        check_no_port_clash(cfg, workers)
