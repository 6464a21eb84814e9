"""One node's links: the row a table keyed by node holds, updated by event time only.

A row maps each neighbour to ``[first ts, last ts, deterministic]``: when the two identifiers
were first and last seen in one event, and whether the link is certain
(:func:`convstream.core.graph.nodes.is_deterministic`). Links expire ``ttl_ms`` after they were
last seen, in event time: a write prunes what is older than its own event's ts less the TTL, a
read ignores what was not alive at its ts. A node with ``max_degree`` live neighbours takes no
more: the refused link marks it shared (a household tablet, a placeholder id that got
through, a call-centre email) until ``ttl_ms`` after the last refusal, and expansion does not
go through it.

>>> row, outcome = link(None, "a|em:e1", 1_000, deterministic=True)
>>> outcome, row["links"]
('new', {'a|em:e1': [1000, 1000, True]})
>>> row, outcome = link(row, "a|em:e1", 5_000, deterministic=True)
>>> outcome, row["links"]["a|em:e1"]
('refreshed', [1000, 5000, True])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from convstream.core.graph.nodes import NodeKey, is_deterministic
from convstream.core.units import DAY_MS

DEFAULT_TTL_MS = 30 * DAY_MS
DEFAULT_MAX_DEGREE = 32
#: Nodes one event may link (an email list of ten values and a few ids); the rest are dropped.
MAX_EVENT_NODES = 12

#: [first seen, last seen, deterministic]
LinkEntry = list[int | bool]


class AdjacencyRow(TypedDict):
    """The value of the graph table for one node key."""

    links: dict[NodeKey, LinkEntry]
    #: Shared (not expanded) from the first refused link to ttl_ms after the last one.
    shared: list[int] | None


#: A node's row from the graph table (its get), None for a node never linked.
ReadRow = Callable[[NodeKey], AdjacencyRow | None]


def _copy(row: AdjacencyRow | None) -> AdjacencyRow:
    if row is None:
        return {"links": {}, "shared": None}
    return {"links": {k: list(v) for k, v in row["links"].items()}, "shared": row["shared"]}


def alive(entry: LinkEntry, ts: int, ttl_ms: int) -> bool:
    """A link seen by ``ts`` and last seen at most ``ttl_ms`` before it (event time)."""
    first, last = int(entry[0]), int(entry[1])
    return first <= ts and last >= ts - ttl_ms


def prune(row: AdjacencyRow, ts: int, ttl_ms: int) -> int:
    """Drop (in place) the links last seen more than ``ttl_ms`` before ``ts``; how many."""
    dead = [k for k, v in row["links"].items() if int(v[1]) < ts - ttl_ms]
    for k in dead:
        del row["links"][k]
    return len(dead)


def link(
    row: AdjacencyRow | None,
    neighbour: NodeKey,
    ts: int,
    *,
    deterministic: bool,
    ttl_ms: int = DEFAULT_TTL_MS,
    max_degree: int = DEFAULT_MAX_DEGREE,
) -> tuple[AdjacencyRow, str]:
    """The row after a co-occurrence with ``neighbour`` at ``ts``, and what happened: ``new``,
    ``refreshed`` or ``refused`` (the node is full: it is marked shared)."""
    out = _copy(row)
    prune(out, ts, ttl_ms)
    entry = out["links"].get(neighbour)
    if entry is not None:
        entry[0], entry[1] = min(int(entry[0]), ts), max(int(entry[1]), ts)
        entry[2] = bool(entry[2]) or deterministic
        return out, "refreshed"
    if len(out["links"]) >= max_degree:
        since, until = out["shared"] or [ts, ts]
        out["shared"] = [min(since, ts), max(until, ts + ttl_ms)]
        return out, "refused"
    out["links"][neighbour] = [ts, ts, deterministic]
    return out, "new"


def is_shared(row: AdjacencyRow | None, ts: int) -> bool:
    """Whether the node refused a link within ``ttl_ms`` before ``ts`` (not expanded)."""
    if row is None or row["shared"] is None:
        return False
    since, until = row["shared"]
    return since <= ts <= until


def degree(row: AdjacencyRow | None, ts: int, ttl_ms: int = DEFAULT_TTL_MS) -> int:
    """Live neighbours at ``ts``."""
    if row is None:
        return 0
    return sum(alive(v, ts, ttl_ms) for v in row["links"].values())


@dataclass(slots=True)
class EventLinks:
    """What one event changes: the rows to write back, links refused, nodes newly shared."""

    rows: dict[NodeKey, AdjacencyRow] = field(default_factory=dict)
    new: int = 0
    refused: int = 0
    newly_shared: list[NodeKey] = field(default_factory=list)
    dropped_nodes: int = 0


def link_event(
    read: ReadRow,
    nodes: list[NodeKey],
    ts: int,
    *,
    ttl_ms: int = DEFAULT_TTL_MS,
    max_degree: int = DEFAULT_MAX_DEGREE,
) -> EventLinks:
    """Link every pair of one event's nodes both ways; ``read(key)`` gives a node's row (the
    table's get). The caller writes :attr:`EventLinks.rows` back.

    >>> table = {}
    >>> out = link_event(table.get, ["a|browser:b", "a|click:k", "a|device:d"], 10)
    >>> table.update(out.rows)
    >>> sorted(table["a|browser:b"]["links"].items())
    [('a|click:k', [10, 10, True]), ('a|device:d', [10, 10, False])]
    >>> out.new
    6
    """
    out = EventLinks()
    if len(nodes) > MAX_EVENT_NODES:
        out.dropped_nodes = len(nodes) - MAX_EVENT_NODES
        nodes = nodes[:MAX_EVENT_NODES]
    for a in nodes:
        row = read(a)
        was_shared = is_shared(row, ts)
        for b in nodes:
            if a == b:
                continue
            row, outcome = link(
                row,
                b,
                ts,
                deterministic=is_deterministic(a, b),
                ttl_ms=ttl_ms,
                max_degree=max_degree,
            )
            out.new += outcome == "new"
            out.refused += outcome == "refused"
        if row is not None:
            out.rows[a] = row
            if not was_shared and is_shared(row, ts):
                out.newly_shared.append(a)
    return out
