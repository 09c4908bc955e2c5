"""Service configuration: one YAML file plus ``JIRA_AUTHZ_*`` environment overrides.

Every key has a default, a type and a validator; loading fails with the key path and the reason
(``ConfigError``) so a bad deployment stops at start instead of misbehaving at request time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.domain.lifecycle import InvalidDuration, parse_duration
from authz.domain.network import parse_hostport

ENV_PREFIX = "JIRA_AUTHZ_"


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or invalid; names the key path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class ListenConfig:
    check: str = "0.0.0.0:9191"
    """host:port of the Envoy ext_authz gRPC service."""
    check_http1: str = "0.0.0.0:9291"
    """host:port of the same Check over HTTP/1.1 behind Envoy's grpc_http1_reverse_bridge,
    which every shipped Envoy config uses (a fraction of gRPC's cost per Check:
    docs/performance.md); empty disables it (gRPC only, e.g. Istio)."""
    admin: str = "127.0.0.1:9190"
    """host:port of the admin gRPC API (never routed through Envoy)."""
    metrics: str = "0.0.0.0:9090"
    """host:port of the Prometheus /metrics endpoint; empty disables it."""


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    """redis://, rediss:// (TLS) or unix:// URL; a password goes in the URL (masked in output)."""
    key_prefix: str = "jira-authz:"
    """Prefix of every key, so several installations can share one Redis."""
    socket_timeout_seconds: float = 0.2
    """A Redis command slower than this fails (→ cached answer or 503), never hangs a Check."""
    connect_timeout_seconds: float = 1.0
    """Connecting, and waiting for a free pooled connection, gives up after this long."""
    max_connections: int = 64
    """Size of the connection pool shared by lookups, audit writes and admin calls."""
    mode: str = "standalone"
    """standalone, sentinel or cluster (cluster: key_prefix needs a hash tag: {jira-authz}:)."""
    sentinels: tuple[str, ...] = ()
    """Sentinel mode: host:port of each Sentinel; the URL then supplies password, db and TLS."""
    sentinel_master: str = "mymaster"
    """Sentinel mode: the monitored master's name."""


@dataclass(frozen=True)
class AuthConfig:
    schemes: tuple[str, ...] = ("basic", "bearer")
    """Accepted credential schemes: basic, bearer or both."""
    unauthenticated: str = "pass"
    """Requests without a token (no credentials, or a Jira password): pass or deny."""
    path_prefixes: tuple[str, ...] = ("/rest/",)
    """Paths where tokens are accepted; a token used anywhere else is refused (403)."""
    context_path: str = ""
    """Jira context path such as /jira; prefixed to every path prefix."""
    realm: str = "Jira"
    """Realm of the WWW-Authenticate header on 401 answers."""
    max_header_bytes: int = 8192
    """Longer Authorization headers are refused with 401."""


@dataclass(frozen=True)
class IdentityConfig:
    header: str = "contextUser"
    """Header that tells Jira who the caller is; never trusted from the client."""
    upstream_authorization_file: str = ""
    """Optional file holding a service Authorization value to send to Jira instead of none."""
    allow_unbound_with_service_credential: bool = False
    """With a service credential Jira acts as the identity header's user alone, and an unbound
    token's user is whatever login the client typed: refused unless this is true."""


@dataclass(frozen=True)
class ClientIpConfig:
    xff_trusted_hops: int = 0
    """Proxies in front of Envoy (load balancers, ingress): the same number as Envoy's
    xff_num_trusted_hops. 0: the client is Envoy's downstream socket peer."""
    envoy_appends_peer: bool = True
    """Envoy runs with use_remote_address: true and appends its own peer to X-Forwarded-For
    before the Check, so the client is entry xff_trusted_hops + 1 from the right. False for an
    Envoy that does not append (an Istio sidecar behind the ingress gateway): entry N."""


@dataclass(frozen=True)
class CacheConfig:
    max_entries: int = 100_000
    """Most tokens (and unknown secrets) kept in the in-process cache (LRU)."""
    refresh_after_seconds: float = 300.0
    """A cached token is re-read from Redis after this long even without an invalidation: a
    safety net only, as every change is pushed over pub/sub and a quiet subscription already
    makes entries unconfirmed."""
    max_stale_seconds: float = 60.0
    """While Redis is unreachable a cached token is used at most this long after its last read."""
    negative_ttl_seconds: float = 5.0
    """How long an unknown secret (e.g. a Jira password) is remembered as unknown."""
    stale_read_budget_seconds: float = 0.1
    """With a cached answer younger than max_stale at hand, a Redis read slower than this is not
    waited for: the cached answer is served and the read completes in the background."""
    max_compiled_limits: int = 16_384
    """Most tokens' restriction lines kept compiled (LRU by content). Compiled RE2 programs
    take several KB per line (~8 KB for a token with 1-5 lines), separately from
    max_entries; an evicted set is recompiled on next use (tens of microseconds per line)."""
    subscription_keepalive_seconds: float = 0.25
    """PING interval on the invalidation subscription; cached answers stop counting as fresh
    while a PING has gone unanswered for longer than this, or after 4 times this of total
    silence (a silently stalled link), so a revocation is never missed for longer than about a
    second."""


@dataclass(frozen=True)
class AuditConfig:
    stream: str = "jira-authz:audit"
    """Redis Stream receiving one event per token call."""
    max_len: int = 1_000_000
    """The stream is trimmed (approximately) to this many events."""
    max_age_days: float = 90.0
    """Trim events older than this (0: trim by length only)."""
    include_query: bool = False
    """Record query strings in audit events (they may hold personal data)."""
    buffer_size: int = 100_000
    """Events kept in memory while Redis is slow or down; beyond it they are counted and dropped."""
    batch_size: int = 500
    """Most events written in one pipeline."""
    flush_interval_seconds: float = 0.05
    """Longest wait before a partial batch is written."""
    strict: bool = False
    """Deny token calls while the audit buffer is full instead of dropping events."""
    untrusted_per_client_per_second: float = 1.0
    """Events of calls without a valid token (malformed, unknown token …) per client address;
    the excess is counted into summary events. Calls of known tokens are always audited."""
    untrusted_per_second: float = 2.0
    """The same bound over all client addresses together."""
    untrusted_window_seconds: float = 10.0
    """Rate window of the two bounds above; one summary event per window with suppressed calls."""
    untrusted_max_clients: int = 10_000
    """Client addresses tracked per window; calls from further addresses count as suppressed."""


@dataclass(frozen=True)
class JiraConfig:
    base_url: str = ""
    """Jira's URL as clients call it (e.g. https://jira.example.com): the CLI's snippets use it,
    and token test resolves a path-only --url against it. The local stack sets its own."""


@dataclass(frozen=True)
class PolicyConfig:
    """Token policy, enforced by the operations layer at create, import and rotate, for the
    CLI, the admin API and the console alike; a refused request names the rule."""

    max_lifetime_days: float = 0.0
    """Tokens must expire within this many days (0: no maximum)."""
    require_expiry: bool = False
    """Every new token must have an expiry."""
    max_active_tokens_per_user: int = 0
    """Most usable (active or rotating) tokens one bound user may hold (0: no maximum)."""
    allow_unbound: bool = False
    """Allow unbound ("anyone") tokens: any login may use them. Even then each one must be
    asked for explicitly (``--any-user``); imports keep Extender's unbound tokens only when
    this is true."""
    allow_unrestricted: bool = True
    """Allow tokens without restriction lines (they may call every supported endpoint)."""
    refuse_limit_warnings: bool = False
    """Refuse restriction lines that lint warns about (lines that can never match a
    ``scheme://host/path`` URL, or whose end also allows longer names) instead of only
    warning, at create, import, rotate and edit."""


@dataclass(frozen=True)
class LifecycleConfig:
    expiring_window: str = "14d"
    """"Expires soon": usable tokens whose expiry falls within this (metrics, webhooks)."""
    unused_after: str = "90d"
    """"Stale": usable tokens not used (never used: created) for this long (metrics)."""
    scan_interval: str = "5m"
    """How often one replica recomputes the lifecycle metrics (one owner across replicas)."""

    @property
    def expiring_window_seconds(self) -> float:
        return parse_duration(self.expiring_window)

    @property
    def unused_after_seconds(self) -> float:
        return parse_duration(self.unused_after)

    @property
    def scan_interval_seconds(self) -> float:
        return parse_duration(self.scan_interval)


@dataclass(frozen=True)
class WebhooksConfig:
    url: str = ""
    """http(s) URL receiving token events as signed JSON POSTs; empty disables webhooks."""
    secret_file: str = ""
    """File holding the HMAC-SHA256 signing secret (a mounted Secret; required with url)."""
    events: tuple[str, ...] = (
        "token.created", "token.revoked", "token.rotated", "token.expiring", "token.expired",
        "token.pruned",
    )
    """Events sent; others are not queued."""
    max_queue: int = 10_000
    """Most undelivered events kept (in Redis, so none is lost across restarts); beyond it new
    events are counted as dropped and logged."""
    timeout: str = "5s"
    """Per-delivery HTTP timeout."""
    max_backoff: str = "5m"
    """Retries back off exponentially from 1 s up to this."""
    claim_after: str = "2m"
    """An event left in flight by a replica that died is taken over after this long."""


@dataclass(frozen=True)
class AdminConfig:
    token_file: str = ""
    """File holding the admin bearer secret (mounted Secret); one of it or mTLS is required."""
    tls_cert_file: str = ""
    """Server certificate of the admin port (PEM); with the two below it enables mTLS."""
    tls_key_file: str = ""
    """Private key of the admin port's certificate (PEM)."""
    client_ca_file: str = ""
    """CA that signs admin client certificates: callers without one are refused."""


@dataclass(frozen=True)
class ConsoleConfig:
    listen: str = ""
    """host:port of the web console (product.md §11); empty disables it. Worker 0 alone
    serves it."""
    path_prefix: str = "/jira-authz/"
    """Every console URL starts with this, on its own port and through Envoy on Jira's host."""
    jira_url: str = ""
    """Jira's upstream address (e.g. http://127.0.0.1:8080), asked who a browser's session or
    Basic login belongs to; never the Envoy route, so a token can never vouch for a sign-in."""
    admin_group: str = "jira-administrators"
    """Members of this Jira group manage every token; everybody else only their own."""
    session_seconds: float = 900.0
    """A console session ends this long after sign-in, whatever happens in between."""
    recheck_seconds: float = 60.0
    """A session signed in with a Jira cookie asks Jira again after this long; a session from a
    Basic login (whose password is not kept) ends then."""
    cookie_secure: bool = True
    """Session cookie sent over HTTPS only; turn off only for plain-http local use (as
    jira-authz up does)."""
    cookie_samesite: str = "Strict"
    """Strict or Lax: whether the session cookie may ride on a top-level cross-site link."""
    jira_timeout_seconds: float = 5.0
    """How long a sign-in waits for Jira's answer."""
    max_sessions: int = 10_000
    """Most sessions (signed in or not) kept in memory; the oldest are dropped beyond it."""


@dataclass(frozen=True)
class ServerConfig:
    grace_seconds: float = 10.0
    """On SIGTERM: stop accepting, let in-flight Checks finish and flush the audit within this."""
    readiness_interval_seconds: float = 1.0
    """How often Redis is PINGed for the readiness (gRPC health) status."""


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    """debug, info, warning or error; logs are JSON lines on stderr."""
    access_log: bool = False
    """One JSON line per decision (request id, token id, user, decision, reason, path)."""


@dataclass(frozen=True)
class TracingConfig:
    exporter: str = "none"
    """none or otlp (gRPC): one span per Check, continuing the trace context Envoy sends."""
    endpoint: str = "http://127.0.0.1:4317"
    """OTLP gRPC collector endpoint."""
    sample_ratio: float = 1.0
    """Share of new traces sampled; a sampled parent from Envoy is always followed."""
    service_name: str = "jira-authz"


@dataclass(frozen=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    client_ip: ClientIpConfig = field(default_factory=ClientIpConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    jira: JiraConfig = field(default_factory=JiraConfig)

    @property
    def token_path_prefixes(self) -> tuple[str, ...]:
        ctx = self.auth.context_path.rstrip("/")
        return tuple(ctx + p for p in self.auth.path_prefixes)


# --- validation -------------------------------------------------------------------------------


def _check_hostport(key: str, value: str, *, allow_empty: bool = False) -> None:
    if not value and allow_empty:
        return
    if parse_hostport(value) is None:
        raise ConfigError(key, f"expected host:port, got {value!r}")


def _validate(cfg: Config) -> None:
    """Every section, in file order; the first bad key is the one reported."""
    _validate_listen(cfg)
    _validate_redis(cfg)
    _validate_auth(cfg)
    _validate_identity(cfg)
    _validate_client_ip(cfg)
    _validate_cache(cfg)
    _validate_audit(cfg)
    _validate_admin(cfg)
    _validate_console(cfg.console)
    _validate_server(cfg)
    _validate_log(cfg)
    _validate_tracing(cfg)
    _validate_policy_jira(cfg)
    _validate_lifecycle_webhooks(cfg)


def _validate_listen(cfg: Config) -> None:
    _check_hostport("listen.check", cfg.listen.check)
    _check_hostport("listen.check_http1", cfg.listen.check_http1, allow_empty=True)
    _check_hostport("listen.admin", cfg.listen.admin, allow_empty=True)
    _check_hostport("listen.metrics", cfg.listen.metrics, allow_empty=True)


def _validate_redis(cfg: Config) -> None:
    if not cfg.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url", "must start with redis://, rediss:// or unix://")
    for k in ("socket_timeout_seconds", "connect_timeout_seconds"):
        if getattr(cfg.redis, k) <= 0:
            raise ConfigError(f"redis.{k}", "must be > 0")
    if cfg.redis.max_connections < 1:
        raise ConfigError("redis.max_connections", "must be >= 1")
    if cfg.redis.mode not in ("standalone", "sentinel", "cluster"):
        raise ConfigError("redis.mode", "must be standalone, sentinel or cluster")
    if cfg.redis.mode == "sentinel":
        if not cfg.redis.sentinels:
            raise ConfigError("redis.sentinels", "sentinel mode needs at least one host:port")
        for sentinel in cfg.redis.sentinels:
            _check_hostport("redis.sentinels", sentinel)
    if cfg.redis.mode == "cluster":
        pre = cfg.redis.key_prefix
        if not ("{" in pre and "}" in pre.split("{", 1)[1] and pre.index("}") > pre.index("{") + 1):
            raise ConfigError("redis.key_prefix", "cluster mode needs a hash tag such as "
                              "'{jira-authz}:' so a token's keys share one slot")


def _validate_auth(cfg: Config) -> None:
    if not cfg.auth.schemes or any(s not in ("basic", "bearer") for s in cfg.auth.schemes):
        raise ConfigError("auth.schemes", "must list basic, bearer or both")
    if cfg.auth.unauthenticated not in ("pass", "deny"):
        raise ConfigError("auth.unauthenticated", "must be pass or deny")
    if not cfg.auth.path_prefixes:
        raise ConfigError("auth.path_prefixes", "must not be empty")
    for p in cfg.auth.path_prefixes:
        if not (p.startswith("/") and p.endswith("/")):
            raise ConfigError("auth.path_prefixes", f"{p!r} must start and end with /")
    ctx = cfg.auth.context_path
    if ctx and (not ctx.startswith("/") or "//" in ctx or any(c in ctx for c in "?#;\\%")):
        raise ConfigError("auth.context_path", f"{ctx!r} must be a plain path such as /jira")
    if '"' in cfg.auth.realm or "\\" in cfg.auth.realm:
        raise ConfigError("auth.realm", "must not contain quotes or backslashes")
    if cfg.auth.max_header_bytes < 256:
        raise ConfigError("auth.max_header_bytes", "must be >= 256")


def _validate_identity(cfg: Config) -> None:
    hdr = cfg.identity.header
    if not hdr or not all(c.isalnum() or c in "-" for c in hdr):
        raise ConfigError("identity.header", f"{hdr!r} is not a valid header name")
    if hdr.lower() in ("authorization", "host", "cookie") or hdr.startswith(":"):
        raise ConfigError("identity.header", f"{hdr!r} cannot be used as identity header")


def _validate_client_ip(cfg: Config) -> None:
    if cfg.client_ip.xff_trusted_hops < 0:
        raise ConfigError("client_ip.xff_trusted_hops", "must be >= 0")
    if cfg.client_ip.xff_trusted_hops > 16:
        raise ConfigError("client_ip.xff_trusted_hops", "must be <= 16")


def _validate_cache(cfg: Config) -> None:
    if cfg.cache.max_entries < 1:
        raise ConfigError("cache.max_entries", "must be >= 1")
    if cfg.cache.max_compiled_limits < 1:
        raise ConfigError("cache.max_compiled_limits", "must be >= 1")
    for k in ("stale_read_budget_seconds", "subscription_keepalive_seconds"):
        if getattr(cfg.cache, k) <= 0:
            raise ConfigError(f"cache.{k}", "must be > 0")
    for k in ("refresh_after_seconds", "max_stale_seconds", "negative_ttl_seconds"):
        if getattr(cfg.cache, k) < 0:
            raise ConfigError(f"cache.{k}", "must be >= 0")


def _validate_audit(cfg: Config) -> None:
    if not cfg.audit.stream:
        raise ConfigError("audit.stream", "must not be empty")
    for k in ("max_len", "buffer_size", "batch_size"):
        if getattr(cfg.audit, k) < 1:
            raise ConfigError(f"audit.{k}", "must be >= 1")
    if cfg.audit.flush_interval_seconds <= 0:
        raise ConfigError("audit.flush_interval_seconds", "must be > 0")
    if cfg.audit.max_age_days < 0:
        raise ConfigError("audit.max_age_days", "must be >= 0")
    for k in ("untrusted_per_client_per_second", "untrusted_per_second",
              "untrusted_window_seconds"):
        if not getattr(cfg.audit, k) > 0:
            raise ConfigError(f"audit.{k}", "must be > 0")
    if cfg.audit.untrusted_per_client_per_second > cfg.audit.untrusted_per_second:
        raise ConfigError("audit.untrusted_per_client_per_second",
                          "must not exceed audit.untrusted_per_second")
    if cfg.audit.untrusted_max_clients < 1:
        raise ConfigError("audit.untrusted_max_clients", "must be >= 1")


def _validate_admin(cfg: Config) -> None:
    tls = (cfg.admin.tls_cert_file, cfg.admin.tls_key_file, cfg.admin.client_ca_file)
    if any(tls) and not all(tls):
        raise ConfigError("admin.tls_cert_file", "mTLS needs tls_cert_file, tls_key_file and "
                          "client_ca_file together")


def _validate_server(cfg: Config) -> None:
    if cfg.server.grace_seconds < 0:
        raise ConfigError("server.grace_seconds", "must be >= 0")
    if cfg.server.readiness_interval_seconds <= 0:
        raise ConfigError("server.readiness_interval_seconds", "must be > 0")


def _validate_log(cfg: Config) -> None:
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level", "must be debug, info, warning or error")


def _validate_tracing(cfg: Config) -> None:
    if cfg.tracing.exporter not in ("none", "otlp"):
        raise ConfigError("tracing.exporter", "must be none or otlp")
    if not 0.0 <= cfg.tracing.sample_ratio <= 1.0:
        raise ConfigError("tracing.sample_ratio", "must be between 0 and 1")


def _validate_policy_jira(cfg: Config) -> None:
    if cfg.policy.max_lifetime_days < 0:
        raise ConfigError("policy.max_lifetime_days", "must be >= 0")
    _check_base_url(cfg.jira.base_url)
    if cfg.policy.max_active_tokens_per_user < 0:
        raise ConfigError("policy.max_active_tokens_per_user", "must be >= 0")


def _validate_lifecycle_webhooks(cfg: Config) -> None:
    _check_durations("lifecycle", cfg.lifecycle, ("expiring_window", "unused_after",
                                                  "scan_interval"))
    _check_durations("webhooks", cfg.webhooks, ("timeout", "max_backoff", "claim_after"))
    w = cfg.webhooks
    if w.url:
        if not w.url.startswith(("http://", "https://")):
            raise ConfigError("webhooks.url", "must start with http:// or https://")
        if not w.secret_file:
            raise ConfigError("webhooks.secret_file", "signed webhooks need a secret file")
    if w.max_queue < 1:
        raise ConfigError("webhooks.max_queue", "must be >= 1")
    for e in w.events:
        if e not in WEBHOOK_EVENTS:
            raise ConfigError("webhooks.events", f"unknown event {e!r}; known: "
                              + ", ".join(WEBHOOK_EVENTS))

WEBHOOK_EVENTS = ("token.created", "token.revoked", "token.rotated", "token.expiring",
                  "token.expired", "token.pruned")


def _check_durations(section: str, obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        try:
            seconds = parse_duration(getattr(obj, name))
        except InvalidDuration as e:
            raise ConfigError(f"{section}.{name}", str(e)) from None
        if seconds <= 0:
            raise ConfigError(f"{section}.{name}", "must be > 0")


def _check_base_url(url: str) -> None:
    from urllib.parse import urlsplit

    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc
            or parts.query or parts.fragment):
        raise ConfigError("jira.base_url", f"{url!r} must be http(s)://host[:port][/context]")


def _validate_console(c: ConsoleConfig) -> None:
    _check_hostport("console.listen", c.listen, allow_empty=True)
    pre = c.path_prefix
    if (not pre.startswith("/") or not pre.endswith("/") or pre == "/" or "//" in pre
            or not all(ch.isalnum() or ch in "/-_." for ch in pre)
            or any(seg in (".", "..") for seg in pre.split("/"))):
        raise ConfigError("console.path_prefix", f"{pre!r} must be a plain path such as "
                          "/jira-authz/ (starts and ends with /, not / alone)")
    if pre.startswith("/rest/"):
        raise ConfigError("console.path_prefix", "must not be under /rest/ (token paths)")
    if c.listen and not c.jira_url:
        raise ConfigError("console.jira_url", "the console needs Jira's upstream address")
    if c.jira_url and not c.jira_url.startswith(("http://", "https://")):
        raise ConfigError("console.jira_url", "must start with http:// or https://")
    if not c.admin_group or any(ord(ch) < 0x20 for ch in c.admin_group):
        raise ConfigError("console.admin_group", "must be a non-empty group name")
    for k in ("session_seconds", "recheck_seconds", "jira_timeout_seconds"):
        if getattr(c, k) <= 0:
            raise ConfigError(f"console.{k}", "must be > 0")
    if c.cookie_samesite not in ("Strict", "Lax"):
        raise ConfigError("console.cookie_samesite", "must be Strict or Lax")
    if c.max_sessions < 1:
        raise ConfigError("console.max_sessions", "must be >= 1")


# --- loading ----------------------------------------------------------------------------------


def _coerce(key: str, typ: Any, value: Any, *, from_env: bool) -> Any:
    """Convert one raw value to the field's type, or raise ConfigError naming the key."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        (item_t, _) = typing.get_args(typ)
        return tuple(_coerce(f"{key}[{i}]", item_t, v, from_env=False) for i, v in enumerate(value))
    if typ is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if typ is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if typ is float:
        if from_env and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {type(value).__name__}")
        return value
    raise AssertionError(f"unsupported config type {typ!r}")  # pragma: no cover


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: Mapping[str, Any], path: str) -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            raise ConfigError(f"{path}{k}", "unknown key")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        typ = hints[f.name]
        val = raw[f.name]
        key = f"{path}{f.name}"
        if dataclasses.is_dataclass(typ):
            if val is None:
                val = {}
            if not isinstance(val, Mapping):
                raise ConfigError(key, "expected a mapping")
            kwargs[f.name] = _build(typ, val, key + ".")
        else:
            kwargs[f.name] = _coerce(key, typ, val, from_env=False)
    return cls(**kwargs)


def env_names() -> dict[str, tuple[str, str]]:
    """Every ``JIRA_AUTHZ_…`` variable and the (section, key) it overrides."""
    out: dict[str, tuple[str, str]] = {}
    for sec in dataclasses.fields(Config):
        sec_t = _hints(Config)[sec.name]
        for f in dataclasses.fields(sec_t):
            out[f"{ENV_PREFIX}{sec.name}_{f.name}".upper()] = (sec.name, f.name)
    return out


def _apply_env(cfg: Config, environ: Mapping[str, str]) -> Config:
    known = env_names()
    sections: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name not in known:
            continue
        sec, key = known[name]
        typ = _hints(_hints(Config)[sec])[key]
        sections.setdefault(sec, {})[key] = _coerce(name, typ, value, from_env=True)
    if not sections:
        return cfg
    return dataclasses.replace(
        cfg,
        **{s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in sections.items()},
    )


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate."""
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError("(file)", f"cannot read {path}: {e.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError("(file)", f"not valid YAML: {e}") from None
        if not isinstance(raw, Mapping):
            raise ConfigError("(file)", "top level must be a mapping")
    cfg = _build(Config, raw, "")
    cfg = _apply_env(cfg, os.environ if environ is None else environ)
    _validate(cfg)
    return cfg


def as_dict(cfg: Config) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return {
        sec.name: {k: conv(v) for k, v in dataclasses.asdict(getattr(cfg, sec.name)).items()}
        for sec in dataclasses.fields(cfg)
    }

