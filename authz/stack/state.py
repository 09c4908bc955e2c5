"""Where a running local stack's parts are: ``<workdir>/stack.json``, written by ``up``.

The stack's Redis gets a new port on every ``up``; the CLI run in the same directory reads
this file instead of guessing (or silently using an unrelated Redis on 6379). The file holds
addresses and the *path* of the admin credential, never a secret, and is removed when the
stack stops.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "stack.json"
DEFAULT_WORKDIR = ".local-stack"
ENV_STACK_DIR = "JIRA_AUTHZ_STACK_DIR"
"""Where the CLI looks for a running stack (default: ./.local-stack)."""


@dataclass(frozen=True)
class StackState:
    pid: int
    """The ``up`` process: a file whose process is gone is stale."""
    redis_url: str
    key_prefix: str
    audit_stream: str
    jira_url: str
    """Envoy's listener: what clients and snippets call."""
    admin_url: str
    admin_token_file: str
    check_addr: str
    metrics_url: str

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def write(workdir: Path, state: StackState) -> Path:
    path = workdir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def remove(workdir: Path) -> None:
    (workdir / STATE_FILE).unlink(missing_ok=True)


def stack_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(ENV_STACK_DIR) or DEFAULT_WORKDIR)


def read(workdir: Path) -> StackState | None:
    """The state of the stack in ``workdir``, or None when there is none (or it is garbled)."""
    path = workdir / STATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return StackState(**{k: raw[k] for k in StackState.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
