"""Per-partition event-time watermarks over several input topics, with idle-source detection.

The watermark of partition p is the smallest, over the topics that are still flowing, of the
newest event time read on that topic's partition p, minus the allowed lateness. A topic that has
sent nothing on p for ``idle_s`` of wall time is idle and stops holding the watermark back (as
Flink's ``withIdleness``); a topic not yet seen on p holds it back for ``idle_s`` after p's first
event, so a topic that starts late is waited for. The bounded wait covers the rest.

>>> wm = WatermarkTracker(("clicks", "views"), lateness_ms=10, idle_s=60)
>>> wm.observe("clicks", 0, 1_000, now=0.0); wm.observe("views", 0, 400, now=0.0)
>>> wm.watermark(0, now=1.0)
390
>>> wm.observe("clicks", 1, 1_000, now=0.0)
>>> wm.watermark(1, now=1.0)  # views not seen yet on partition 1: wait for them a while
>>> wm.observe("clicks", 1, 2_000, now=61.0)
>>> wm.watermark(1, now=61.0)
1990
>>> wm.watermark(0, now=120.0) is None  # everything idle: no evidence of progress
True
"""

from __future__ import annotations

import time


class WatermarkTracker:
    def __init__(self, topics: tuple[str, ...], *, lateness_ms: int, idle_s: float) -> None:
        self.topics = topics
        self.lateness_ms = lateness_ms
        self.idle_s = idle_s
        self._max_ts: dict[tuple[str, int], int] = {}
        self._last_wall: dict[tuple[str, int], float] = {}
        self._first_wall: dict[int, float] = {}

    def observe(self, topic: str, partition: int, ts: int, *, now: float | None = None) -> None:
        key = (topic, partition)
        if ts > self._max_ts.get(key, -1):
            self._max_ts[key] = ts
        now = time.monotonic() if now is None else now
        self._last_wall[key] = now
        self._first_wall.setdefault(partition, now)

    def watermark(self, partition: int, *, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        started = self._first_wall.get(partition)
        if started is None:
            return None
        waiting_for_first = now - started <= self.idle_s
        if waiting_for_first and any((t, partition) not in self._max_ts for t in self.topics):
            return None
        active = [
            self._max_ts[(t, partition)]
            for t in self.topics
            if (t, partition) in self._max_ts
            and now - self._last_wall[(t, partition)] <= self.idle_s
        ]
        if not active:
            return None
        return min(active) - self.lateness_ms

    def newest(self, topic: str) -> int | None:
        """Newest event time read on any partition of ``topic`` (for the lag metric)."""
        values = [ts for (t, _), ts in self._max_ts.items() if t == topic]
        return max(values) if values else None

    def partitions(self) -> set[int]:
        return {p for _, p in self._max_ts}
