"""The graph core against the generator's truth: the bounded graph, fed the conversions topic
in event-time order, finds (almost) every conversion the truth's unbounded ceiling links."""

from __future__ import annotations

from bench.graph_reach import measure


def test_bounded_graph_reaches_the_truths_ceiling_on_cookie_churn():
    r = measure("cookie-churn", 3, users=500, days=10)
    assert r.ceiling_gained_vs_own >= 10
    assert r.gained_vs_own <= r.ceiling_gained_vs_own
    assert r.gained_vs_own >= 0.9 * r.ceiling_gained_vs_own
    assert r.graph >= r.own_no_address and r.ceiling >= r.linkable
    assert r.hops.get(1, 0) > 0 and set(r.hops) <= {1, 2, 3}
    assert 100 < r.bytes_per_entry < 250
