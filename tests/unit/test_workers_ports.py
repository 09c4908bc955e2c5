"""--workers takes consecutive check ports: it must never silently take the admin port."""

from __future__ import annotations

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
