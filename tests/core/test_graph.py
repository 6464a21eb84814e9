"""The identity graph's pure logic: nodes, per-node adjacency rows, multi-hop expansion."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstream.core.graph.adjacency import (
    AdjacencyRow,
    degree,
    is_shared,
    link,
    link_event,
)
from convstream.core.graph.expand import expand
from convstream.core.graph.nodes import browser_id, event_nodes, node_key
from convstream.core.units import DAY_MS

T = 1_767_571_200_000


class Table(dict):
    """A table keyed by node: rows in, rows out, as the worker's Faust table would hold them."""

    def feed(self, nodes: list[str], ts: int, **bounds: Any):
        out = link_event(self.get, nodes, ts, **bounds)
        self.update(out.rows)
        return out


def chain(table: Table, *nodes: str, ts: int = T, step: int = 0) -> None:
    for i, (a, b) in enumerate(zip(nodes, nodes[1:], strict=False)):
        table.feed([a, b], ts + i * step)


def reached(out) -> dict[str, int]:
    return {r.node: r.hop_count for r in out.reached}


def test_expiry_is_event_time_and_ignores_links_after_the_conversion():
    table = Table()
    table.feed(["a|browser:b", "a|click:k"], T)
    assert reached(expand(["a|browser:b"], table.get, T + 29 * DAY_MS)) == {"a|click:k": 1}
    assert reached(expand(["a|browser:b"], table.get, T + 31 * DAY_MS)) == {}
    # A link first seen after the conversion's ts is no evidence for it.
    assert reached(expand(["a|browser:b"], table.get, T - 1)) == {}
    # A write prunes by its own event's ts, whatever the wall clock says.
    table.feed(["a|browser:b", "a|em:e"], T + 40 * DAY_MS)
    assert list(table["a|browser:b"]["links"]) == ["a|em:e"]
    # ... and a shorter TTL is honoured on both sides.
    table.feed(["a|em:e", "a|ph:p"], T + 41 * DAY_MS)
    at = T + 45 * DAY_MS
    assert reached(expand(["a|em:e"], table.get, at, ttl_ms=2 * DAY_MS)) == {}
    assert reached(expand(["a|em:e"], table.get, at, ttl_ms=9 * DAY_MS // 2)) == {"a|ph:p": 1}
    # Inclusive at exactly the TTL.
    assert len(reached(expand(["a|em:e"], table.get, at, ttl_ms=5 * DAY_MS))) == 2


def test_a_refreshed_link_keeps_its_first_sighting_and_ages_from_the_last():
    table = Table()
    table.feed(["a|browser:b", "a|em:e"], T)
    table.feed(["a|browser:b", "a|em:e"], T + DAY_MS)
    (r,) = expand(["a|browser:b"], table.get, T + 3 * DAY_MS).reached
    assert (r.path[0].first_age_ms, r.path[0].last_age_ms) == (3 * DAY_MS, 2 * DAY_MS)


def test_degree_cap_marks_a_shared_node_and_expansion_stops_there():
    table = Table()
    hub = "a|em:test"
    table.feed(["a|browser:b0", hub], T)
    for i in range(1, 6):
        out = table.feed([hub, f"a|browser:b{i}"], T + i, max_degree=4)
    assert degree(table[hub], T + 10) == 4
    assert is_shared(table[hub], T + 10)
    # The hub is reached from b0, but nothing behind it is.
    out = expand(["a|browser:b0"], table.get, T + 10)
    assert reached(out) == {hub: 1} and out.shared == [hub]
    # Counted once, when the node first refused a link.
    table2 = Table()
    counts = [
        table2.feed([hub, f"a|click:k{i}"], T + i, max_degree=2).newly_shared for i in range(5)
    ]
    assert counts == [[], [], [hub], [], []]
    # Shared until the TTL after the last refusal, then expanded again (its links expired too).
    assert is_shared(table2[hub], T + 4 + 30 * DAY_MS)
    assert not is_shared(table2[hub], T + 5 + 30 * DAY_MS)


def test_path_records_hops_ages_degrees_and_determinism():
    table = Table()
    table.feed(["a|browser:b1", "a|click:k1"], T)  # landing page view with the click id
    table.feed(["a|browser:b1", "a|device:d1"], T + DAY_MS)
    table.feed(["a|device:d1", "a|browser:b2"], T + 2 * DAY_MS)
    table.feed(["a|browser:b2", "a|em:e1"], T + 3 * DAY_MS)
    out = expand(["a|em:e1"], table.get, T + 4 * DAY_MS)
    assert reached(out) == {
        "a|browser:b2": 1,
        "a|device:d1": 2,
        "a|browser:b1": 3,
    }
    far = out.reached[-1]
    assert [(h.source, h.target) for h in far.path] == [
        ("a|em:e1", "a|browser:b2"),
        ("a|browser:b2", "a|device:d1"),
        ("a|device:d1", "a|browser:b1"),
    ]
    assert [h.source_degree for h in far.path] == [1, 2, 2]
    assert [h.last_age_ms // DAY_MS for h in far.path] == [1, 2, 3]
    assert [h.deterministic for h in far.path] == [True, False, False]
    assert not far.deterministic and out.reached[0].deterministic
    assert far.seed == "a|em:e1"
    # The click id is a fourth hop: beyond the bound.
    assert "a|click:k1" not in reached(out)
    assert reached(expand(["a|em:e1"], table.get, T + 4 * DAY_MS, max_hops=4))["a|click:k1"] == 4


def test_shortest_path_wins_over_a_longer_one_found_in_the_same_walk():
    table = Table()
    chain(table, "a|em:e", "a|browser:b", "a|click:k")
    table.feed(["a|em:e", "a|click:k"], T)
    assert reached(expand(["a|em:e"], table.get, T + 1)) == {"a|browser:b": 1, "a|click:k": 1}


def test_fan_out_and_node_bounds_hold_and_prefer_deterministic_then_recent_links():
    table = Table()
    for i in range(20):
        table.feed(["a|browser:b", f"a|click:k{i:02d}"], T + i)
    table.feed(["a|browser:b", "a|device:d"], T + 100)
    out = expand(["a|browser:b"], table.get, T + 200, max_fanout=5)
    assert [r.node for r in out.reached] == [f"a|click:k{i:02d}" for i in (19, 18, 17, 16, 15)]
    assert out.truncated == 16
    # The node bound holds across hops.
    for i in range(20):
        table.feed([f"a|click:k{i:02d}", f"a|em:e{i:02d}"], T + 50)
    out = expand(["a|browser:b"], table.get, T + 200, max_fanout=30, max_nodes=25)
    assert len(out.reached) == 25 and out.truncated > 0
    assert len({r.node for r in out.reached}) == 25


def test_nodes_are_scoped_to_the_advertiser():
    table = Table()
    table.feed(event_nodes("a", {"em": "e1"}, fbp="fb.1.1.111"), T)
    table.feed(event_nodes("b", {"em": "e1", "click_id": "k9"}), T)
    out = expand([node_key("a", "em", "e1")], table.get, T + 1)
    assert [r.node.split("|")[0] for r in out.reached] == ["a"]
    assert node_key("b", "click", "k9") not in reached(out)
    # A row that somehow names another advertiser's node is not followed.
    rogue: AdjacencyRow = {"links": {"b|click:k9": [T, T, True]}, "shared": None}
    assert reached(expand(["a|em:x"], {"a|em:x": rogue}.get, T + 1)) == {}


def test_browser_id_is_hashed_and_junk_fbp_is_no_node():
    assert event_nodes("a", {}, fbp="fb.1.1700000000000.99") == [
        node_key("a", "browser", browser_id("fb.1.1700000000000.99") or "")
    ]
    for junk in ("", "fb.1..1", "fb.1.x.1", "abc", None, ["fb.1.1.1"]):
        assert event_nodes("a", {}, fbp=junk) == []
    with pytest.raises(ValueError):
        node_key("a", "ip", "10.0.0.1")


def test_link_is_pure_and_an_event_with_many_nodes_is_bounded():
    row, _ = link(None, "a|em:e", T, deterministic=True)
    again, _ = link(row, "a|em:e", T + 5, deterministic=True)
    assert row["links"]["a|em:e"] == [T, T, True]  # the input row is not changed
    assert again["links"]["a|em:e"] == [T, T + 5, True]
    many = [f"a|em:e{i:02d}" for i in range(20)]
    out = link_event(Table().get, many, T)
    assert out.dropped_nodes == 8 and len(out.rows) == 12


@given(
    st.lists(
        st.tuples(st.integers(0, 11), st.integers(0, 11), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 11),
)
@settings(max_examples=200, deadline=None)
def test_unbounded_expansion_is_breadth_first_search(edges, seed):
    """With no fan-out or node bound, the reached nodes and hop counts are a plain BFS's over
    the links alive at the query time, whatever order the events came in."""
    table = Table()
    for a, b, day in edges:
        if a != b:
            table.feed([f"a|em:{a}", f"a|em:{b}"], T + day * DAY_MS)
    at = T + 3 * DAY_MS
    graph: dict[int, set[int]] = {}
    for a, b, _ in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set()).add(a)
    want, frontier = {}, {seed}
    seen = {seed}
    for hop in range(1, 4):
        frontier = {n for f in frontier for n in graph.get(f, ()) if n not in seen}
        seen |= frontier
        want |= {f"a|em:{n}": hop for n in frontier}
    out = expand([f"a|em:{seed}"], table.get, at, max_fanout=100, max_nodes=100)
    assert reached(out) == want
    for r in out.reached:
        assert [h.target for h in r.path][-1] == r.node
        assert all(x.target == y.source for x, y in zip(r.path, r.path[1:], strict=False))
