"""Identifiers agent (key identifier): the identifier index, and lookups gated on watermarks.

A lookup for a conversion at event time T waits until every users partition has reported a
watermark at or past T (so every sighting up to T is in the index), or until the bounded wait
``max_wait_s`` expires; then it is answered from the index as of T.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from typing import Any

import orjson

from models.index import add_sighting, expire, lookup


def register(rt: Any, channel: Any) -> None:
    s = rt.settings
    index = rt.tables["identifiers"]
    marks: dict[int, int] = {}
    # Parked lookups by id, indexed twice: a heap by event time (released by the watermark)
    # and a queue by arrival (released by the bounded wait). Stale index entries are skipped.
    parked: dict[int, dict[str, Any]] = {}
    by_ts: list[tuple[int, int]] = []
    by_arrival: deque[tuple[float, int]] = deque()
    ids = itertools.count()

    def park(now: float, request: dict[str, Any]) -> None:
        n = next(ids)
        parked[n] = request
        heapq.heappush(by_ts, (request["ts"], n))
        by_arrival.append((now, n))

    def global_watermark() -> int | None:
        if len(marks) < s.partitions:
            return None
        return min(marks.values())

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

    async def release(*, force_before: float | None = None) -> None:
        # Collect before the first await: the timer and the agent both release, and a lookup
        # parked while the other one is sending must not be lost. Each pop is O(log n): the
        # old scan of every parked lookup per batch grew with the backlog.
        mark = global_watermark()
        ready = []
        while by_ts and mark is not None and by_ts[0][0] <= mark:
            request = parked.pop(heapq.heappop(by_ts)[1], None)
            if request is not None:
                ready.append(request)
        while by_arrival and force_before is not None and by_arrival[0][0] <= force_before:
            request = parked.pop(by_arrival.popleft()[1], None)
            if request is not None:
                ready.append(request)
        for request in ready:
            await answer(request)

    def apply_sightings(rows: list[list[Any]], clock: int | None) -> None:
        touched: dict[str, Any] = {}
        for key, user_id, first, last, count in rows:
            entry = touched[key] if key in touched else index.get(key)
            touched[key] = add_sighting(
                entry,
                user_id,
                last,
                count=count,
                first_ts=first,
                max_users=s.max_users_per_identifier,
            )
        for key, entry in touched.items():
            if clock is not None:
                entry = expire(entry, clock, s.identifier_ttl_ms)
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
                    for p, mark in msg["wm"].items():
                        if mark > marks.get(int(p), -1):
                            marks[int(p)] = mark
                elif kind == "l":
                    park(now, msg)
                elif kind == "x":
                    rows.append([msg["k"], msg["u"], msg["ts"], msg["ts"], 1])
                elif kind == "f":
                    apply_sightings(rows, global_watermark())
                    rows = []
                    forget(msg["u"], msg["k"])
            apply_sightings(rows, global_watermark())
            await release()

    @rt.app.timer(interval=0.5)
    async def release_expired() -> None:
        if parked:
            await release(force_before=time.monotonic() - s.max_wait_s)
