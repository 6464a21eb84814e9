"""Online learning applied in event-time order, a fixed delay behind the decisions.

Conversions are resolved in an order that depends on which topic was read first and on when
answers come back. If the match model learned at resolution time, the confidence of a label
would depend on that order. Instead, learning steps wait in this queue and are applied in
``(event time, key)`` order, only once a decision at least ``delay_ms`` later in event time is
about to be made. Every decision then sees the same learned history, whatever the arrival order,
as long as resolutions are less than ``delay_ms`` out of event-time order.

>>> done = []
>>> q = LearningQueue(delay_ms=10)
>>> q.push(5, "b", lambda: done.append("b")); q.push(3, "a", lambda: done.append("a"))
>>> q.flush(now_ts=13), done
(1, ['a'])
>>> q.flush(now_ts=15), done
(1, ['a', 'b'])
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class LearningQueue:
    def __init__(self, delay_ms: int) -> None:
        self.delay_ms = delay_ms
        self._heap: list[tuple[int, str, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def push(self, ts: int, key: str, step: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (ts, key, next(self._seq), step))

    def flush(self, now_ts: int) -> int:
        """Apply every step at or before ``now_ts - delay_ms``; returns how many ran."""
        horizon = now_ts - self.delay_ms
        ran = 0
        while self._heap and self._heap[0][0] <= horizon:
            _, _, _, step = heapq.heappop(self._heap)
            step()
            ran += 1
        return ran

    def __len__(self) -> int:
        return len(self._heap)
