"""Per-partition event-time watermarks over several input topics, and whether input is idle.

Every engagement at or before the watermark of partition p has been read (as long as no
record arrives more than the allowed lateness after records newer than it). Per topic t, the
bound is the newest event time read on t's partition p minus the lateness: t's later records
come after those in the partition. The watermark is the least bound over the topics, so a
topic that is read slowly, or not fetched yet, holds it back however long that takes.

A sparse topic would hold it back too, until its next record, so the broker is asked for the
end offsets (:meth:`WatermarkTracker.ends`, a fresh ``ListOffsets``, not the end of the last
fetch, which a busy topic can keep stale for seconds). A topic partition read to its end offset
holds no record produced before the query; its later records were produced after every record
read on p before the query (:meth:`WatermarkTracker.snapshot`), so they are no older than the
newest of those minus the lateness: that raises its bound. Wall time plays no part in this:
the same records read give the same watermark, however loaded the machine.

A partition is *idle* when every topic is read to its end offset and the end offsets have not
moved for ``idle_s``: only then may lookups short of the watermark be answered
(convstream/core/lookup_gate.py).

One record cannot move a watermark far: a topic partition's newest event time is its newest
record's, unless that one is more than ``jump_ms`` ahead of the one before it; then the one
before, until another record comes near it (an outlier that passed validation, see
:mod:`convstream.core.clock`, holds the watermark no further than ``jump_ms``).

>>> now = [0.0]
>>> wm = WatermarkTracker(("clicks", "views"), lateness_ms=10, idle_s=5.0, clock=lambda: now[0])
>>> wm.observe("clicks", 0, 1_000, offset=9); wm.observe("views", 0, 400, offset=20)
>>> wm.watermark(0)  # views read up to 400 only
390
>>> snap = wm.snapshot()
>>> wm.ends({("clicks", 0): 10, ("views", 0): 50}, snap)
>>> wm.watermark(0)  # clicks is read to its end: its next records come after clicks' 1_000
390
>>> wm.observe("views", 0, 1_500, offset=49)
>>> wm.watermark(0), wm.idle(0)  # views read on: clicks holds it back at 1_000 - 10
(990, False)
>>> now[0] = 5.0
>>> wm.ends({("clicks", 0): 10, ("views", 0): 50}, wm.snapshot())
>>> wm.watermark(0), wm.idle(0)  # both read to their end, nothing new for idle_s
(1490, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from convstream.core.units import DAY_MS

TopicPartition = tuple[str, int]
#: How far one record may move a topic partition's newest event time ahead of the one before:
#: a day, because sparse topics (identity) go hours between records, and records further ahead
#: of their partition's clock than the engagement future rule are dead-lettered before this.
DEFAULT_JUMP_MS = DAY_MS


class _Input:
    """What is known of one topic partition."""

    __slots__ = ("max_ts", "top", "next_offset", "floor", "end", "end_since")

    def __init__(self) -> None:
        self.max_ts: int | None = None  # the newest event time to go by
        self.top: tuple[int | None, int | None] = (None, None)  # the newest read, the one before
        self.next_offset = 0
        self.floor: int | None = None  # later records are no older than this (minus lateness)
        self.end: int | None = None  # end offset at the last query
        self.end_since = 0.0  # when the end offset took that value (wall time)

    def bound(self) -> int | None:
        if self.max_ts is None:
            return self.floor
        return self.max_ts if self.floor is None else max(self.max_ts, self.floor)


class WatermarkTracker:
    def __init__(
        self,
        topics: tuple[str, ...],
        *,
        lateness_ms: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
        jump_ms: int = DEFAULT_JUMP_MS,
    ) -> None:
        self.topics = topics
        self.lateness_ms = lateness_ms
        self.idle_s = idle_s
        self.clock = clock
        self.jump_ms = jump_ms
        self._inputs: dict[TopicPartition, _Input] = {}

    def _input(self, topic: str, partition: int) -> _Input:
        key = (topic, partition)
        state = self._inputs.get(key)
        if state is None:
            state = self._inputs[key] = _Input()
        return state

    def observe(self, topic: str, partition: int, ts: int, *, offset: int) -> None:
        state = self._input(topic, partition)
        first, second = state.top
        if first is None or ts > first:
            first, second = ts, first
        elif second is None or ts > second:
            second = ts
        state.top = (first, second)
        # One record far ahead of the one before it counts only once another comes near it.
        trusted = first if second is None or first - second <= self.jump_ms else second
        if state.max_ts is None or trusted > state.max_ts:
            state.max_ts = trusted
        self.skip(topic, partition, offset=offset)

    def skip(self, topic: str, partition: int, *, offset: int) -> None:
        """The record at ``offset`` is read. Alone, for one without an event time (dead-lettered):
        without it, a bad record as a partition's last one kept the partition unread for good."""
        state = self._input(topic, partition)
        if offset + 1 > state.next_offset:
            state.next_offset = offset + 1

    def committed(self, topic: str, partition: int, offset: int) -> None:
        """Records before ``offset`` were read, and their sightings sent, by whoever committed
        it: a worker that takes over a partition with nothing new on it is read to its end."""
        state = self._input(topic, partition)
        state.next_offset = max(state.next_offset, offset)

    def snapshot(self) -> dict[int, int]:
        """Newest event time read on each partition (any topic): take it *before* querying the
        end offsets given to :meth:`ends`."""
        newest: dict[int, int] = {}
        for (_, partition), state in self._inputs.items():
            if state.max_ts is not None:
                newest[partition] = max(newest.get(partition, state.max_ts), state.max_ts)
        return newest

    def ends(self, ends: Mapping[TopicPartition, int], snapshot: Mapping[int, int]) -> None:
        """End offsets from the broker, queried after ``snapshot`` was taken."""
        now = self.clock()
        for (topic, partition), end in ends.items():
            state = self._input(topic, partition)
            if state.end != end:
                state.end, state.end_since = end, now
            newest = snapshot.get(partition)
            if state.next_offset >= end and newest is not None:
                state.floor = newest if state.floor is None else max(state.floor, newest)

    def watermark(self, partition: int) -> int | None:
        """Every engagement on ``partition`` at or before this is read (None: unknown yet)."""
        bounds = []
        for topic in self.topics:
            state = self._inputs.get((topic, partition))
            bound = None if state is None else state.bound()
            if bound is None:
                return None
            bounds.append(bound)
        return min(bounds) - self.lateness_ms

    def idle(self, partition: int) -> bool:
        """Every topic read to its end offset, which has not moved for ``idle_s``."""
        now = self.clock()
        for topic in self.topics:
            state = self._inputs.get((topic, partition))
            if state is None or state.end is None or state.next_offset != state.end:
                return False
            if now - state.end_since < self.idle_s:
                return False
        return True

    def newest(self, topic: str) -> int | None:
        """Newest event time read on any partition of ``topic`` (for the lag metric)."""
        values = [
            s.max_ts for (t, _), s in self._inputs.items() if t == topic and s.max_ts is not None
        ]
        return max(values) if values else None

    def partitions(self) -> set[int]:
        return {p for _, p in self._inputs}
