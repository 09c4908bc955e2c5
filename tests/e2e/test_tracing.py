"""Tracing through a real Envoy: the span jira-authz exports for a Check belongs to the trace
the client started and Envoy continued (product.md §9). Envoy and jira-authz both export over
OTLP to a collector run by the test."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from authz.stack import envoy_config
from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: remembers (service, trace id, span name, attrs)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), "")
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {a.key: a.value for a in span.attributes}
                        self.spans.append((service, span.trace_id.hex(), span.name, attrs))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield c, port
    finally:
        server.stop(0)


def traced_envoy_config(tmp: Path, collector_port: int) -> Path:
    """The shipped sidecar config plus an OpenTelemetry tracer exporting to the collector."""
    cfg = envoy_config.load(envoy_config.SIDECAR)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    hcm["tracing"] = {"provider": {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"},
                             "timeout": "1s"},
            "service_name": "envoy-sidecar",
        },
    }}
    cfg["static_resources"]["clusters"].append({
        "name": "otel_collector", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "otel_collector", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": collector_port}}}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                         ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
    })
    path = tmp / "traced-sidecar.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_span_carries_the_trace_id_envoy_sent(
    tmp_path: Path, collector: tuple[Collector, int], api: Any
) -> None:
    c, port = collector
    stack = LocalStack(
        key_prefix=f"trace-{uuid.uuid4().hex[:8]}:",
        workdir=tmp_path / "stack",
        inherit_config_env=False,
        envoy_config_name=str(traced_envoy_config(tmp_path, port)),
        env_overrides={
            "JIRA_AUTHZ_TRACING_EXPORTER": "otlp",
            "JIRA_AUTHZ_TRACING_ENDPOINT": f"http://127.0.0.1:{port}",
        },
    )
    trace_id = uuid.uuid4().hex
    parent = uuid.uuid4().hex[:16]
    with stack:
        tok = api.create_token(stack, "--user", "alice")
        reply = api.send(stack, "/rest/api/2/issue/A-1", [
            ("Authorization", api.basic("alice", tok["secret"])),
            ("traceparent", f"00-{trace_id}-{parent}-01"),
        ])
        assert reply.status == 200 and reply.from_jira
        deadline = time.monotonic() + 20  # both exporters batch (Envoy ~5 s, SDK ~5 s)
        ours: list[tuple[str, str, str, dict[str, Any]]] = []
        while time.monotonic() < deadline:
            with c.lock:
                ours = [s for s in c.spans if s[0] == "jira-authz" and s[1] == trace_id]
            if ours:
                break
            time.sleep(0.1)
    assert ours, f"no jira-authz span in trace {trace_id}; got {c.spans}"
    _service, _trace, name, attrs = ours[0]
    assert name == "ext_authz Check"
    assert attrs["jira_authz.decision"].string_value == "allow"
    assert attrs["jira_authz.token_id"].string_value == tok["id"]
    assert all(tok["secret"] not in str(v) for v in attrs.values())
