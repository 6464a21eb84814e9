"""The truth's graph reach: can a conversion reach its converter through the advertiser's events?

Nodes are an advertiser's identifiers (click id, email, phone, device id, external id, browser
id; never the address) and two nodes are linked when one event carried both. A conversion
reaches its converter in ``h`` hops when a node ``h`` links from one of its own identifiers was
sighted for the converter on the platform (impressions, clicks, identity) at or before it,
through links at or before it and at most :data:`EDGE_TTL_MS` older. This is the ceiling of an
identity graph with that reach (docs/design.md, "Site events and the identity graph"): no
degree bound, no fan-out bound, every hop counted.

>>> seen = {"click:k1": {"u1": 50}}
>>> obs = [("a", 60, ("click:k1", "fbp:b1")), ("a", 90, ("em:e1", "fbp:b1"))]
>>> reach = GraphReach(obs, seen)
>>> reach.hops("a", {"em:e1"}, "u1", ts=100), reach.hops("a", {"em:e1"}, "u1", ts=80)
(2, None)
>>> reach.hops("b", {"em:e1"}, "u1", ts=100), reach.hops("a", {"click:k1"}, "u1", ts=100)
(None, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from convstream.core.units import DAY_MS

#: (advertiser_id, event ts, node keys of the event)
Observation = tuple[str, int, tuple[str, ...]]
MAX_HOPS = 3
EDGE_TTL_MS = 30 * DAY_MS
#: Node kinds the platform sights for its users: what a path must end on.
SIGHTED_KINDS = ("click", "em", "ph", "dev")


class GraphReach:
    """Every advertiser's co-occurrence links, for shortest-path questions of the truth."""

    def __init__(
        self,
        observations: Iterable[Observation],
        seen: Mapping[str, Mapping[str, int]],
        *,
        max_hops: int = MAX_HOPS,
        edge_ttl_ms: int = EDGE_TTL_MS,
    ) -> None:
        self.seen = seen
        self.max_hops = max_hops
        self.edge_ttl_ms = edge_ttl_ms
        self.links: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for advertiser_id, ts, nodes in observations:
            for a in nodes:
                for b in nodes:
                    if a != b:
                        self.links.setdefault((advertiser_id, a), []).append((ts, b))

    def _sighted(self, node: str, user_id: str, ts: int) -> bool:
        if node.split(":", 1)[0] not in SIGHTED_KINDS:
            return False
        return self.seen.get(node, {}).get(user_id, ts + 1) <= ts

    def hops(self, advertiser_id: str, own: set[str], user_id: str, ts: int) -> int | None:
        """Fewest links from ``own`` to a node sighted for ``user_id`` by ``ts``; None beyond
        :attr:`max_hops`."""
        frontier, visited = set(own), set(own)
        for hop in range(self.max_hops + 1):
            if any(self._sighted(n, user_id, ts) for n in frontier):
                return hop
            if hop == self.max_hops:
                break
            nxt = set()
            for node in frontier:
                for link_ts, other in self.links.get((advertiser_id, node), ()):
                    if ts - self.edge_ttl_ms <= link_ts <= ts and other not in visited:
                        nxt.add(other)
            visited |= nxt
            frontier = nxt
        return None
