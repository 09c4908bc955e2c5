"""Each framework lever on/off, measured in one run: ``python -m bench.levers``.

* ``headers``: what ``allowed_headers`` saves the server per Check — the CheckRequest Envoy
  sends with a realistic client's headers (a Jira script or browser: cookies, accept-*,
  tracing, forwarding) against the same request cut to the allowed list; bytes on the wire and
  µs to parse and translate it (``ParseFromString`` + ``to_http_request``), interleaved.
* ``serialize``: what a pre-serialised answer would save: µs to serialise the cached allow
  response (the ResponseBuilder already reuses built messages).
* ``loop``: server CPU per Check of the allow-all grpc.aio server on asyncio vs uvloop, and of
  the native stub, direct (h2load, fixed request count), interleaved repetitions. CPU per
  Check is read from /proc, so it is less disturbed by other work than throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from authz.domain.model import Decision, Outcome, Reason
from authz.envoyauth.request import HEADERS_READ, to_http_request
from authz.envoyauth.response import ResponseBuilder
from bench import tools
from bench.checks import CHECK_PATH, check_request, grpc_frame

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PY = sys.executable

# What a Jira REST client sends besides its credentials (python-requests / a browser session
# calling the REST API), plus what Envoy adds before the Check.
CLIENT_HEADERS = {
    "authorization": "Basic YWxpY2U6amF0X1VDUjdLcmcxNVp1Q2xOSHR0Z1M4V0xUSFRubmFzSURSMVREcTR0",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36",
    "accept": "application/json,text/javascript,*/*;q=0.01",
    "accept-encoding": "gzip, deflate, br, zstd",
    "accept-language": "en-GB,en;q=0.9,de;q=0.8",
    "content-type": "application/json",
    "cookie": "JSESSIONID=3C1F5B0E0D4A4A6E9C1E2B7F6A5D4C3B; atlassian.xsrf.token=B1C2-D3E4-"
              "F5G6-H7I8_0123456789abcdef0123456789abcdef_lin; seraph.rememberme.cookie="
              "12345%3Aabcdef0123456789abcdef0123456789abcdef01; ajs_anonymous_id=%22"
              "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0%22",
    "referer": "https://jira.example.com/browse/KANBAN-100",
    "origin": "https://jira.example.com",
    "x-atlassian-token": "no-check",
    "sec-fetch-mode": "cors",
    "sec-fetch-site": "same-origin",
    "sec-fetch-dest": "empty",
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-platform": '"Linux"',
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "x-forwarded-for": "192.0.2.10",
    "x-envoy-external-address": "192.0.2.10",
    "x-forwarded-proto": "https",
}


def _interleaved(fns: dict[str, Any], number: int, reps: int) -> dict[str, float]:
    """Median µs per call of each function, runs interleaved so drift hits all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            samples[k].append(timeit.timeit(fn, number=number) / number * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def headers_lever(number: int = 20000, reps: int = 7) -> dict[str, Any]:
    full = check_request("GET", "/rest/api/2/issue/KANBAN-100?fields=summary",
                         CLIENT_HEADERS).SerializeToString()
    keep = {*HEADERS_READ, "contextuser"}
    allowed_msg = external_auth_pb2.CheckRequest.FromString(full)
    http = allowed_msg.attributes.request.http
    for k in list(http.headers):
        if k not in keep:
            del http.headers[k]
    allowed = allowed_msg.SerializeToString()

    def parse(raw: bytes) -> Any:
        return lambda: to_http_request(external_auth_pb2.CheckRequest.FromString(raw), ())

    us = _interleaved({"all headers": parse(full), "allowed_headers": parse(allowed)},
                      number, reps)
    return {"bytes": {"all headers": len(full), "allowed_headers": len(allowed)},
            "parse_translate_us": us,
            "headers": {"all headers": len(external_auth_pb2.CheckRequest.FromString(
                full).attributes.request.http.headers), "allowed_headers": len(http.headers)}}


def serialize_lever(number: int = 50000, reps: int = 7) -> dict[str, Any]:
    resp = ResponseBuilder("contextUser", "Jira").build(
        Decision(Outcome.ALLOW, Reason.OK, 200, "", None, "alice", "alice", ".*", True, ""))
    us = _interleaved({"serialise allow": resp.SerializeToString}, number, reps)
    return {"serialise_allow_us": us["serialise allow"], "bytes": resp.ByteSize()}


def _h2load(port: int, body: Path, n: int) -> float:
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "1", "-t", "1", "-m", "16", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{HOST}:{port}{CHECK_PATH}"],
        capture_output=True, text=True, timeout=300).stdout
    for line in out.splitlines():
        if "req/s" in line and "finished in" in line:
            return float(line.split(",")[1].split()[0])
    raise RuntimeError(out[-1000:])


def loop_lever(n: int = 20000, reps: int = 3, native: str | None = None) -> dict[str, Any]:
    from authz.stack.processes import free_port, grpc_health_probe, wait_until

    body = Path(tempfile.mkdtemp(prefix="levers-")) / "check.bin"
    body.write_bytes(grpc_frame(check_request("GET", "/rest/api/2/myself",
                                              {"authorization": "Basic eDp5"})
                                .SerializeToString()))
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for loop in ("asyncio", "uvloop"):
            port = free_port()
            servers[f"allow-all {loop}"] = (subprocess.Popen(
                [PY, "-m", "bench.allow_all", "--listen", f"{HOST}:{port}", "--event-loop",
                 loop], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port)
        if native:
            port = free_port()
            servers["native stub"] = (subprocess.Popen(
                [native, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port)
        for name, (_, port) in servers.items():
            wait_until(name, grpc_health_probe(f"{HOST}:{port}", require_serving=False)
                       if name != "native stub" else _tcp(port), timeout=30)
        out: dict[str, dict[str, list[float]]] = {k: {"cpu_us": [], "rps": []} for k in servers}
        for _, port in servers.values():  # warm-up
            _h2load(port, body, 2000)
        for _ in range(reps):
            for name, (proc, port) in servers.items():
                cpu0 = tools.cpu_seconds([proc.pid])
                rps = _h2load(port, body, n)
                cpu = tools.cpu_seconds([proc.pid]) - cpu0
                out[name]["cpu_us"].append(cpu / n * 1e6)
                out[name]["rps"].append(rps)
        return {k: {"cpu_us_per_check": statistics.median(v["cpu_us"]),
                    "direct_rps": statistics.median(v["rps"]), "samples": v}
                for k, v in out.items()}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
        body.unlink(missing_ok=True)


def _tcp(port: int) -> Any:
    from authz.stack.processes import tcp_probe

    return tcp_probe(HOST, port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.levers")
    p.add_argument("--native", help="the native stub binary (../shared/anchors/build.sh)")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    print(json.dumps({"headers": headers_lever(), "serialize": serialize_lever(),
                      "loop": loop_lever(a.requests, a.reps, a.native)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
