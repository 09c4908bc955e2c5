"""``jira-authz up``: announces readiness only when requests go through, and leaves nothing behind.

Runs the real command as a user would, reads its ``ready:`` line, sends requests through it,
stops it with SIGTERM and checks that every process it started is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from authz.config import ENV_PREFIX
from authz.stack.processes import StackError, find_envoy, find_redis_server, free_port

pytestmark = pytest.mark.e2e


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a live process; None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, start = fields[0], int(fields[1]), fields[19]
    return None if state in ("Z", "X") else (state, ppid, start)


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid -> start time (guards against pid reuse)."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[1], []).append((int(entry), st[2]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, start in parents.get(todo.pop(), []):
            found[pid] = start
            todo.append(pid)
    return found


def alive(procs: dict[int, str]) -> list[int]:
    return [pid for pid, start in procs.items() if (st := _stat(pid)) and st[2] == start]


def read_lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    try:
        find_envoy()
        find_redis_server()
    except StackError as e:
        pytest.skip(str(e))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    stderr_path = tmp_path / "up.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authz", "up", "--port", str(port),
             "--workdir", str(tmp_path / "stack")],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
            start_new_session=True,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    children: dict[int, str] = {}
    try:
        expected = f"ready: http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        line = ""
        while line != expected:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and proc.poll() is None, stderr_path.read_text()
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=min(remaining, 0.5)).rstrip("\n")
        children = descendants(proc.pid)
        assert len(children) >= 4, children  # redis, authz, stub jira, envoy

        # Ready means ready: no retry needed. No credentials: passed through to (stub) Jira.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/rest/api/2/myself") as resp:
            assert resp.status == 200
            assert resp.headers["X-Stub-Jira"] == "1"
        # A token-shaped credential nobody issued: jira-authz is in the path and says 401.
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/rest/api/2/myself",
            headers={"Authorization": "Bearer jat_notarealtokenatall0000000000000000000"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 401

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, stderr_path.read_text()
        left = alive(children)
        assert not left, f"processes left behind: {left}"
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in alive(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. a unique work directory)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and _stat(int(entry)) is not None:
            out.append(int(entry))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_up_on_a_busy_port_fails_and_cleans_up(tmp_path: Path) -> None:
    """Envoy binds with SO_REUSEPORT and would share a busy port silently: up must refuse."""
    try:
        find_envoy()
        find_redis_server()
    except StackError as e:
        pytest.skip(str(e))
    workdir = tmp_path / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "authz", "up", "--port", str(port), "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert res.returncode == 1, res.stderr
    assert "in use" in res.stderr
    assert "ready:" not in res.stdout
    assert not processes_mentioning(str(workdir))
