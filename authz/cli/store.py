"""Which token store a CLI command talks to, and how to say so.

In order: ``--admin-url``; ``--redis-url``; ``JIRA_AUTHZ_REDIS_URL``; ``--config``; a running
local stack (``.local-stack/stack.json``, or ``$JIRA_AUTHZ_STACK_DIR``); the configured default
(``redis://127.0.0.1:6379/0``). Whenever the store was not named explicitly, the command says
on stderr which one it uses, so an empty table never comes from the wrong Redis in silence.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authz.config import ENV_PREFIX, Config, load_config
from authz.stack import state as stack_state

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class StoreChoiceError(ValueError):
    """One line for the user: the flags or environment name no usable store."""


@dataclass(frozen=True)
class Target:
    cfg: Config
    source: str
    """How the store was chosen, for messages: '--redis-url', 'the local stack in …'."""
    note: str = ""
    """Printed on stderr when the store was not given explicitly."""


def masked_url(url: str) -> str:
    """A Redis URL without its password (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def check_redis_url(url: str, source: str) -> None:
    if not url.startswith(REDIS_SCHEMES):
        raise StoreChoiceError(
            f"{source}: {masked_url(url)!r} is not a Redis URL; use redis://host:port/db, "
            "rediss:// (TLS) or unix:///path")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as e:
        raise StoreChoiceError(f"{source}: {masked_url(url)!r} is not a valid URL: {e}") from None


def _with_redis(cfg: Config, **changes: Any) -> Config:
    return dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, **changes))


def choose(args: Any, environ: dict[str, str] | os._Environ[str] | None = None) -> Target:
    env = os.environ if environ is None else environ
    config_file = getattr(args, "config", None)
    cfg = load_config(config_file)
    if getattr(args, "admin_url", None):
        return Target(cfg, f"the admin API at {args.admin_url}")
    url = getattr(args, "redis_url", None)
    if url:
        check_redis_url(url, "--redis-url")
        return Target(_with_redis(cfg, url=url), "--redis-url")
    if env.get(f"{ENV_PREFIX}REDIS_URL"):
        check_redis_url(cfg.redis.url, f"{ENV_PREFIX}REDIS_URL")
        return Target(cfg, f"from {ENV_PREFIX}REDIS_URL")
    if config_file:
        return Target(cfg, f"from {config_file}")
    where = stack_state.stack_dir(env)
    st = stack_state.read(where)
    stale = ""
    if st is not None and st.alive():
        cfg = _with_redis(cfg, url=st.redis_url, key_prefix=st.key_prefix)
        cfg = dataclasses.replace(
            cfg, audit=dataclasses.replace(cfg.audit, stream=st.audit_stream),
            jira=dataclasses.replace(cfg.jira, base_url=cfg.jira.base_url or st.jira_url),
        )
        source = f"the local stack in {where}"
        return Target(cfg, source, f"using {source} (Redis {masked_url(st.redis_url)})")
    if st is not None:
        stale = f"; ignored {where / stack_state.STATE_FILE}: its up process {st.pid} is gone"
    source = "the default Redis"
    return Target(cfg, source, f"using {source} {masked_url(cfg.redis.url)} (no --redis-url, "
                  f"--admin-url, --config, {ENV_PREFIX}REDIS_URL or running local stack{stale})")
