"""What every shipped Envoy config must say about the Check's HTTP/1.1 leg (issue 15).

ext_authz calls the `jira_authz` cluster over gRPC; that cluster's only endpoint is Envoy's own
internal listener `jira_authz_bridge`, whose grpc_http1_reverse_bridge turns the Check into an
HTTP/1.1 POST to the jira-authz processes (cluster `jira_authz_http1`, the server's
listen.check_http1 ports). Used by tests/unit (deploy/envoy/*.yaml) and tests/delivery (the
chart's gateway and the plain manifests), so all of them are held to one description.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authz import check_http1
from authz.config import ListenConfig
from authz.stack import envoy_config

HCM = "envoy.filters.network.http_connection_manager"
BRIDGE_FILTER = "envoy.filters.http.grpc_http1_reverse_bridge"
BRIDGE_TYPE = ("type.googleapis.com/"
               "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig")
ROUTER = "envoy.filters.http.router"
INTERNAL_LISTENER_TYPE = (
    "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener")
GRPC_CLUSTER = "jira_authz"
"""ext_authz's cluster: gRPC, ending in the bridge listener."""
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_HTTP1_PORT = int(ListenConfig().check_http1.rsplit(":", 1)[1])
"""The server's default listen.check_http1 port (9291): worker i listens on it + i."""


def worker_ports(workers: int, base: int = DEFAULT_HTTP1_PORT) -> list[int]:
    return [base + i for i in range(workers)]


def _listeners(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return list(cfg["static_resources"]["listeners"])


def _hcms(listener: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["typed_config"] for chain in listener.get("filter_chains", [])
            for f in chain.get("filters", []) if f.get("name") == HCM]


def _routes(hcm: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for vh in hcm.get("route_config", {}).get("virtual_hosts", [])
            for r in vh.get("routes", [])]


def clusters(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in cfg["static_resources"]["clusters"]}


def endpoints(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["endpoint"]["address"] for group in cluster["load_assignment"]["endpoints"]
            for e in group["lb_endpoints"]]


def http1_ports(cfg: dict[str, Any]) -> list[int]:
    """The ports of jira_authz_http1's endpoints, in order."""
    return [a["socket_address"]["port_value"]
            for a in endpoints(clusters(cfg)[envoy_config.CHECK_CLUSTER])]


def assert_bridged(cfg: dict[str, Any], *, ports: Sequence[int] | None = None,
                   host: str | None = None) -> None:
    """``cfg`` sends the Check through the bridge, and only the Check; ``ports`` / ``host``:
    the jira-authz endpoints expected in jira_authz_http1 (in order)."""
    # The internal listener extension the bridge listener needs.
    exts = [e for e in cfg.get("bootstrap_extensions", [])
            if e.get("name") == "envoy.bootstrap.internal_listener"]
    assert [e["typed_config"]["@type"] for e in exts] == [INTERNAL_LISTENER_TYPE]

    # The bridge listener: internal (no address, nothing outside Envoy reaches it).
    (bridge,) = [x for x in _listeners(cfg) if x["name"] == envoy_config.BRIDGE_LISTENER]
    assert bridge["internal_listener"] == {} and "address" not in bridge
    (hcm,) = _hcms(bridge)
    assert hcm["codec_type"] == "HTTP2"  # ext_authz's gRPC arrives as HTTP/2
    routes = _routes(hcm)
    forwarded = [r for r in routes if "route" in r]
    # Exactly the Check method reaches jira-authz; every other path is answered by Envoy.
    assert [r["match"] for r in forwarded] == [{"path": check_http1.CHECK_PATH.decode()}]
    assert forwarded[0]["route"]["cluster"] == envoy_config.CHECK_CLUSTER
    # A Check is retried only where nothing was decided (a refused connection: a stopping or
    # gone process); a reset or a 5xx may follow a decision that was already audited.
    retry = forwarded[0]["route"].get("retry_policy")
    assert retry == {"retry_on": "connect-failure", "num_retries": 1}, retry
    others = [r for r in routes if "route" not in r]
    assert others and all(r["direct_response"]["status"] >= 400 for r in others)
    assert {r["match"].get("prefix") for r in others} == {"/"}  # a catch-all, nothing passes
    filters = hcm["http_filters"]
    assert [f["name"] for f in filters] == [BRIDGE_FILTER, ROUTER]
    # The content type the server accepts and answers with (authz.check_http1.CONTENT_TYPE),
    # gRPC frames withheld: the server reads and writes bare protobuf.
    assert filters[0]["typed_config"] == {"@type": BRIDGE_TYPE,
                                          "content_type": check_http1.CONTENT_TYPE.decode(),
                                          "withhold_grpc_frames": True}

    # No other listener routes to either jira-authz cluster (clients never reach its ports).
    for listener in _listeners(cfg):
        if listener is bridge:
            continue
        for m in _hcms(listener):
            for r in _routes(m):
                assert r.get("route", {}).get("cluster") not in (
                    GRPC_CLUSTER, envoy_config.CHECK_CLUSTER), (listener["name"], r)
            for f in m.get("http_filters", []):
                if f["name"] == envoy_config.EXT_AUTHZ:
                    grpc = f["typed_config"]["grpc_service"]
                    assert grpc["envoy_grpc"]["cluster_name"] == GRPC_CLUSTER

    cl = clusters(cfg)
    # ext_authz's gRPC cluster: the bridge listener and nothing else.
    grpc_cluster = cl[GRPC_CLUSTER]
    assert endpoints(grpc_cluster) == [
        {"envoy_internal_address": {"server_listener_name": envoy_config.BRIDGE_LISTENER}}]
    assert "http2_protocol_options" in (
        grpc_cluster["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"])
    assert "health_checks" not in grpc_cluster and "type" not in grpc_cluster

    # The jira-authz processes: HTTP/1.1, health-checked on GET /healthz.
    http1 = cl[envoy_config.CHECK_CLUSTER]
    explicit = http1["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"]
    assert set(explicit) == {"http_protocol_options"}, explicit
    assert "http2_protocol_options" not in http1  # nor the deprecated spelling
    assert http1["health_checks"], "jira_authz_http1 without a health check"
    for hc in http1["health_checks"]:
        assert hc.get("http_health_check") == {"path": check_http1.HEALTH_PATH.decode()}
        assert "grpc_health_check" not in hc
    assert http1["lb_policy"] == "ROUND_ROBIN"
    addrs = endpoints(http1)
    assert all(set(a) == {"socket_address"} for a in addrs), addrs
    if ports is not None:
        assert http1_ports(cfg) == list(ports)
    if host is not None:
        assert {a["socket_address"]["address"] for a in addrs} == {host}
