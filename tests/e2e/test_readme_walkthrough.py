"""The README's walk-through, executed (issue 16): every command of its ``console`` block runs
against a real ``jira-authz up`` started in a fresh directory, and its output must match what
the README shows (``…`` matches anything). The CLI finds the stack by itself: no variable is
exported. Also ``up``'s own promises: the admin API it prints works with its generated
credential, a second ``up`` or a busy port or an unreachable Redis fail at once in one line."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from authz.config import ENV_PREFIX
from authz.stack.processes import StackError, find_envoy, find_redis_server, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def walkthrough() -> list[Step]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- walkthrough -->", 1)[1].split("```console\n", 1)[1]
    block = block.split("\n```", 1)[0]
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:]))
        elif line.strip() and not line.startswith("#"):
            assert steps, f"output before any command: {line!r}"
            steps[-1].expected.append(line)
    return steps


def pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in line.split("…")))


def matches(expected: list[str], got: list[str]) -> bool:
    return len(expected) == len(got) and all(
        pattern(e).fullmatch(g) is not None for e, g in zip(expected, got, strict=True))


def env_without_config() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("JIRA_AUTHZ_STACK_DIR", None)
    return env


Up = tuple[Path, int, "subprocess.Popen[str]"]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    try:
        find_envoy()
        find_redis_server()
    except StackError as e:
        pytest.skip(str(e))
    cwd = tmp_path_factory.mktemp("readme")
    port = free_port()
    proc = subprocess.Popen([str(BIN / "jira-authz"), "up", "--port", str(port)], cwd=cwd,
                            env=env_without_config(), stdout=subprocess.PIPE,
                            stderr=open(cwd / "up.stderr", "w"), text=True)  # noqa: SIM115
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    try:
        line = lines.get(timeout=120)
        assert line.strip() == f"ready: http://127.0.0.1:{port}", (cwd / "up.stderr").read_text()
        yield cwd, port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def run(cwd: Path, command: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    # One shell per command; exported variables are carried over in a file.
    state = cwd / "walkthrough.env"
    script = (f"[ -f {shlex.quote(str(state))} ] && . {shlex.quote(str(state))}\n"
              f"{command}\nrc=$?\nexport -p | grep -E ' (ID|TOKEN)=' > {shlex.quote(str(state))}"
              "\nexit $rc\n")
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env or env_without_config(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)


def test_readme_walkthrough_outputs_are_true(up: Up) -> None:
    cwd, port, _ = up
    steps = walkthrough()
    assert len(steps) >= 10
    for step in steps:
        if step.command.startswith(("source ", "./dev")):
            continue
        command = step.command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        expected = [e.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for e in step.expected]
        # Reads may need a moment: revocation reaches the server over pub/sub, and audit
        # events are written in batches. Retried until they match (bounded), never slept on.
        for _ in range(50):
            res = run(cwd, command)
            got = res.stdout.splitlines()
            if matches(expected, got):
                break
            if not command.startswith(("curl", "jira-authz audit")):
                break
            time.sleep(0.1)
        assert matches(expected, got), f"$ {command}\nexpected:\n" + "\n".join(expected) + \
            "\ngot:\n" + res.stdout
        want_rc = 3 if any(g.startswith("DENY") for g in got) else 0
        assert res.returncode == want_rc, (command, res.stdout)
        if command.startswith("curl -s -u \"alice:$TOKEN\" http"):
            echo = json.loads(res.stdout)
            if echo.get("key"):
                assert "authorization" not in echo["headers"]
                assert echo["headers"]["contextuser"] == "alice"


def test_up_serves_the_admin_api_it_prints(up: Up) -> None:
    cwd, _, _ = up
    st = json.loads((cwd / ".local-stack" / "stack.json").read_text())
    assert "secret" not in json.dumps(st).lower()
    assert oct((cwd / ".local-stack" / "admin-token").stat().st_mode & 0o777) == "0o600"
    r = run(cwd, f"jira-authz token create --label via-admin --user alice --json "
                 f"--admin-url {st['admin_url']} --admin-token-file {st['admin_token_file']}")
    assert r.returncode == 0, r.stdout
    made = json.loads(r.stdout)
    r = run(cwd, "jira-authz token list --json")
    assert r.returncode == 0 and made["id"] in r.stdout  # the same store, found by itself
    # The admin command up prints works as printed.
    printed = [ln.strip() for ln in (cwd / "up.stderr").read_text().splitlines()
               if ln.strip().startswith("jira-authz token list --admin-url")]
    assert len(printed) == 1, (cwd / "up.stderr").read_text()
    r = run(cwd, printed[0] + " --json")
    assert r.returncode == 0 and made["id"] in r.stdout, r.stdout


def test_a_second_up_a_busy_port_and_a_dead_redis_fail_at_once(
        up: Up, tmp_path: Path) -> None:
    cwd, port, proc = up

    def up_again(where: Path, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "jira-authz"), "up", *args], cwd=where,
                              env=env or env_without_config(), capture_output=True, text=True,
                              timeout=60)

    r = up_again(cwd, "--port", str(free_port()))
    assert r.returncode == 1 and "already running" in r.stderr and "--workdir" in r.stderr
    r = up_again(tmp_path, "--port", str(port))
    assert r.returncode == 1 and "in use" in r.stderr and "--port" in r.stderr
    env = env_without_config()
    env[f"{ENV_PREFIX}REDIS_URL"] = "redis://127.0.0.1:1/0"
    r = up_again(tmp_path, "--port", str(free_port()), env=env)
    assert r.returncode == 1 and f"from {ENV_PREFIX}REDIS_URL" in r.stderr, r.stderr
    assert "redis://127.0.0.1:1/0" in r.stderr
    assert proc.poll() is None and (cwd / ".local-stack" / "stack.json").exists()
