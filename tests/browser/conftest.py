"""Browser tests of the web console: Playwright for Python driving Debian's Chromium.

Playwright's own browser download cannot work here, so the browser is the distribution's
``chromium`` (``executable_path``). When it is missing and the tests run as root (CI does), it is
installed with apt-get; otherwise every test here is skipped with a message saying so.
axe-core comes from the npm registry at the version pinned in ``package.json``, installed into a
cache directory once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.stack.local import LocalStack

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jira-authz-tests"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def _find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str | None:
    """apt-get install chromium, as root only (update the package lists once if needed)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(cmd, env=env, capture_output=True, timeout=900)
    return _find_chromium()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need the playwright package (pip install -e '.[test]')")
    path = _find_chromium() or _install_chromium()
    if path is None:
        pytest.skip("browser tests skipped: Debian's chromium is not installed and this run "
                    "cannot install it (needs root and apt-get: apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe.min.js of the version pinned in package.json, installed from npm into a cache dir."""
    version = json.loads((HERE / "package.json").read_text())["devDependencies"]["axe-core"]
    target = CACHE / f"axe-core-{version}"
    js = target / "node_modules" / "axe-core" / "axe.min.js"
    if not js.is_file():
        if shutil.which("npm") is None:
            pytest.skip("the accessibility test needs npm to install axe-core")
        target.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            ["npm", "install", "--prefix", str(target), "--no-audit", "--no-fund",
             "--no-save", f"axe-core@{version}"], capture_output=True, text=True, timeout=300)
        if res.returncode != 0 or not js.is_file():
            pytest.fail(f"npm install axe-core@{version} failed: {res.stderr[-2000:]}")
    return js.read_text(encoding="utf-8")


# Module scope, not session: Playwright's sync API runs an event loop in this thread while it is
# open, and every later asyncio.run() of the suite would fail under it.
@pytest.fixture(scope="module")
def stack(chromium_path: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(inherit_config_env=False,
                    workdir=tmp_path_factory.mktemp("console-stack")) as s:
        yield s


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path,
                               args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def new_page(browser: Any) -> Iterator[Any]:
    """A factory of pages, each in its own browser context (its own cookies)."""
    contexts: list[Any] = []

    def make(**kwargs: Any) -> Any:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800}, **kwargs)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
