"""How far the identity graph reaches on generated traffic: conversions it makes linkable.

For each profile and seed: generate the traffic, feed every event of the conversions topic
(site events and conversions, read with the worker's parsers, the browser id from ``fbp``) to
the graph of ``convstream/core/graph`` in event-time order, a dict standing in for the table
keyed by node, and at each platform conversion's event time expand from its own identifiers
(all its copies). A conversion is linked when a node it reaches (or one of its own) was
sighted for its converter on the platform (impressions, clicks, identity) by then. Reported
beside the truth's ceilings (``linkable``: own identifiers, the address included;
``graph_linkable``: within 3 hops, no bounds), so "linkable through the graph and not through
its own identifiers" is given both ways: against own identifiers with the address and
without it. State: the graph table's live rows as orjson (key + value, what a changelog
holds) per directed link entry; an undirected edge is two entries.

``python -m bench.graph_reach --profiles cookie-churn ip-loss heavy-sharing --seeds 1 2 3``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from bench.state import deep_size
from convstream.core.graph.adjacency import AdjacencyRow, link_event
from convstream.core.graph.expand import expand
from convstream.core.graph.nodes import event_nodes, node_kind
from convstream.core.records import Conversion, parse_conversions
from convstream.synth.generate import config_from_args, generate_all

_SIGHTED = {"click": "click", "em": "em", "ph": "ph", "device": "dev"}


@dataclass
class Reach:
    profile: str
    seed: int
    conversions: int  # platform users' conversions (truth rows with a user)
    linkable: int  # truth: an own identifier, the address included, sighted for the converter
    own_no_address: int  # measured: an own non-address identifier sighted (hop 0)
    ceiling: int  # truth graph_linkable (linkable, or within 3 hops, no bounds)
    graph: int  # measured: own or reached node sighted for the converter (bounded graph)
    gained_vs_linkable: int  # graph and not linkable
    ceiling_gained_vs_linkable: int  # ceiling and not linkable
    gained_vs_own: int  # graph and not own_no_address
    ceiling_gained_vs_own: int
    other_user_only: int  # reached a node sighted for another user only: precision risk
    hops: dict[int, int]  # fewest hops of the measured links
    shared_met: int  # expansions that met a shared node
    truncated: int  # links left out by fan-out or node bounds, summed
    rows: int
    entries: int
    bytes_per_entry: float
    python_bytes_per_entry: float
    events: int
    seconds: float


def _sightings(lines: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}
    for line in lines:
        topic, v = line["topic"], line["value"]
        if topic not in ("impressions", "clicks", "identity"):
            continue
        for field, kind in (
            ("click_id", "click"),
            ("em", "em"),
            ("ph", "ph"),
            ("device_id", "dev"),
        ):
            if v.get(field):
                users = seen.setdefault(f"{kind}:{v[field]}", {})
                users[v["user_id"]] = min(users.get(v["user_id"], v["ts"]), v["ts"])
    return seen


def _sighted_for(node: str, seen: dict[str, dict[str, int]], ts: int) -> set[str]:
    kind = _SIGHTED.get(node_kind(node))
    if kind is None:
        return set()
    value = node.split("|", 1)[1].split(":", 1)[1]
    return {u for u, t in seen.get(f"{kind}:{value}", {}).items() if t <= ts}


def measure(profile: str, seed: int, users: int | None, days: int | None) -> Reach:
    t0 = time.perf_counter()
    g = generate_all(config_from_args(profile, seed=seed, users=users, days=days))
    seen = _sightings(g.lines)
    events: list[tuple[int, str, list[str]]] = []  # (ts, conversion key, nodes)
    own: dict[str, set[str]] = {}
    for line in g.lines:
        if line["topic"] != "conversions":
            continue
        fbp = (line["value"].get("user_data") or {}).get("fbp")
        for item in parse_conversions(orjson.dumps(line["value"])):
            if isinstance(item, Conversion):
                nodes = event_nodes(item.advertiser_id, item.user_data, fbp=fbp)
                events.append((item.ts, item.key, nodes))
                own.setdefault(item.key, set()).update(nodes)
    events.sort(key=lambda e: e[0])
    truth = sorted((r for r in g.truth if r["user_id"] is not None), key=lambda r: r["ts"])
    table: dict[str, AdjacencyRow] = {}
    counts: Counter[str] = Counter()
    hops: Counter[int] = Counter()
    i = 0
    for row in truth:
        ts, user = row["ts"], row["user_id"]
        while i < len(events) and events[i][0] <= ts:
            table.update(link_event(table.get, events[i][2], events[i][0]).rows)
            i += 1
        seeds = sorted(own.get(row["conversion_key"], ()))
        hop0 = any(user in _sighted_for(n, seen, ts) for n in seeds)
        out = expand(seeds, table.get, ts)
        counts["shared_met"] += bool(out.shared)
        counts["truncated"] += out.truncated
        reached_users: set[str] = set()
        best = 0 if hop0 else None
        for r in out.reached:
            users_here = _sighted_for(r.node, seen, ts)
            reached_users |= users_here
            if user in users_here and best is None:
                best = r.hop_count
        linked = best is not None
        counts["own"] += hop0
        counts["graph"] += linked
        counts["linkable"] += row["linkable"]
        counts["ceiling"] += row["graph_linkable"]
        counts["gained_l"] += linked and not row["linkable"]
        counts["ceiling_l"] += row["graph_linkable"] and not row["linkable"]
        counts["gained_o"] += linked and not hop0
        ceiling_o = row["graph_hops"] is not None
        counts["ceiling_o"] += ceiling_o and not hop0
        counts["other"] += (not linked) and bool(reached_users - {user})
        if linked and best:
            hops[best] += 1
    for ts, _, nodes in events[i:]:
        table.update(link_event(table.get, nodes, ts).rows)
    entries = sum(len(r["links"]) for r in table.values())
    stored = sum(len(k.encode()) + len(orjson.dumps(v)) for k, v in table.items())
    sample = list(table.items())[:2000]
    py = sum(deep_size(k) + deep_size(v) for k, v in sample)
    py_entries = sum(len(v["links"]) for _, v in sample)
    return Reach(
        profile=profile,
        seed=seed,
        conversions=len(truth),
        linkable=counts["linkable"],
        own_no_address=counts["own"],
        ceiling=counts["ceiling"],
        graph=counts["graph"],
        gained_vs_linkable=counts["gained_l"],
        ceiling_gained_vs_linkable=counts["ceiling_l"],
        gained_vs_own=counts["gained_o"],
        ceiling_gained_vs_own=counts["ceiling_o"],
        other_user_only=counts["other"],
        hops=dict(sorted(hops.items())),
        shared_met=counts["shared_met"],
        truncated=counts["truncated"],
        rows=len(table),
        entries=entries,
        bytes_per_entry=round(stored / entries, 1) if entries else 0.0,
        python_bytes_per_entry=round(py / py_entries, 1) if py_entries else 0.0,
        events=len(events),
        seconds=round(time.perf_counter() - t0, 1),
    )


def _share(n: int, d: int) -> str:
    return f"{n} ({n / d:.3f})" if d else "0"


def table_md(runs: list[Reach]) -> str:
    head = (
        "| profile | seed | conversions | linkable (own, address incl.) | own, no address "
        "| graph (bounded) | ceiling | gained vs linkable: graph / ceiling "
        "| gained vs own no-address: graph / ceiling | other user only | hops 1/2/3 "
        "| bytes per link entry |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for r in runs:
        n = r.conversions
        hops = "/".join(str(r.hops.get(h, 0)) for h in (1, 2, 3))
        rows.append(
            f"| {r.profile} | {r.seed} | {n} | {_share(r.linkable, n)} "
            f"| {_share(r.own_no_address, n)} | {_share(r.graph, n)} | {_share(r.ceiling, n)} "
            f"| {r.gained_vs_linkable} / {r.ceiling_gained_vs_linkable} "
            f"| {r.gained_vs_own} / {r.ceiling_gained_vs_own} | {r.other_user_only} | {hops} "
            f"| {r.bytes_per_entry} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", nargs="+", default=["cookie-churn", "ip-loss", "heavy-sharing"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args(argv)
    runs = []
    for profile in args.profiles:
        for seed in args.seeds:
            run = measure(profile, seed, args.users, args.days)
            runs.append(run)
            if args.json:
                print(
                    orjson.dumps(asdict(run), option=orjson.OPT_NON_STR_KEYS).decode(), flush=True
                )
    if not args.json:
        print(table_md(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
