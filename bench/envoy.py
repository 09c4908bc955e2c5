"""Envoy configs for the three scenarios, derived from the shipped deploy/envoy/sidecar.yaml.

All three keep every setting of the shipped sidecar (normalisation, access log, ext_authz
timeout and failure mode, HTTP/2 options of the authz cluster) and change only:

* the ``jira`` route answers ``direct_response`` 200, so the upstream costs nothing and the
  three differ only in authorization;
* (a) ``none``: the ext_authz filter is removed: the limit;
* (b)/(c): the Check cluster lists one endpoint per server process (``ports``), which is how
  ``--workers N`` is meant to be deployed (round-robin over ports spreads Checks): the shipped
  bridge's ``jira_authz_http1`` for HTTP/1.1 servers, ``jira_authz`` itself for gRPC-only ones.
"""

from __future__ import annotations

from typing import Any

from authz.stack import envoy_config

EXT_AUTHZ = "envoy.filters.http.ext_authz"


def build(*, listener_port: int, admin_port: int, authz_ports: list[int] | None,
          host: str = "127.0.0.1", allowed_headers: bool = True,
          no_credentials_route: bool = True, http1_ports: list[int] | None = None
          ) -> dict[str, Any]:
    """The shipped sidecar with a direct_response upstream; no ext_authz if ``authz_ports``
    is None. With ``http1_ports`` the Check goes through the shipped bridge to those ports (as
    shipped); without, straight to the gRPC ``authz_ports`` (``envoy_config.direct_grpc``).
    ``allowed_headers`` / ``no_credentials_route`` False turn those levers off (every header
    to the Check; requests without Authorization checked too), as before issue 15."""
    cfg = envoy_config.patch(
        envoy_config.load(envoy_config.SIDECAR),
        listener_port=listener_port,
        admin_port=admin_port,
        clusters={"jira": (host, 9), envoy_config.CHECK_CLUSTER: (host, http1_ports or [9])},
    )
    if not http1_ports:
        cfg = envoy_config.direct_grpc(cfg, host, authz_ports or [9])
    listener = cfg["static_resources"]["listeners"][0]
    hcm_filter = next(f for f in listener["filter_chains"][0]["filters"]
                      if f["name"] == "envoy.filters.network.http_connection_manager")
    hcm = hcm_filter["typed_config"]
    for vh in hcm["route_config"]["virtual_hosts"]:
        for route in vh["routes"]:
            if "route" in route and route["route"].get("cluster") == "jira":
                del route["route"]
                route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    if not no_credentials_route:
        for vh in hcm["route_config"]["virtual_hosts"]:
            vh["routes"] = [r for r in vh["routes"]
                            if r.get("name") != envoy_config.NO_CREDENTIALS_ROUTE]
    if not allowed_headers:
        for f in hcm["http_filters"]:
            if f["name"] == EXT_AUTHZ:
                f["typed_config"].pop("allowed_headers", None)
    if authz_ports is None:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != EXT_AUTHZ]
        for vh in hcm["route_config"]["virtual_hosts"]:
            for route in vh["routes"]:
                route.get("typed_per_filter_config", {}).pop(EXT_AUTHZ, None)
    for c in cfg["static_resources"]["clusters"]:
        c.pop("health_checks", None)  # the allow-all servers have no readiness endpoint
    return cfg
