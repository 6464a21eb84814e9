"""When a parked lookup may be answered: per identifiers partition, by watermark or bounded wait.

A lookup for a conversion at event time T lands on the identifiers partition of its key, where
the users agents also send their sightings, each message carrying their partitions' watermarks.
Only that partition's messages say which sightings it holds, so watermarks are kept per
identifiers partition: a watermark read on another partition may run ahead of this one's
sightings. A lookup is released

- when every users partition's watermark, as read on the lookup's partition, is at or past T;
- or ``max_wait_s`` (wall time) after the engagements were read up to T on every users
  partition (watermark + allowed lateness >= T): the wait covers late records, not a backlog;
- or ``max_wait_s`` after it arrived when the partition's watermark has not moved for
  ``max_wait_s`` since the users agents' first message: the engagement input is idle or
  stalled (end of a replay, a users partition nobody reads). Before any message the clock does
  not run: a worker's conversions agent may start reading seconds before its users agent;
- or ``ceiling_s`` after it arrived, unless a users partition reports unread engagements
  (:meth:`LookupGate.observe`, ``behind``): a conversion stamped far ahead of engagements that
  are read to their end, or no engagement input at all. A backlog is not cut short: a replay
  that takes longer than the ceiling (a slow machine) had its last conversions answered from an
  index still missing the sightings before them.

During a backlog (a replay, a restart) the watermark keeps moving and lookups wait for it, so
answers hold every sighting at or before T whatever the read speed. Before, the wait ran from
the lookup's arrival: a replay read conversions far ahead of impressions, and lookups answered
after ``max_wait_s`` missed sightings that were simply not read yet.

>>> gate = LookupGate(sources=2, lateness_ms=100, max_wait_s=10.0)
>>> gate.park(0, {"ts": 1_000}, now=0.0)
>>> gate.observe(0, {0: 2_000, 1: 500}, now=1.0)  # users partition 1 read up to 600 only
>>> gate.due(now=5.0)
[]
>>> gate.observe(0, {1: 950}, now=6.0)  # read up to 1_050 >= T: the wait covers lateness
>>> gate.due(now=15.0), gate.due(now=16.0)
([], [{'ts': 1000}])
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

Request = dict[str, Any]


class _Partition:
    """The marks and parked lookups of one identifiers partition."""

    def __init__(self) -> None:
        self.marks: dict[int, int] = {}
        self.mark: int | None = None
        self.moved_at: float | None = None  # None: no message from the users agents yet
        self.by_ts: list[tuple[int, int]] = []  # waiting for the watermark
        self.uncovered: list[tuple[int, int]] = []  # engagements not yet read up to ts
        self.covered: deque[tuple[float, int]] = deque()  # read up to ts: (since, id)
        self.arrivals: deque[tuple[float, int]] = deque()
        self.behind: dict[int, bool] = {}  # users partition -> has unread engagements


class LookupGate:
    """Parked lookups of the identifiers partitions one worker owns; see the module docstring.

    ``sources`` is the number of users partitions whose watermarks must all be known.
    """

    def __init__(
        self, sources: int, *, lateness_ms: int, max_wait_s: float, ceiling_s: float = 600.0
    ) -> None:
        self.sources = sources
        self.lateness_ms = lateness_ms
        self.max_wait_s = max_wait_s
        self.ceiling_s = max(ceiling_s, max_wait_s)
        self._parts: dict[int, _Partition] = {}
        self._parked: dict[int, Request] = {}
        self._ids = itertools.count()

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        return part

    def watermark(self, partition: int) -> int | None:
        """Minimum watermark over all users partitions as read on ``partition`` (None: some
        users partition has not reported yet)."""
        part = self._parts.get(partition)
        return None if part is None else part.mark

    def observe(
        self,
        partition: int,
        marks: dict[int, int],
        now: float,
        behind: dict[int, bool] | None = None,
    ) -> None:
        """Watermarks of users partitions carried by a message read on ``partition``, and
        whether they have engagements left to read (the latest report of each counts)."""
        part = self._part(partition)
        if behind:
            part.behind.update(behind)
        if part.moved_at is None:
            part.moved_at = now
        for source, mark in marks.items():
            if mark > part.marks.get(source, mark - 1):
                part.marks[source] = mark
        if len(part.marks) >= self.sources:
            mark = min(part.marks.values())
            if part.mark is None or mark > part.mark:
                part.mark = mark
                part.moved_at = now

    def park(self, partition: int, request: Request, now: float) -> None:
        """Hold ``request`` (a lookup with event time ``request["ts"]``) read on ``partition``."""
        part = self._part(partition)
        n = next(self._ids)
        self._parked[n] = request
        heapq.heappush(part.by_ts, (request["ts"], n))
        heapq.heappush(part.uncovered, (request["ts"], n))
        part.arrivals.append((now, n))

    def due(self, now: float) -> list[Request]:
        """Remove and return every lookup that may be answered now (see the module docstring)."""
        ready: list[Request] = []
        cutoff = now - self.max_wait_s
        for part in self._parts.values():
            mark = part.mark
            if mark is not None:
                while part.by_ts and part.by_ts[0][0] <= mark:
                    self._take(heapq.heappop(part.by_ts)[1], ready)
                while part.uncovered and part.uncovered[0][0] <= mark + self.lateness_ms:
                    part.covered.append((now, heapq.heappop(part.uncovered)[1]))
            while part.covered and part.covered[0][0] <= cutoff:
                self._take(part.covered.popleft()[1], ready)
            stalled = part.moved_at is not None and part.moved_at <= cutoff
            if stalled:
                oldest = cutoff
            elif any(part.behind.values()):
                oldest = float("-inf")
            else:
                oldest = now - self.ceiling_s
            while part.arrivals and part.arrivals[0][0] <= oldest:
                self._take(part.arrivals.popleft()[1], ready)
            # Entries already answered by another rule are dropped lazily; trim the queues.
            while part.arrivals and part.arrivals[0][1] not in self._parked:
                part.arrivals.popleft()
        return ready

    def _take(self, n: int, ready: list[Request]) -> None:
        request = self._parked.pop(n, None)
        if request is not None:
            ready.append(request)

    def __len__(self) -> int:
        return len(self._parked)
