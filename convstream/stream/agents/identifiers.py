"""Identifiers agent (key identifier): the identifier index, and lookups gated on watermarks.

A lookup for a conversion at event time T waits until every users partition has reported, on
the lookup's own cs-ident partition, a watermark at or past T (so every sighting up to T is in
the index), or that it is idle (read to its end, nothing new for a while): see
:mod:`convstream.core.lookup_gate`. Then it is answered from the index as of T. Lookups of an
email, phone or external id also wait for the decisions of earlier conversions that carried
it, for the links those make (convstream/stream/agents/conversions.py).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from convstream.core.index import add_sighting, expire, lookup
from convstream.core.lookup_gate import LookupGate
from convstream.core.resolve import LINKED_KINDS
from convstream.stream import metrics


def register(rt: Any, channel: Any) -> None:
    s = rt.settings
    index = rt.tables["identifiers"]
    # One actor reads every cs-ident partition this worker owns; watermarks are kept per
    # partition, because only a partition's own messages say which sightings it already holds.
    gate = LookupGate(
        s.partitions,
        idle_valid_s=s.idle_report_valid_s,
        turn_timeout_s=s.key_turn_timeout_s,
        ordered=tuple(f"{kind}:" for kind in LINKED_KINDS),
    )

    async def answer(request: dict[str, Any]) -> None:
        reply = lookup(
            index.get(request["k"]),
            request["k"],
            conversion_ts=request["ts"],
            lookback_ms=s.lookback_ms,
            top_k=s.top_k,
        )
        await rt.send_keyed(
            "cs-answer",
            request["ck"],
            {"t": "a", "ck": request["ck"], "r": request["r"], "a": reply},
        )

    async def release() -> None:
        # Collect before the first await: the timer and the agent both release, and a lookup
        # parked while the other one is sending must not be lost.
        before = gate.turns_expired
        for request in gate.due(time.monotonic()):
            await answer(request)
        metrics.count_turns_expired(gate.turns_expired - before)
        metrics.set_lookups_parked(*gate.waiting())

    # Expiry keeps what any admissible conversion's lookback can still see: one up to
    # max_conversion_age_ms behind the clock is answered as of its own time, and its answer
    # must not depend on how far the clock ran before its lookup was read.
    ttl_ms = max(s.identifier_ttl_ms, s.lookback_ms + s.max_conversion_age_ms)

    def apply_sightings(rows: list[list[Any]], clock: int | None) -> None:
        touched: dict[str, Any] = {}
        # A row is [key, user_id, first, last, count], plus the user agent families for ip keys.
        for key, user_id, first, last, count, *families in rows:
            entry = touched[key] if key in touched else index.get(key)
            touched[key] = add_sighting(
                entry,
                user_id,
                last,
                count=count,
                first_ts=first,
                max_users=s.max_users_per_identifier,
                families=families[0] if families else None,
            )
        for key, entry in touched.items():
            if clock is not None:
                entry = expire(entry, clock, ttl_ms)
            if entry is None:
                index.pop(key, None)
            else:
                index[key] = entry

    def forget(user_id: str, keys: list[str]) -> None:
        """Remove a deleted user from the entries of every identifier they were seen on."""
        for key in keys:
            entry = index.get(key)
            if entry is None or user_id not in entry["u"]:
                continue
            users = {u: row for u, row in entry["u"].items() if u != user_id}
            if users:
                index[key] = {"u": users, "d": entry.get("d", 0)}
            else:
                index.pop(key, None)

    @rt.app.agent(channel, name="identifiers")
    async def identifiers_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, s.batch_within_s):
            now = time.monotonic()
            rows: list[list[Any]] = []
            for event in events:
                msg = orjson.loads(event.message.value)
                kind = msg["t"]
                if kind == "s":
                    rows.extend(msg["s"])
                    marks = {int(p): mark for p, mark in msg["wm"].items()}
                    idle = {int(p): flag for p, flag in msg.get("i", {}).items()}
                    gate.observe(event.message.partition, marks, now, idle)
                elif kind == "l":
                    gate.park(event.message.partition, msg, now)
                elif kind == "d":
                    gate.decided(msg["k"], msg["ck"])
                elif kind == "x":
                    rows.append([msg["k"], msg["u"], msg["ts"], msg["ts"], 1])
                elif kind == "f":
                    apply_sightings(rows, clock())
                    rows = []
                    forget(msg["u"], msg["k"])
            apply_sightings(rows, clock())
            await release()

    def clock() -> int | None:
        """Event-time clock for identifier expiry: the least advanced known watermark."""
        marks = [m for m in map(gate.watermark, range(s.partitions)) if m is not None]
        return min(marks, default=None)

    @rt.app.timer(interval=0.5)
    async def release_expired() -> None:
        if len(gate):
            await release()
