"""Multi-hop candidates: the nodes a conversion's own identifiers reach, each with its path.

Breadth first from the seeds (the conversion's own nodes) through links alive at the
conversion's event time, at most ``max_hops`` (3) links deep. From each node it follows at most
``max_fanout`` links (deterministic ones first, then the most recently seen), stops at
``max_nodes`` reached nodes, and never goes through a shared node (it is reached, not
expanded). Each reached node carries the path of its first (shortest) discovery: per hop the
node it came from, that node's live degree, the link's ages and whether it is deterministic.
Reads go to the graph table one node at a time (``read``), so a worker can answer from a table
keyed by node; :attr:`Expansion.reads` says how many that cost.

>>> from convstream.core.graph.adjacency import link_event
>>> table = {}
>>> for nodes, ts in ((["a|click:k1", "a|browser:b1"], 0), (["a|browser:b1", "a|em:e1"], 50)):
...     table.update(link_event(table.get, nodes, ts).rows)
>>> out = expand(["a|em:e1"], table.get, ts=100)
>>> [(r.node, r.hop_count, r.deterministic) for r in out.reached]
[('a|browser:b1', 1, True), ('a|click:k1', 2, True)]
>>> [(h.source, h.source_degree, h.last_age_ms) for h in out.reached[1].path]
[('a|em:e1', 1, 50), ('a|browser:b1', 2, 100)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from convstream.core.graph.adjacency import DEFAULT_TTL_MS, ReadRow, alive, is_shared
from convstream.core.graph.nodes import NodeKey, node_advertiser

MAX_HOPS = 3
MAX_FANOUT = 8
MAX_NODES = 64


@dataclass(frozen=True, slots=True)
class Hop:
    """One link of a path: from ``source`` (with its live degree) to ``target``."""

    source: NodeKey
    target: NodeKey
    source_degree: int
    first_age_ms: int  # since the two were first seen together
    last_age_ms: int  # since they were last seen together (0: seen again after the ts)
    deterministic: bool


@dataclass(frozen=True, slots=True)
class Reached:
    """A node the expansion reached, and the path it was first reached by."""

    node: NodeKey
    path: tuple[Hop, ...]

    @property
    def hop_count(self) -> int:
        return len(self.path)

    @property
    def deterministic(self) -> bool:
        """Every link of the path is deterministic."""
        return all(h.deterministic for h in self.path)

    @property
    def seed(self) -> NodeKey:
        return self.path[0].source


@dataclass(slots=True)
class Expansion:
    """The reached nodes (in discovery order), the shared nodes met and not expanded, links
    left out by the fan-out or node bounds, and the table reads made."""

    reached: list[Reached] = field(default_factory=list)
    shared: list[NodeKey] = field(default_factory=list)
    truncated: int = 0
    reads: int = 0


def expand(
    seeds: Iterable[NodeKey],
    read: ReadRow,
    ts: int,
    *,
    max_hops: int = MAX_HOPS,
    max_fanout: int = MAX_FANOUT,
    max_nodes: int = MAX_NODES,
    ttl_ms: int = DEFAULT_TTL_MS,
) -> Expansion:
    """The nodes within ``max_hops`` of ``seeds`` at event time ``ts``; see the module doc."""
    out = Expansion()
    seeds = list(dict.fromkeys(seeds))
    visited = set(seeds)
    paths: dict[NodeKey, tuple[Hop, ...]] = dict.fromkeys(seeds, ())
    frontier = seeds
    for _ in range(max_hops):
        nxt: list[NodeKey] = []
        for node in frontier:
            row = read(node)
            out.reads += 1
            if row is None:
                continue
            if is_shared(row, ts):
                out.shared.append(node)
                continue
            advertiser = node_advertiser(node)
            live = [
                (k, v)
                for k, v in row["links"].items()
                if alive(v, ts, ttl_ms) and node_advertiser(k) == advertiser
            ]
            # Deterministic first, then the most recently seen, then by key: a stable order.
            live.sort(key=lambda kv: (not kv[1][2], -min(int(kv[1][1]), ts), kv[0]))
            fresh = [(k, v) for k, v in live if k not in visited]
            out.truncated += max(0, len(fresh) - max_fanout)
            own_degree = len(live)
            for k, v in fresh[:max_fanout]:
                if len(out.reached) >= max_nodes:
                    out.truncated += 1
                    continue
                hop = Hop(
                    source=node,
                    target=k,
                    source_degree=own_degree,
                    first_age_ms=ts - int(v[0]),
                    last_age_ms=ts - min(int(v[1]), ts),
                    deterministic=bool(v[2]),
                )
                visited.add(k)
                paths[k] = paths[node] + (hop,)
                out.reached.append(Reached(k, paths[k]))
                nxt.append(k)
        frontier = nxt
        if not frontier:
            break
    return out
