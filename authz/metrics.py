"""Prometheus series. Module-level so every component counts into one registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Sub-millisecond decisions need fine low buckets; the tail goes up to the Check timeout.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

DECISIONS = Counter(
    "jira_authz_decisions_total", "Check decisions by result and reason", ["result", "reason"]
)
CHECK_DURATION = Histogram(
    "jira_authz_check_duration_seconds", "Time to answer one Check", buckets=_LATENCY_BUCKETS
)
STORE_ERRORS = Counter(
    "jira_authz_redis_errors_total", "Token store (Redis) failures seen by decisions"
)
AUDIT_DROPPED = Counter(
    "jira_authz_audit_dropped_total", "Audit events that could not be kept"
)
AUDIT_QUEUE_DEPTH = Gauge("jira_authz_audit_queue_depth", "Audit events waiting to be written")
