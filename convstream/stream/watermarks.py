"""Per-partition event-time watermarks over several input topics.

The watermark of partition p is the smallest, over the topics that still have unread records
on p, of the newest event time read on that topic's partition p, minus the allowed lateness.
A topic partition read up to its high watermark holds nothing older back, so it does not hold
the watermark back either; one the consumer has not fetched yet (high watermark unknown) does.
Whether a topic partition is caught up comes from the consumer (offset read vs. high
watermark of the last fetch), never from how long it has been quiet: a busy topic can starve
a sparse one of fetches for seconds, and wall-clock idleness would then release conversions
before the sparse topic's older records were read.

A topic partition must also have *stayed* caught up for ``settle_s`` (checked at every
``watermark`` call) before it stops holding back. While records are still being appended (a
replay produced as the worker reads it), the consumer can read a topic partition to the end of
its last fetch an instant before more records land, while another topic, fetched later, is
read further ahead in event time; without the settling time the watermark would jump past the
records about to be appended, and lookups would miss their sightings.

One record cannot move a watermark far: a topic partition's newest event time is its newest
record's, unless that one is more than ``jump_ms`` ahead of the one before it; then the one
before, until another record comes near it (an outlier that passed validation, see
:mod:`convstream.core.clock`, holds the watermark no further than ``jump_ms``).

>>> now = [0.0]
>>> highwater = {("clicks", 0): 10, ("views", 0): 50}
>>> wm = WatermarkTracker(("clicks", "views"), lateness_ms=10, highwater=highwater.get,
...                       settle_s=1.0, clock=lambda: now[0])
>>> wm.observe("clicks", 0, 1_000, offset=9); wm.observe("views", 0, 400, offset=20)
>>> wm.watermark(0)  # views still has records 21..49 to read
390
>>> wm.observe("views", 0, 1_500, offset=49)
>>> wm.watermark(0)  # everything read, but only just: views may still be growing
990
>>> now[0] = 1.0
>>> wm.watermark(0)  # everything read, and nothing new for settle_s: nothing older pending
1490
>>> wm.watermark(1) is None  # nothing known about partition 1
True
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: How long a topic partition must stay read to its end before it stops holding back.
DEFAULT_SETTLE_S = 1.0
#: How far one record may move a topic partition's newest event time ahead of the one before.
DEFAULT_JUMP_MS = 3_600_000

HighwaterFn = Callable[[tuple[str, int]], int | None]


class WatermarkTracker:
    def __init__(
        self,
        topics: tuple[str, ...],
        *,
        lateness_ms: int,
        highwater: HighwaterFn,
        settle_s: float = DEFAULT_SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
        jump_ms: int = DEFAULT_JUMP_MS,
    ) -> None:
        self.topics = topics
        self.lateness_ms = lateness_ms
        self.highwater = highwater
        self.settle_s = settle_s
        self.clock = clock
        self.jump_ms = jump_ms
        self._max_ts: dict[tuple[str, int], int] = {}  # the newest event time to go by
        self._top: dict[tuple[str, int], tuple[int, int | None]] = {}  # newest, the one before
        self._next_offset: dict[tuple[str, int], int] = {}
        self._caught_up_since: dict[tuple[str, int], float] = {}
        self._behind_since: dict[tuple[str, int], float] = {}

    def observe(self, topic: str, partition: int, ts: int, *, offset: int) -> None:
        key = (topic, partition)
        first, second = self._top.get(key, (None, None))
        if first is None or ts > first:
            first, second = ts, first
        elif second is None or ts > second:
            second = ts
        self._top[key] = (first, second)
        trusted = first if second is None or first - second <= self.jump_ms else second
        self._max_ts[key] = max(trusted, self._max_ts.get(key, trusted))
        self.skip(topic, partition, offset=offset)

    def skip(self, topic: str, partition: int, *, offset: int) -> None:
        """The record at ``offset`` is read. Alone, for one without an event time (dead-lettered):
        without it, a bad record as a partition's last one kept the partition unread for good."""
        key = (topic, partition)
        if offset + 1 > self._next_offset.get(key, 0):
            self._next_offset[key] = offset + 1

    def _caught_up(self, key: tuple[str, int], highwater: int | None) -> bool:
        """Read to ``highwater``, the end of the last fetch, and so since ``settle_s`` (wall
        time)."""
        now = self.clock()
        if highwater is None or self._next_offset.get(key, 0) < highwater:
            self._caught_up_since.pop(key, None)
            self._behind_since.setdefault(key, now)
            return False
        self._behind_since.pop(key, None)
        since = self._caught_up_since.setdefault(key, now)
        return now - since >= self.settle_s

    def watermark(self, partition: int) -> int | None:
        holding: list[int] = []
        newest: list[int] = []
        for topic in self.topics:
            key = (topic, partition)
            seen = self._max_ts.get(key)
            if seen is not None:
                newest.append(seen)
            if self._caught_up(key, self.highwater(key)):
                continue
            if seen is None:
                return None
            holding.append(seen)
        if holding:
            return min(holding) - self.lateness_ms
        # Everything read: nothing older is pending anywhere.
        return max(newest) - self.lateness_ms if newest else None

    def behind(self, partition: int) -> bool:
        """Whether some topic has had records left to read on ``partition`` for ``settle_s`` or
        more, or has not been fetched yet: a backlog, which the watermark works through however
        long that takes. Not a topic of live traffic between two fetches, read to its end a
        moment later."""
        now = self.clock()
        keys = [(topic, partition) for topic in self.topics]
        if not any(key in self._max_ts for key in keys):
            return False  # nothing read there: not this worker's partition (yet)
        for key in keys:
            highwater = self.highwater(key)
            self._caught_up(key, highwater)  # brings its clocks up to date
            if highwater is None:  # not fetched yet: a worker just (re)started
                return True
        return any(now - self._behind_since.get(key, now) >= self.settle_s for key in keys)

    def newest(self, topic: str) -> int | None:
        """Newest event time read on any partition of ``topic`` (for the lag metric)."""
        values = [ts for (t, _), ts in self._max_ts.items() if t == topic]
        return max(values) if values else None

    def partitions(self) -> set[int]:
        return {p for _, p in self._max_ts}
