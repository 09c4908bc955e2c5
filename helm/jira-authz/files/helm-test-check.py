"""`helm test` for jira-authz: real Checks over the gRPC API and the HTTP/1.1 port Envoy uses.

Runs in the jira-authz image (grpcio, Envoy's protobuf types and the authz package are there).
Passes only when the release decides like it will for Envoy:
  1. the gRPC health service answers SERVING;
  2. a well-formed but unknown token is refused with 401 — this needs a token-store (Redis)
     lookup, so it proves the whole decision path, not just a listening port;
  3. a request without credentials is passed on with a forged identity header removed
     (auth.unauthenticated: pass) or refused with 401 (deny);
  4. with --http1-target, the HTTP/1.1 Check port (listen.check_http1, what the shipped Envoy
     configs call through grpc_http1_reverse_bridge) is ready (GET /healthz) and refuses the
     unknown token with 401 too, answering the bridge's content type.
Exit status 0 on success; one line per step on stdout.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import sys
import uuid

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.check_http1 import CHECK_PATH, CONTENT_TYPE, HEALTH_PATH
from authz.domain.token_format import generate_secret

OK, UNAUTHENTICATED = 0, 16


def check_request(path: str, headers: dict[str, str]) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    req.attributes.source.address.socket_address.address = "192.0.2.10"
    req.attributes.source.address.socket_address.port_value = 40000
    http = req.attributes.request.http
    http.method = "GET"
    http.scheme = "https"
    http.host = "jira.helm-test.invalid"
    http.path = path
    http.protocol = "HTTP/1.1"
    base = {
        ":method": "GET",
        ":path": path,
        ":authority": http.host,
        ":scheme": "https",
        "user-agent": "jira-authz-helm-test",
        "x-request-id": str(uuid.uuid4()),
    }
    for k, v in {**base, **headers}.items():
        http.headers[k.lower()] = v
    return req


def header_value(opts, name: str) -> str | None:  # opts: repeated HeaderValueOption
    for opt in opts:
        if opt.header.key.lower() == name.lower():
            return opt.header.value
    return None


def http1(target: str, method: str, path: bytes, body: bytes | None,
          timeout: float) -> tuple[int, str, bytes]:
    """One HTTP/1.1 exchange with the Check port, as Envoy's bridge makes it."""
    host, _, port = target.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"content-type": CONTENT_TYPE.decode()} if body is not None else {}
        conn.request(method, path.decode(), body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def refuses_unknown_token(resp: external_auth_pb2.CheckResponse) -> tuple[bool, str]:
    http_status = resp.denied_response.status.code if resp.HasField("denied_response") else 0
    ok = (resp.status.code == UNAUTHENTICATED and http_status == 401
          and header_value(resp.denied_response.headers, "www-authenticate") is not None)
    body = resp.denied_response.body[:120]
    return ok, f"grpc={resp.status.code} http={http_status} body={body!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host:port of the Check service")
    ap.add_argument("--http1-target", default="",
                    help="host:port of the Check over HTTP/1.1 (listen.check_http1); empty: skip")
    ap.add_argument("--path-prefix", default="/rest/")
    ap.add_argument("--identity-header", default="contextUser")
    ap.add_argument("--schemes", default="basic,bearer")
    ap.add_argument("--unauthenticated", choices=["pass", "deny"], default="pass")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    failures: list[str] = []

    def step(ok: bool, what: str, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}", flush=True)
        if not ok:
            failures.append(what)

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            print(f"FAIL connect: no gRPC server at {args.target}", flush=True)
            return 1
        health = health_pb2_grpc.HealthStub(channel)
        authz = external_auth_pb2_grpc.AuthorizationStub(channel)

        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
        serving = status.status == health_pb2.HealthCheckResponse.SERVING
        step(serving, "health", health_pb2.HealthCheckResponse.ServingStatus.Name(status.status))

        # A secret of our format (prefix + checksum) that no token has: only the token store can
        # tell, so a 401 here means Redis was asked and answered.
        secret = generate_secret()
        schemes = {s.strip() for s in args.schemes.split(",")}
        if "basic" in schemes:
            cred = "Basic " + base64.b64encode(f"helm-test:{secret}".encode()).decode()
        else:
            cred = f"Bearer {secret}"
        path = args.path_prefix.rstrip("/") + "/api/2/myself"
        token_call = check_request(path, {"authorization": cred})
        ok, detail = refuses_unknown_token(authz.Check(token_call, timeout=args.timeout))
        step(ok, "unknown token", detail)

        forged = {args.identity_header: "helm-test-forged-identity"}
        resp = authz.Check(check_request(path, forged), timeout=args.timeout)
        if args.unauthenticated == "pass":
            ok = resp.status.code == OK and resp.HasField("ok_response")
            removed = {h.lower() for h in resp.ok_response.headers_to_remove}
            overwritten = header_value(resp.ok_response.headers, args.identity_header)
            stripped = args.identity_header.lower() in removed or (
                overwritten is not None and overwritten != "helm-test-forged-identity"
            )
            step(ok and stripped, "no credentials",
                 f"grpc={resp.status.code} identity header removed={stripped}")
        else:
            http_status = (
                resp.denied_response.status.code if resp.HasField("denied_response") else 0
            )
            step(http_status == 401, "no credentials",
                 f"grpc={resp.status.code} http={http_status}")

    if args.http1_target:
        # The port the gateway's Envoy calls; a failure here is a 503 for every token call.
        try:
            status, _, body = http1(args.http1_target, "GET", HEALTH_PATH, None, args.timeout)
            step(status == 200, "http1 health", f"{status} {body[:40]!r}")
            status, ctype, body = http1(args.http1_target, "POST", CHECK_PATH,
                                        token_call.SerializeToString(), args.timeout)
            if status == 200 and ctype == CONTENT_TYPE.decode():
                ok, detail = refuses_unknown_token(
                    external_auth_pb2.CheckResponse.FromString(body))
                step(ok, "http1 unknown token", detail)
            else:
                step(False, "http1 unknown token", f"{status} {ctype!r} {body[:120]!r}")
        except OSError as e:
            step(False, "http1 connect", f"{args.http1_target}: {e}")

    if failures:
        print(f"helm test failed: {', '.join(failures)}", flush=True)
        return 1
    print("helm test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
