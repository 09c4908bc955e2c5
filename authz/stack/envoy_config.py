"""Turn a shipped Envoy config (deploy/envoy/*.yaml) into one that runs on this machine.

The shipped files stay the source of truth: only addresses change (listener, admin, and the
endpoints of clusters picked by NAME), so the local stack and the tests exercise exactly the
security settings a deployment gets. A renamed cluster fails loudly instead of being skipped.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SIDECAR = "sidecar.yaml"
GATEWAY = "gateway.yaml"
CHECK_CLUSTER = "jira_authz_http1"
"""The jira-authz processes' HTTP/1.1 Check ports, behind the bridge listener (below)."""
BRIDGE_LISTENER = "jira_authz_bridge"
"""Envoy's internal listener that turns ext_authz's gRPC Check into an HTTP/1.1 POST."""
CONSOLE_CLUSTER = "jira_authz_console"
"""The web console's cluster (docs/product.md §11), routed under its path prefix on Jira's host."""

# Fields that only make sense for DNS-resolved clusters; dropped when a cluster becomes STATIC.
_DNS_FIELDS = (
    "dns_lookup_family",
    "dns_refresh_rate",
    "dns_failure_refresh_rate",
    "respect_dns_ttl",
    "dns_jitter",
    "typed_dns_resolver_config",
    "dns_resolution_config",
    "use_tcp_for_dns_lookups",
    "wait_for_warm_on_init",
)


def deploy_dir() -> Path:
    """Directory holding the shipped Envoy configs (repository checkout or packaged copy)."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / "deploy" / "envoy",  # source checkout / editable install
        here.parents[1] / "deploy" / "envoy",  # packaged as authz/deploy/envoy
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("deploy/envoy not found next to the authz package")


def shipped_path(name: str = SIDECAR) -> Path:
    """A file name in deploy/envoy, or any path to an Envoy YAML."""
    p = Path(name)
    if p.is_file():
        return p
    return deploy_dir() / name


def load(name: str | os.PathLike[str] = SIDECAR) -> dict[str, Any]:
    path = shipped_path(str(name))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an Envoy bootstrap mapping")
    return data


def has_cluster(name: str | os.PathLike[str], cluster: str) -> bool:
    """Whether a shipped (or given) config defines ``cluster``."""
    clusters = load(name).get("static_resources", {}).get("clusters", [])
    return any(c.get("name") == cluster for c in clusters)


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def patch(
    config: Mapping[str, Any],
    *,
    listener_port: int,
    admin_port: int,
    clusters: Mapping[str, tuple[str, int | Sequence[int]]],
    listener_host: str = "127.0.0.1",
    listener_name: str | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` with local addresses; everything else untouched.

    ``clusters`` maps cluster name -> (host, port or ports); each named cluster gets exactly
    those endpoints, one per port (``--workers``), STATIC when the host is an IP literal.
    Unknown names raise KeyError.
    """
    cfg: dict[str, Any] = copy.deepcopy(dict(config))
    cfg.setdefault("admin", {})["address"] = _socket_address("127.0.0.1", admin_port)

    # Internal listeners (the Check's HTTP/1.1 bridge) have no address to patch.
    listeners = [x for x in cfg.get("static_resources", {}).get("listeners", [])
                 if "internal_listener" not in x]
    if listener_name is not None:
        listeners = [x for x in listeners if x.get("name") == listener_name]
    if len(listeners) != 1:
        raise KeyError(f"expected exactly one listener to patch, found {len(listeners)}")
    listeners[0]["address"] = _socket_address(listener_host, listener_port)

    by_name = {c.get("name"): c for c in cfg.get("static_resources", {}).get("clusters", [])}
    for name, (host, port) in clusters.items():
        if name not in by_name:
            raise KeyError(f"cluster {name!r} not in config (has {sorted(by_name)})")
        cluster = by_name[name]
        ports = [port] if isinstance(port, int) else list(port)
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, p)}}
                                  for p in ports]}
            ],
        }
        if _is_ip(host):
            cluster.pop("cluster_type", None)
            cluster["type"] = "STATIC"
            for f in _DNS_FIELDS:
                cluster.pop(f, None)
    return cfg


def direct_grpc(config: Mapping[str, Any], host: str, ports: Sequence[int]) -> dict[str, Any]:
    """A copy of a shipped config whose ext_authz calls gRPC ``host:ports`` directly, without
    the HTTP/1.1 bridge (for a server that speaks only gRPC: the benchmark's allow-all rows)."""
    cfg: dict[str, Any] = copy.deepcopy(dict(config))
    res = cfg["static_resources"]
    res["listeners"] = [x for x in res["listeners"] if x.get("name") != BRIDGE_LISTENER]
    res["clusters"] = [c for c in res["clusters"] if c.get("name") != CHECK_CLUSTER]
    cluster = next(c for c in res["clusters"] if c.get("name") == "jira_authz")
    cluster["type"] = "STATIC"
    cluster["lb_policy"] = "ROUND_ROBIN"
    cluster["load_assignment"] = {"cluster_name": "jira_authz", "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, p)}} for p in ports]}]}
    return cfg


def write(
    config: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``config`` as YAML to ``path``, or to a new file in ``directory`` / the temp dir."""
    if path is None:
        fd, name = tempfile.mkstemp(prefix="envoy-", suffix=".yaml", dir=directory)
        os.close(fd)
        path = name
    out = Path(path)
    out.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return out


def local_config(
    *,
    listener_port: int,
    admin_port: int,
    clusters: Mapping[str, tuple[str, int | Sequence[int]]],
    name: str | os.PathLike[str] = SIDECAR,
    path: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Load a shipped config, patch it to local addresses, write it; returns the file path."""
    cfg = patch(load(name), listener_port=listener_port, admin_port=admin_port, clusters=clusters)
    return write(cfg, path, directory=directory)


def _managers(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The HTTP connection managers of the Jira listener (``jira``; every listener without)."""
    out = []
    listeners = [x for x in config.get("static_resources", {}).get("listeners", [])
                 if "internal_listener" not in x]
    named = [x for x in listeners if x.get("name") == "jira"]
    for listener in named or listeners:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                if f.get("name") == "envoy.filters.network.http_connection_manager":
                    out.append(f["typed_config"])
    return out


def client_ip_conflict(
    config: Mapping[str, Any], xff_trusted_hops: int, envoy_appends_peer: bool = True
) -> str | None:
    """Why jira-authz's client_ip settings contradict this Envoy config, or None.

    One model (docs/operations.md): Envoy's xff_num_trusted_hops is the number of proxies in
    front of it, jira-authz's client_ip.xff_trusted_hops the same number, and
    client_ip.envoy_appends_peer says whether Envoy appends its own peer (use_remote_address).
    """
    for m in _managers(config):
        envoy_hops = int(m.get("xff_num_trusted_hops", 0))
        appends = bool(m.get("use_remote_address", False))
        if appends != envoy_appends_peer:
            return (f"Envoy use_remote_address is {str(appends).lower()} but jira-authz "
                    f"client_ip.envoy_appends_peer is {str(envoy_appends_peer).lower()}")
        if appends and envoy_hops != xff_trusted_hops:
            return (f"Envoy xff_num_trusted_hops is {envoy_hops} but jira-authz "
                    f"client_ip.xff_trusted_hops is {xff_trusted_hops}: set both to the "
                    "number of load balancers in front of Envoy")
    return None


NO_CREDENTIALS_ROUTE = "no-credentials"
"""The route of requests without an Authorization header: no Check (docs/product.md §3)."""
EXT_AUTHZ = "envoy.filters.http.ext_authz"
_SHIPPED_IDENTITY = "contextuser"


def no_credentials_answer(realm: str) -> dict[str, Any]:
    """The 401 jira-authz itself answers a request without credentials under
    ``unauthenticated: deny``, as an Envoy ``direct_response`` route (same status, headers and
    body: one rule, taken from the decision code)."""
    from authz.domain.decide import Policy, not_a_token
    from authz.domain.model import Reason
    from authz.envoyauth.response import ResponseBuilder

    decision = not_a_token(Policy(deny_unauthenticated=True), Reason.NO_CREDENTIALS, "")
    denied = ResponseBuilder(identity_header=_SHIPPED_IDENTITY, realm=realm).build(
        decision).denied_response
    return {
        "direct_response": {"status": denied.status.code,
                            "body": {"inline_string": denied.body}},
        "response_headers_to_add": [
            {"header": {"key": h.header.key, "value": h.header.value},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for h in denied.headers],
    }


def for_server(config: Mapping[str, Any], *, identity_header: str, deny_unauthenticated: bool,
               realm: str) -> dict[str, Any]:
    """A copy of a shipped config set to one jira-authz configuration: the identity header
    (removed on the no-credentials route, sent to the Check) and, under
    ``unauthenticated: deny``, Envoy's own 401 for requests without credentials."""
    cfg: dict[str, Any] = copy.deepcopy(dict(config))
    header = identity_header.lower()
    for m in _managers(cfg):
        for vh in m.get("route_config", {}).get("virtual_hosts", []):
            for route in vh.get("routes", []):
                if route.get("name") == NO_CREDENTIALS_ROUTE:
                    route["request_headers_to_remove"] = [identity_header]
                    if deny_unauthenticated:
                        route.pop("route", None)
                        route.pop("request_headers_to_remove", None)
                        route.update(no_credentials_answer(realm))
                elif route.get("name") == "jira-authz-console":
                    route["request_headers_to_remove"] = [
                        h for h in route.get("request_headers_to_remove", [])
                        if h.lower() != _SHIPPED_IDENTITY] + [identity_header]
        for f in m.get("http_filters", []):
            if f.get("name") != EXT_AUTHZ:
                continue
            patterns = f["typed_config"].get("allowed_headers", {}).get("patterns", [])
            for p in patterns:
                if p.get("exact", "").lower() == _SHIPPED_IDENTITY:
                    p["exact"] = header
    return cfg
