"""Prometheus series (product.md §9). Names follow the conventions: ``jira_authz_``, base units.

Counters and histograms on the request path are module-level; the components' own counters
(cache, audit) are read at scrape time by ``RuntimeCollector`` so the hot path pays nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from authz.domain.model import Outcome, Reason

disable_created_metrics()  # *_created series double the exposition for no alerting value

# Sub-millisecond decisions need fine low buckets; the tail goes up to the Check timeout.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

REDIS_ERRORS = Counter(
    "jira_authz_redis_errors_total", "Redis failures seen by decisions (answered 503 or stale)"
)
REDIS_LATENCY = Histogram(
    "jira_authz_redis_latency_seconds", "Token store reads on cache misses",
    buckets=_LATENCY_BUCKETS,
)
AUDIT_EMIT_FAILURES = Counter(
    "jira_authz_audit_emit_failures_total",
    "Token calls whose audit event could not be queued (buffer full or audit failure)",
)
REVOCATION_PROPAGATION = Histogram(
    "jira_authz_revocation_propagation_seconds",
    "Delay from a token change being published to this replica applying it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CHECK_HTTP1_REFUSED = Counter(
    "jira_authz_check_http1_refused_total",
    "Requests on the HTTP/1.1 Check port answered without a decision, by HTTP status",
    ["status"],
)
REDIS_UP = Gauge("jira_authz_redis_up", "1 when the last readiness PING to Redis succeeded")
BUILD = Info("jira_authz_build", "Version of the running jira-authz")


def _version() -> str:
    try:
        return metadata.version("jira-authz")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD.info({"version": _version()})


class RuntimeCollector(Collector):
    """Exposes the caches' and audit streams' counters, read at scrape time.

    One collector for the process, summing over every running server (normally one; tests and
    benchmarks run several in one process)."""

    def __init__(self) -> None:
        self.parts: list[tuple[Any, Any]] = []
        self.audit_lost_unqueued = 0
        """Events lost before any audit stream saw them (building or queueing one raised):
        folded into ``jira_authz_audit_dropped``, the series the shipped alert watches."""

    def count_audit_lost(self) -> None:
        self.audit_lost_unqueued += 1

    def collect(self) -> Iterator[Any]:
        caches = [c for c, _ in self.parts]
        audits = [a for _, a in self.parts]

        def total(objs: list[Any], attr: str) -> float:
            return float(sum(getattr(o.stats, attr) for o in objs))

        lookups = CounterMetricFamily("jira_authz_cache_lookups", "Token cache lookups",
                                      labels=["result"])
        lookups.add_metric(["hit"], total(caches, "hits"))
        lookups.add_metric(["miss"], total(caches, "misses"))
        lookups.add_metric(["stale"], total(caches, "stale_serves"))
        yield lookups
        yield GaugeMetricFamily("jira_authz_cache_entries", "Entries in the token cache",
                                value=float(sum(len(c) for c in caches)))
        yield CounterMetricFamily("jira_authz_cache_evictions", "Cache entries evicted (LRU)",
                                  value=total(caches, "evictions"))
        yield CounterMetricFamily("jira_authz_invalidations",
                                  "Token change messages received over pub/sub",
                                  value=total(caches, "invalidations"))
        yield CounterMetricFamily("jira_authz_pubsub_resubscribes",
                                  "Times the invalidation subscription was re-established",
                                  value=total(caches, "resubscribes"))
        yield GaugeMetricFamily("jira_authz_pubsub_subscribed",
                                "1 while every invalidation subscription is up",
                                value=1.0 if caches and all(c.subscribed for c in caches)
                                else 0.0)
        yield GaugeMetricFamily("jira_authz_audit_queue_depth",
                                "Audit events buffered, not yet written",
                                value=float(sum(a.stats.depth for a in audits)))
        events = CounterMetricFamily("jira_authz_audit_events", "Audit events by outcome",
                                     labels=["outcome"])
        events.add_metric(["queued"], total(audits, "emitted"))
        events.add_metric(["flushed"], total(audits, "flushed"))
        dropped = total(audits, "dropped") + self.audit_lost_unqueued
        events.add_metric(["dropped"], dropped)
        yield events
        yield CounterMetricFamily("jira_authz_audit_dropped",
                                  "Audit events that could not be kept",
                                  value=dropped)
        yield CounterMetricFamily(
            "jira_authz_audit_untrusted_suppressed",
            "Calls without a valid token not audited one by one (rate bound); counted in "
            "summary events", value=total(audits, "suppressed"))
        yield CounterMetricFamily("jira_authz_audit_flush_errors",
                                  "Failed audit writes (retried)",
                                  value=total(audits, "flush_errors"))


RUNTIME = RuntimeCollector()
REGISTRY.register(RUNTIME)
count_audit_lost = RUNTIME.count_audit_lost


class DecisionCounts(Collector):
    """``jira_authz_decisions_total`` by result and reason, counted in a plain dict.

    Per Check, a prometheus_client labelled child costs a lock and its bookkeeping, several
    microseconds beside gRPC; this is one dict update. Counted on the event-loop thread (as the
    cache and audit counters), read by the scrape thread.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[Outcome, Reason], int] = {}

    def inc(self, outcome: Outcome, reason: Reason) -> None:
        key = (outcome, reason)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def collect(self) -> Iterator[Any]:
        fam = CounterMetricFamily("jira_authz_decisions", "Check decisions by result and reason",
                                  labels=["result", "reason"])
        for (outcome, reason), n in list(self.counts.items()):
            fam.add_metric([outcome.value, reason.value], float(n))
        yield fam


class LatencyHistogram(Collector):
    """A histogram observed with one ``bisect`` (prometheus_client's walks every bucket under a
    lock: several microseconds per Check beside gRPC). Observed on the event-loop thread."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = buckets
        self.buckets = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1  # le: bound >= value
        self.sum += value

    def collect(self) -> Iterator[Any]:
        counts, total = list(self.buckets), self.sum
        cumulative, running = [], 0
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), counts, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative,
                                    sum_value=total)


DECISIONS = DecisionCounts()
REGISTRY.register(DECISIONS)
count_decision = DECISIONS.inc
CHECK_DURATION = LatencyHistogram(
    "jira_authz_check_duration_seconds", "Time to answer one Check", _LATENCY_BUCKETS
)
REGISTRY.register(CHECK_DURATION)


def register_runtime(cache: Any, audit: Any) -> Callable[[], None]:
    """Count this server's cache and audit stream; returns the function that stops it."""
    part = (cache, audit)
    RUNTIME.parts.append(part)
    return lambda: RUNTIME.parts.remove(part)
