"""The hot-path metrics (plain counters exposed by collectors) expose what prometheus_client's
own Counter and Histogram would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from authz import metrics
from authz.domain.model import Outcome, Reason

_BOUNDS = (0.0001, 0.00025, 0.001, 0.0015, 0.01, 0.5, 1.0)


def _samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in collector.collect() for s in fam.samples}  # type: ignore[attr-defined]


@given(st.lists(st.one_of(st.sampled_from(_BOUNDS), st.floats(0, 3, allow_nan=False)),
                max_size=40))
def test_latency_histogram_matches_prometheus_client(values: list[float]) -> None:
    ours = metrics.LatencyHistogram("x_seconds", "doc", _BOUNDS)
    theirs = Histogram("x_seconds", "doc", buckets=_BOUNDS, registry=CollectorRegistry())
    for v in values:
        ours.observe(v)
        theirs.observe(v)
    want = {k: v for k, v in _samples(theirs).items() if not k[0].endswith("_created")}
    got = _samples(ours)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_decision_counts_by_result_and_reason() -> None:
    counts = metrics.DecisionCounts()
    for _ in range(3):
        counts.inc(Outcome.ALLOW, Reason.OK)
    counts.inc(Outcome.DENY, Reason.WRONG_USER)
    assert _samples(counts) == {
        ("jira_authz_decisions_total", (("reason", "ok"), ("result", "allow"))): 3.0,
        ("jira_authz_decisions_total", (("reason", "wrong_user"), ("result", "deny"))): 1.0,
    }
