"""Online learning applied in event-time order, a fixed delay behind the decisions.

Conversions are resolved in an order that depends on which topic was read first and on when
answers come back. If the match model learned at resolution time, the confidence of a label
would depend on that order. Instead, learning examples wait in this queue and are applied in
``(event time, key)`` order, only once a decision at least ``delay_ms`` later in event time is
about to be made. Every decision then sees the same learned history, whatever the arrival order,
as long as resolutions are less than ``delay_ms`` out of event-time order.

With pooled learning every replica on a worker queues every example, for an hour of traffic:
the replicas share one immutable :class:`Entry` per example, so a replica's queue costs a heap
slot per example (8 bytes) rather than an entry and a bound call (about 340 bytes).

>>> learned = []
>>> q = LearningQueue(delay_ms=10, apply=learned.append)
>>> q.push(Entry.make(5, "b", "example b")); q.push(Entry.make(3, "a", "example a"))
>>> q.flush(now_ts=13), learned
(1, ['example a'])
>>> q.flush(now_ts=15), learned
(1, ['example a', 'example b'])
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

_SEQ = itertools.count()


class Entry(NamedTuple):
    """One learning example in queue order; ``seq`` keeps ties in the order they were made."""

    ts: int
    key: str
    seq: int
    example: Any

    @classmethod
    def make(cls, ts: int, key: str, example: Any) -> Entry:
        return cls(ts, key, next(_SEQ), example)

    @classmethod
    def as_json(cls, ts: int, key: str, example: Any) -> Entry:
        """An entry holding ``example`` as JSON, in a right-sized copy: the bytes ``orjson.dumps``
        returns keep its whole output buffer (measured: 8 KB for a 320-byte example), and these
        wait an hour.

        >>> entry = Entry.as_json(1, "k", {"t": "ss"})
        >>> entry.example, orjson.loads(entry.example)
        (b'{"t":"ss"}', {'t': 'ss'})
        """
        return cls.make(ts, key, bytes(memoryview(orjson.dumps(example))))


class LearningQueue:
    """Examples waiting for one model replica; ``apply`` learns one of them."""

    def __init__(self, delay_ms: int, apply: Callable[[Any], None]) -> None:
        self.delay_ms = delay_ms
        self.apply = apply
        self._heap: list[Entry] = []

    def push(self, entry: Entry) -> None:
        heapq.heappush(self._heap, entry)

    def flush(self, now_ts: int) -> int:
        """Apply every example at or before ``now_ts - delay_ms``; returns how many ran."""
        horizon = now_ts - self.delay_ms
        ran = 0
        while self._heap and self._heap[0].ts <= horizon:
            self.apply(heapq.heappop(self._heap).example)
            ran += 1
        return ran

    def pending(self) -> list[Entry]:
        """The examples not learned yet, in the order they will be."""
        return sorted(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
