"""Steps the browser tests share: sign in through the console's form, create a token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from authz.stack.local import LocalStack

DOCS = Path(__file__).resolve().parents[2] / "docs"


def sign_in(page: Any, stack: LocalStack, user: str, password: str | None = None) -> None:
    """Through the console's own form (Basic login asked of Jira)."""
    page.goto(stack.console_url + "login")
    page.get_by_label("Jira username").fill(user)
    page.get_by_label("Jira password").fill(password if password is not None else user)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in", exact=True).click()


def create_token(page: Any, stack: LocalStack, label: str, limits: str = "") -> str:
    """Create through the form; returns the new token's id (from the secret page's URL)."""
    page.goto(stack.console_url + "new")
    page.get_by_label("Label", exact=True).fill(label)
    if limits:
        page.get_by_label("Restriction lines (one per line)").fill(limits)
    page.get_by_role("button", name="Create token").click()
    page.wait_for_url(re.compile(r".*/tokens/[0-9a-f]+/secret$"))
    m = re.search(r"/tokens/([0-9a-f]+)/secret$", page.url)
    assert m, page.url
    return m.group(1)
