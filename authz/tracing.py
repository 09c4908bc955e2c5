"""OpenTelemetry: one span per Check, continuing the trace Envoy started.

Envoy puts ``traceparent`` (or B3 headers) into the Check call's gRPC metadata, not into the
CheckRequest; the span is a child of that context. Attributes are an allow-list of non-secret
facts (never the Authorization header, never the query string).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from authz.config import ConfigError, TracingConfig
from authz.domain.model import Decision, HttpRequest

_TRACER_NAME = "jira-authz"
_NO_SPAN = nullcontext(None)


class Tracing:
    """Owns the tracer provider of one server (not the global one: tests run several)."""

    def __init__(self, cfg: TracingConfig, processor: SpanProcessor | None = None) -> None:
        self.enabled = cfg.exporter != "none" or processor is not None
        self.provider: TracerProvider | None = None
        if not self.enabled:
            self.tracer = trace.NoOpTracer()
            return
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        )
        if processor is None:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as e:
                raise ConfigError(
                    "tracing.exporter",
                    f"the OTLP exporter cannot load ({e}); xds-protos overwrites "
                    "opentelemetry-proto's modules when installed after it: run "
                    "`pip install --force-reinstall --no-deps opentelemetry-proto`",
                ) from None

            insecure = cfg.endpoint.startswith("http://")
            processor = BatchSpanProcessor(
                OTLPSpanExporter(endpoint=cfg.endpoint, insecure=insecure)
            )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(_TRACER_NAME)

    def check_span(
        self, metadata: Iterable[tuple[str, Any]] | None
    ) -> AbstractContextManager[Any]:
        """The Check's span (None when tracing is off: a shared no-op context, nothing built
        per Check)."""
        if not self.enabled:
            return _NO_SPAN
        return self._span(metadata)

    @contextmanager
    def _span(self, metadata: Iterable[tuple[str, Any]] | None) -> Iterator[Any]:
        carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
        with self.tracer.start_as_current_span(
            "ext_authz Check", context=extract(carrier), kind=trace.SpanKind.SERVER
        ) as span:
            yield span

    @staticmethod
    def annotate(span: Any, req: HttpRequest, decision: Decision) -> None:
        if span is None or not span.is_recording():
            return
        span.set_attribute("http.request.method", req.method)
        span.set_attribute("url.path", req.path)
        span.set_attribute("jira_authz.decision", decision.outcome.value)
        span.set_attribute("jira_authz.reason", decision.reason.value)
        span.set_attribute("http.response.status_code", decision.status)
        if req.request_id:
            span.set_attribute("http.request.id", req.request_id)
        if decision.token is not None:
            span.set_attribute("jira_authz.token_id", decision.token.id)
        if decision.effective_user:
            span.set_attribute("enduser.id", decision.effective_user)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
