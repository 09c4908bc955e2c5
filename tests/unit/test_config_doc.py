"""The configuration reference is generated from the code and must stay current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from authz.config import Config, env_names, load_config
from authz.config_doc import reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_reference_page_is_current() -> None:
    assert DOC.read_text(encoding="utf-8").rstrip() == reference_markdown().rstrip(), (
        "docs/configuration.md is stale: run `jira-authz config docs > docs/configuration.md`"
    )


def test_every_key_is_documented_with_env_name_and_meaning() -> None:
    text = reference_markdown()
    for env in env_names():
        row = next((line for line in text.splitlines() if f"`{env}`" in line), None)
        assert row is not None, env
        meaning = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert meaning, f"{env} has no description (add a docstring under the field)"


def test_masked_show_hides_redis_password() -> None:
    from authz.config_doc import masked

    cfg = load_config(environ={"JIRA_AUTHZ_REDIS_URL": "redis://user:s3cr3t-pw@redis:6379/0"})
    shown = masked(cfg)
    assert "s3cr3t-pw" not in repr(shown)
    assert shown["redis"]["url"].startswith("redis://user:")
    assert set(shown) == {f.name for f in dataclasses.fields(Config)}
