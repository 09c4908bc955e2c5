"""Configuration (docs/product.md §9): YAML + JIRA_AUTHZ_* overrides; every error names the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from authz.config import (
    Config,
    ConfigError,
    as_dict,
    env_names,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def load_yaml(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=env or {})


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_yaml(tmp_path, text, env)
    return ei.value


# --- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert cfg.auth.schemes == ("basic", "bearer")
    assert cfg.auth.unauthenticated == "pass"
    assert cfg.auth.path_prefixes == ("/rest/",)
    assert cfg.token_path_prefixes == ("/rest/",)
    assert cfg.identity.header == "contextUser"
    assert cfg.client_ip.xff_trusted_hops == 0
    assert cfg.audit.strict is False
    assert cfg.audit.include_query is False
    assert cfg.policy.max_lifetime_days == 0.0


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_yaml(tmp_path, "") == Config()
    assert load_yaml(tmp_path, "# only a comment\n") == Config()


def test_null_section_gives_section_defaults(tmp_path: Path) -> None:
    assert load_yaml(tmp_path, "auth:\nredis:\n") == Config()


def test_yaml_values(tmp_path: Path) -> None:
    cfg = load_yaml(tmp_path, """
redis:
  url: rediss://redis.example:6380/1
  max_connections: 8
  socket_timeout_seconds: 2
auth:
  schemes: [bearer]
  unauthenticated: deny
  context_path: /jira
  path_prefixes: [/rest/, /plugins/servlet/]
identity:
  header: X-Forwarded-User
client_ip:
  xff_trusted_hops: 2
audit:
  strict: true
  include_query: yes
policy:
  max_lifetime_days: 90
""")
    assert cfg.redis.url == "rediss://redis.example:6380/1"
    assert cfg.redis.max_connections == 8
    assert cfg.redis.socket_timeout_seconds == 2.0
    assert isinstance(cfg.redis.socket_timeout_seconds, float)
    assert cfg.auth.schemes == ("bearer",)
    assert cfg.auth.unauthenticated == "deny"
    assert cfg.token_path_prefixes == ("/jira/rest/", "/jira/plugins/servlet/")
    assert cfg.identity.header == "X-Forwarded-User"
    assert cfg.client_ip.xff_trusted_hops == 2
    assert cfg.audit.strict is True
    assert cfg.audit.include_query is True
    assert cfg.policy.max_lifetime_days == 90.0


@pytest.mark.parametrize(("ctx", "want"), [("", ("/rest/",)), ("/jira", ("/jira/rest/",)),
                                           ("/jira/", ("/jira/rest/",)),
                                           ("/a/b", ("/a/b/rest/",))])
def test_token_path_prefixes(ctx: str, want: tuple[str, ...]) -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_AUTH_CONTEXT_PATH": ctx})
    assert cfg.token_path_prefixes == want


# --- unknown keys and wrong types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("redis_url: x\n", "redis_url"),
        ("auth:\n  sheme: [basic]\n", "auth.sheme"),
        ("redis:\n  urll: redis://x\n", "redis.urll"),
        ("audit:\n  strict: true\n  stric: true\n", "audit.stric"),
    ],
)
def test_unknown_key_names_key_path(tmp_path: Path, text: str, key: str) -> None:
    e = config_error(tmp_path, text)
    assert e.key == key
    assert "unknown key" in e.reason
    assert key in str(e)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("redis:\n  max_connections: many\n", "redis.max_connections", "integer"),
        ("redis:\n  max_connections: 1.5\n", "redis.max_connections", "integer"),
        ("redis:\n  max_connections: true\n", "redis.max_connections", "integer"),
        ("redis:\n  socket_timeout_seconds: fast\n", "redis.socket_timeout_seconds", "number"),
        ("redis:\n  socket_timeout_seconds: false\n", "redis.socket_timeout_seconds", "number"),
        ("redis:\n  url: 6379\n", "redis.url", "string"),
        ("auth:\n  schemes: basic\n", "auth.schemes", "list"),
        ("auth:\n  schemes: {basic: 1}\n", "auth.schemes", "list"),
        ("auth:\n  schemes: [basic, 1]\n", "auth.schemes[1]", "string"),
        ("audit:\n  strict: maybe\n", "audit.strict", "true or false"),
        ("audit:\n  strict: 1\n", "audit.strict", "true or false"),
        ("auth: [basic]\n", "auth", "mapping"),
        ("auth: basic\n", "auth", "mapping"),
    ],
)
def test_wrong_type_names_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    e = config_error(tmp_path, text)
    assert e.key == key
    assert words in e.reason


# --- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"JIRA_AUTHZ_AUTH_SCHEMES": "basic,digest"}, "auth.schemes"),
        ({"JIRA_AUTHZ_AUTH_SCHEMES": ""}, "auth.schemes"),
        ({"JIRA_AUTHZ_AUTH_UNAUTHENTICATED": "allow"}, "auth.unauthenticated"),
        ({"JIRA_AUTHZ_AUTH_PATH_PREFIXES": ""}, "auth.path_prefixes"),
        ({"JIRA_AUTHZ_AUTH_PATH_PREFIXES": "/rest"}, "auth.path_prefixes"),
        ({"JIRA_AUTHZ_AUTH_PATH_PREFIXES": "rest/"}, "auth.path_prefixes"),
        ({"JIRA_AUTHZ_AUTH_CONTEXT_PATH": "jira"}, "auth.context_path"),
        ({"JIRA_AUTHZ_AUTH_CONTEXT_PATH": "/ji;ra"}, "auth.context_path"),
        ({"JIRA_AUTHZ_AUTH_CONTEXT_PATH": "//jira"}, "auth.context_path"),
        ({"JIRA_AUTHZ_AUTH_CONTEXT_PATH": "/jira%2f"}, "auth.context_path"),
        ({"JIRA_AUTHZ_AUTH_REALM": 'Ji"ra'}, "auth.realm"),
        ({"JIRA_AUTHZ_AUTH_MAX_HEADER_BYTES": "100"}, "auth.max_header_bytes"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": ""}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "context user"}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "context_user"}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "x-user:"}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "Authorization"}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "host"}, "identity.header"),
        ({"JIRA_AUTHZ_IDENTITY_HEADER": "Cookie"}, "identity.header"),
        ({"JIRA_AUTHZ_REDIS_URL": "http://redis:6379"}, "redis.url"),
        ({"JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS": "0"}, "redis.socket_timeout_seconds"),
        ({"JIRA_AUTHZ_REDIS_MAX_CONNECTIONS": "0"}, "redis.max_connections"),
        ({"JIRA_AUTHZ_LISTEN_CHECK": "9191"}, "listen.check"),
        ({"JIRA_AUTHZ_LISTEN_CHECK": "0.0.0.0:99999"}, "listen.check"),
        ({"JIRA_AUTHZ_LISTEN_CHECK": ""}, "listen.check"),
        ({"JIRA_AUTHZ_LISTEN_METRICS": "host:port"}, "listen.metrics"),
        ({"JIRA_AUTHZ_CLIENT_IP_XFF_TRUSTED_HOPS": "-1"}, "client_ip.xff_trusted_hops"),
        ({"JIRA_AUTHZ_CACHE_MAX_ENTRIES": "0"}, "cache.max_entries"),
        ({"JIRA_AUTHZ_CACHE_MAX_STALE_SECONDS": "-1"}, "cache.max_stale_seconds"),
        ({"JIRA_AUTHZ_AUDIT_STREAM": ""}, "audit.stream"),
        ({"JIRA_AUTHZ_AUDIT_BATCH_SIZE": "0"}, "audit.batch_size"),
        ({"JIRA_AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS": "0"}, "audit.flush_interval_seconds"),
        ({"JIRA_AUTHZ_AUDIT_MAX_AGE_DAYS": "-1"}, "audit.max_age_days"),
        ({"JIRA_AUTHZ_POLICY_MAX_LIFETIME_DAYS": "-1"}, "policy.max_lifetime_days"),
        ({"JIRA_AUTHZ_ADMIN_TLS_CERT_FILE": "/tls/crt"}, "admin.tls_cert_file"),
    ],
)
def test_invalid_values_name_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(environ=env)
    assert ei.value.key == key
    assert ei.value.reason
    assert str(ei.value).startswith(f"config {key}:")


def test_invalid_value_from_yaml(tmp_path: Path) -> None:
    e = config_error(tmp_path, "auth:\n  schemes: [basic, negotiate]\n")
    assert e.key == "auth.schemes"
    e = config_error(tmp_path, "identity:\n  header: Authorization\n")
    assert e.key == "identity.header"


@pytest.mark.parametrize("header", ["contextUser", "X-Forwarded-User", "x-remote-user1"])
def test_valid_identity_headers(header: str) -> None:
    assert load_config(environ={"JIRA_AUTHZ_IDENTITY_HEADER": header}).identity.header == header


@pytest.mark.parametrize("listen", ["[::]:9191", "127.0.0.1:0", "localhost:65535"])
def test_valid_listen(listen: str) -> None:
    assert load_config(environ={"JIRA_AUTHZ_LISTEN_CHECK": listen}).listen.check == listen


def test_optional_listeners_may_be_empty() -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_LISTEN_METRICS": "", "JIRA_AUTHZ_LISTEN_ADMIN": ""})
    assert cfg.listen.metrics == "" and cfg.listen.admin == ""


@pytest.mark.parametrize(
    "env",
    [
        {"JIRA_AUTHZ_POLICY_MAX_LIFETIME_DAYS": "nan"},
        {"JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS": "nan"},
        {"JIRA_AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS": "nan"},
        {"JIRA_AUTHZ_REDIS_CONNECT_TIMEOUT_SECONDS": "inf"},
    ],
)
def test_non_finite_numbers_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(environ=env)


# --- environment overrides ---------------------------------------------------------------------


def test_env_overrides_win_over_file(tmp_path: Path) -> None:
    text = "redis:\n  url: redis://from-file:6379/0\n  max_connections: 5\n"
    cfg = load_yaml(tmp_path, text, {"JIRA_AUTHZ_REDIS_URL": "redis://from-env:6379/2"})
    assert cfg.redis.url == "redis://from-env:6379/2"
    assert cfg.redis.max_connections == 5  # untouched file value stays


def test_env_lists_comma_separated() -> None:
    cfg = load_config(environ={
        "JIRA_AUTHZ_AUTH_SCHEMES": " basic , bearer ",
        "JIRA_AUTHZ_AUTH_PATH_PREFIXES": "/rest/,,/plugins/servlet/",
    })
    assert cfg.auth.schemes == ("basic", "bearer")
    assert cfg.auth.path_prefixes == ("/rest/", "/plugins/servlet/")
    assert load_config(environ={"JIRA_AUTHZ_AUTH_SCHEMES": "bearer"}).auth.schemes == ("bearer",)


@pytest.mark.parametrize(
    ("value", "want"),
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" On ", True),
     ("0", False), ("false", False), ("no", False), ("off", False)],
)
def test_env_bools(value: str, want: bool) -> None:
    assert load_config(environ={"JIRA_AUTHZ_AUDIT_STRICT": value}).audit.strict is want


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("JIRA_AUTHZ_AUDIT_STRICT", "maybe", "true or false"),
        ("JIRA_AUTHZ_AUDIT_STRICT", "", "true or false"),
        ("JIRA_AUTHZ_REDIS_MAX_CONNECTIONS", "ten", "integer"),
        ("JIRA_AUTHZ_REDIS_MAX_CONNECTIONS", "1.5", "integer"),
        ("JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS", "fast", "number"),
    ],
)
def test_env_bad_values_name_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(environ={name: value})
    assert ei.value.key == name
    assert words in ei.value.reason
    assert repr(value) in ei.value.reason


def test_env_numbers() -> None:
    cfg = load_config(environ={
        "JIRA_AUTHZ_REDIS_MAX_CONNECTIONS": " 12 ",
        "JIRA_AUTHZ_REDIS_SOCKET_TIMEOUT_SECONDS": "0.25",
        "JIRA_AUTHZ_CLIENT_IP_XFF_TRUSTED_HOPS": "3",
    })
    assert cfg.redis.max_connections == 12
    assert cfg.redis.socket_timeout_seconds == 0.25
    assert cfg.client_ip.xff_trusted_hops == 3


def test_unrelated_env_ignored() -> None:
    # Kubernetes injects service-link variables such as JIRA_AUTHZ_PORT for a Service named
    # jira-authz; they must not break start-up.
    cfg = load_config(environ={
        "JIRA_AUTHZ_PORT": "tcp://10.0.0.1:9191",
        "JIRA_AUTHZ_SERVICE_HOST": "10.0.0.1",
        "JIRA_AUTHZ_PORT_9191_TCP_ADDR": "10.0.0.1",
        "REDIS_URL": "redis://elsewhere",
        "jira_authz_redis_url": "redis://lowercase-is-not-ours",
    })
    assert cfg == Config()


def test_env_names_cover_every_key() -> None:
    names = env_names()
    assert names["JIRA_AUTHZ_REDIS_URL"] == ("redis", "url")
    assert names["JIRA_AUTHZ_CLIENT_IP_XFF_TRUSTED_HOPS"] == ("client_ip", "xff_trusted_hops")
    assert names["JIRA_AUTHZ_AUDIT_STRICT"] == ("audit", "strict")
    total = sum(len(dataclasses.fields(getattr(Config(), s.name)))
                for s in dataclasses.fields(Config))
    assert len(names) == total
    assert all(n.startswith("JIRA_AUTHZ_") and n == n.upper() for n in names)


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_AUTHZ_REDIS_URL", "redis://from-os-environ:6379/0")
    assert load_config().redis.url == "redis://from-os-environ:6379/0"


def test_env_validated_after_merge(tmp_path: Path) -> None:
    # The file alone is invalid; the environment fixes it.
    cfg = load_yaml(tmp_path, "auth:\n  unauthenticated: bogus\n",
                    {"JIRA_AUTHZ_AUTH_UNAUTHENTICATED": "deny"})
    assert cfg.auth.unauthenticated == "deny"


# --- file errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["redis: [unclosed\n", "a: b: c\n", "key: 'open\n", "\t- x\n"])
def test_bad_yaml(tmp_path: Path, text: str) -> None:
    e = config_error(tmp_path, text)
    assert e.key == "(file)"
    assert "YAML" in e.reason


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    e = config_error(tmp_path, text)
    assert e.key == "(file)"
    assert "mapping" in e.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.yaml", environ={})
    assert ei.value.key == "(file)"
    assert "nope.yaml" in ei.value.reason


def test_as_dict_round_trips(tmp_path: Path) -> None:
    cfg = load_config(environ={"JIRA_AUTHZ_AUTH_SCHEMES": "bearer",
                               "JIRA_AUTHZ_POLICY_MAX_LIFETIME_DAYS": "30",
                               "JIRA_AUTHZ_AUTH_CONTEXT_PATH": "/jira"})
    d = as_dict(cfg)
    assert d["auth"]["schemes"] == ["bearer"]
    assert load_yaml(tmp_path, yaml.safe_dump(d)) == cfg
