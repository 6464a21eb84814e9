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
- or ``ceiling_s`` after it arrived: a conversion stamped far ahead of engagements that are
  read to their end, or no engagement input at all.

While a users partition reports engagements left to read (:meth:`LookupGate.observe`,
``behind``), the input is a backlog, not idle: the last two rules are replaced by one, the
watermark not having moved for ``ceiling_s`` (a backlog that stopped progressing). Measured
before: at a replay's start one users partition can take seconds to report its first
watermark while the others work through their backlog; the partition's watermark stayed
unknown, the stall rule answered lookups from a nearly empty index after ``max_wait_s`` (66
deterministic matches lost on one replay); and a replay slower than the ceiling (a loaded
machine) had its last conversions answered before the sightings before them were read.

Lookups of a key that decisions may link (``ordered``: email, phone, external id) also go out
in event-time order, one decision at a time. A decision that ties the conversion's email to a
user sends that link to the email's key (``t:"x"``), and then tells the key it is decided
(:meth:`LookupGate.decided`); a later conversion's lookup of the same key waits for that, so it
finds the link. Only conversions that share a key wait for each other; the oldest lookup of a
key never waits, so this cannot deadlock. A lookup the ceiling answers before its turn still
holds the later ones for its decision. A replay read at full speed otherwise answered days
of conversions in one burst, each blind to the links of the ones before. A decision that never
comes (its round cut by a rebalance and run again, its worker gone) stops holding the key back
after ``ceiling_s``, or when the same conversion looks the key up again. A hot key (``hot_key``
lookups waiting their turn at once: a placeholder email many orders share) lets its oldest go
without waiting, so live it adds at most that many decisions of latency; a link to a key that
many conversions share is contested anyway.

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

>>> gate = LookupGate(sources=1, lateness_ms=0, max_wait_s=10.0, ordered=("em:",))
>>> first, second = {"ts": 1_000, "k": "em:e1", "ck": "o1"}, {"ts": 5_000, "k": "em:e1", "ck": "o2"}
>>> gate.park(0, second, now=0.0); gate.park(0, first, now=0.0)
>>> gate.observe(0, {0: 9_000}, now=1.0)
>>> gate.due(now=1.0)  # the second waits for the first one's decision
[{'ts': 1000, 'k': 'em:e1', 'ck': 'o1'}]
>>> gate.decided("em:e1", "o1")  # after its link, if it made one
>>> gate.due(now=2.0)
[{'ts': 5000, 'k': 'em:e1', 'ck': 'o2'}]
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


class _Key:
    """The lookups of one ordered key: parked ones by (ts, conversion), and those answered whose
    conversion has not said it is decided."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, str, int]] = []  # (ts, conversion key, id)
        self.open: dict[str, tuple[int, float]] = {}  # conversion key -> (ts, answered at)
        self.ready = 0  # queued lookups the rules released: waiting their turn


class LookupGate:
    """Parked lookups of the identifiers partitions one worker owns; see the module docstring.

    ``sources`` is the number of users partitions whose watermarks must all be known.
    """

    def __init__(
        self,
        sources: int,
        *,
        lateness_ms: int,
        max_wait_s: float,
        ceiling_s: float = 600.0,
        ordered: tuple[str, ...] = (),
        hot_key: int = 8,
    ) -> None:
        self.sources = sources
        self.ordered = ordered
        self.hot_key = hot_key
        self.lateness_ms = lateness_ms
        self.max_wait_s = max_wait_s
        self.ceiling_s = max(ceiling_s, max_wait_s)
        self._parts: dict[int, _Partition] = {}
        self._parked: dict[int, Request] = {}
        self._ids = itertools.count()
        self._keys: dict[str, _Key] = {}
        self._ready: set[int] = set()  # ordered lookups the rules released, waiting their turn
        self._dirty: set[str] = set()  # keys whose turn may have come
        self._answered: deque[tuple[float, str, str]] = deque()  # (at, key, conversion key)
        #: Answered lookups whose decision never came within the ceiling (so far).
        self.turns_expired = 0

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

    def decided(self, key: str, conversion: str) -> None:
        """``conversion`` is decided, and its links to ``key`` (if any) were sent before this."""
        entry = self._keys.get(key)
        if entry is not None and entry.open.pop(conversion, None) is not None:
            self._dirty.add(key)

    def park(self, partition: int, request: Request, now: float) -> None:
        """Hold ``request`` (a lookup with event time ``request["ts"]``) read on ``partition``."""
        part = self._part(partition)
        n = next(self._ids)
        self._parked[n] = request
        heapq.heappush(part.by_ts, (request["ts"], n))
        heapq.heappush(part.uncovered, (request["ts"], n))
        part.arrivals.append((now, n))
        key = request.get("k")
        if self._is_ordered(key):
            entry = self._keys.setdefault(key, _Key())
            # A new round of the same conversion: its earlier one will not be decided.
            entry.open.pop(request["ck"], None)
            heapq.heappush(entry.queue, (request["ts"], request["ck"], n))
            self._dirty.add(key)

    def due(self, now: float) -> list[Request]:
        """Remove and return every lookup that may be answered now (see the module docstring)."""
        ready: list[Request] = []
        cutoff = now - self.max_wait_s
        for part in self._parts.values():
            # Released by the rules: straight out, or (an ordered key) in its turn.
            passed: list[int] = []
            mark = part.mark
            if mark is not None:
                while part.by_ts and part.by_ts[0][0] <= mark:
                    passed.append(heapq.heappop(part.by_ts)[1])
                while part.uncovered and part.uncovered[0][0] <= mark + self.lateness_ms:
                    part.covered.append((now, heapq.heappop(part.uncovered)[1]))
            while part.covered and part.covered[0][0] <= cutoff:
                passed.append(part.covered.popleft()[1])
            backlog = any(part.behind.values())
            stall = now - (self.ceiling_s if backlog else self.max_wait_s)
            if part.moved_at is not None and part.moved_at <= stall:  # stalled
                while part.arrivals and part.arrivals[0][0] <= stall:
                    passed.append(part.arrivals.popleft()[1])
            for n in passed:
                self._pass(n, ready, now)
            if not backlog:
                while part.arrivals and part.arrivals[0][0] <= now - self.ceiling_s:
                    self._take(part.arrivals.popleft()[1], ready, now)
            # Entries already answered by another rule are dropped lazily; trim the queues.
            while part.arrivals and part.arrivals[0][1] not in self._parked:
                part.arrivals.popleft()
        # A decision that never came (see the module docstring) stops holding its key back.
        while self._answered and self._answered[0][0] <= now - self.ceiling_s:
            at, key, conversion = self._answered.popleft()
            entry = self._keys.get(key)
            if entry is not None and entry.open.get(conversion, (0, None))[1] == at:
                del entry.open[conversion]
                self._dirty.add(key)
                self.turns_expired += 1
        for key in sorted(self._dirty):  # sorted: the same order in every run
            self._turns(key, now, ready)
        self._dirty.clear()
        return ready

    def _is_ordered(self, key: str | None) -> bool:
        """A key whose lookups go out in decision order (an email, phone or external id)."""
        return bool(self.ordered) and key is not None and key.startswith(self.ordered)

    def _pass(self, n: int, ready: list[Request], now: float) -> None:
        """A lookup the rules released: out now, or (an ordered key) when its turn comes."""
        request = self._parked.get(n)
        if request is None:
            return
        key = request.get("k")
        if self._is_ordered(key):
            if n not in self._ready:
                self._ready.add(n)
                self._keys[key].ready += 1
            self._dirty.add(key)
        else:
            self._take(n, ready, now)

    def _turns(self, key: str, now: float, ready: list[Request]) -> None:
        """Release the key's lookups in (ts, conversion) order while nothing older is open."""
        entry = self._keys[key]
        while entry.queue:
            ts, conversion, n = entry.queue[0]
            if n not in self._parked:  # answered by the ceiling meanwhile
                heapq.heappop(entry.queue)
                continue
            if n not in self._ready:
                break
            if entry.ready < self.hot_key and any(
                (t, c) < (ts, conversion) for c, (t, _) in entry.open.items()
            ):
                break
            heapq.heappop(entry.queue)
            self._take(n, ready, now)
        if not entry.queue and not entry.open:
            del self._keys[key]

    def _take(self, n: int, ready: list[Request], now: float) -> None:
        """Answer lookup ``n``. An ordered one opens its conversion's turn on the key, whichever
        rule answered it (the ceiling too): later lookups of the key wait for its decision."""
        request = self._parked.pop(n, None)
        if request is None:
            return
        ready.append(request)
        key = request.get("k")
        if not self._is_ordered(key):
            return
        if n in self._ready:
            self._ready.discard(n)
            self._keys[key].ready -= 1
        self._keys[key].open[request["ck"]] = (request["ts"], now)
        self._answered.append((now, key, request["ck"]))

    def __len__(self) -> int:
        return len(self._parked)

    def waiting(self) -> tuple[int, int]:
        """Parked lookups waiting for the watermark (or a bounded wait), and for their turn."""
        return len(self._parked) - len(self._ready), len(self._ready)
