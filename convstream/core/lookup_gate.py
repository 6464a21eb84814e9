"""When a parked lookup may be answered: per identifiers partition, by watermark or idle input.

A lookup for a conversion at event time T lands on the identifiers partition of its key, where
the users agents also send their sightings, each message carrying their partitions' watermarks
(:mod:`convstream.stream.watermarks`: every engagement at or before the watermark is read, and
its sighting sent before the mark). Only that partition's messages say which sightings it
holds, so marks are kept per identifiers partition: a mark read on another partition may run
ahead of this one's sightings. A lookup is released only

- when every users partition's watermark, as read on the lookup's partition, is at or past T:
  no users partition has unread engagements at or before T + the allowed lateness, and the
  answer holds every sighting at or before T, however long reading them took;
- or when the users partitions whose watermark is short of T are *idle*: their owner reported
  them read to the broker's end offset with nothing new for the configured period
  (``max_wait_s``), and that report is recent (``idle_valid_s``). The only wall-clock release:
  the end of a replay, traffic that stopped, a users partition without any engagement.

Nothing else answers a lookup early: not a bounded wait after the lateness window, not a
watermark that has not moved for a while, not a ceiling. Each of those measured load-dependent
labels: on a machine kept busy by other processes, reading the engagement topics takes longer,
and lookups went out before the sightings before them were read (6.9 % of conversion keys got
another user, issue 19). A users partition that nobody reads (its worker gone, a rebalance
under way) sends no reports, so its lookups wait for its next owner.

Lookups of a key that decisions may link (``ordered``: email, phone, external id) also go out
in event-time order, one decision at a time. A decision that ties the conversion's email to a
user sends that link to the email's key (``t:"x"``), and then tells the key it is decided
(:meth:`LookupGate.decided`); a later conversion's lookup of the same key waits for that, so it
finds the link. Only conversions that share a key wait for each other; the oldest lookup of a
key never waits, so this cannot deadlock. A decision that never comes (its round cut by a
rebalance, its worker gone) is normally ended by the conversion's next round, which looks the
key up again (the conversions agent redrives such rounds); only past ``turn_timeout_s`` of wall
time does it stop holding the key back without one, long after any decision of a healthy
worker, loaded or not. A hot key (``hot_key`` lookups waiting their turn at once: a
placeholder email many orders share) lets its oldest go without waiting, so live it adds at
most that many decisions of latency; a link to a key that many conversions share is contested
anyway.

>>> from convstream.core.messages import Lookup
>>> gate = LookupGate(sources=2, idle_valid_s=5.0)
>>> gate.park(0, Lookup("ip:1", "a:Purchase:1", 0, 1_000), now=0.0)
>>> gate.observe(0, {0: 2_000, 1: 500}, now=1.0)
>>> gate.due(now=600.0)  # users partition 1 is not read past T yet: wait, however long
[]
>>> gate.observe(0, {1: 1_000}, now=601.0)
>>> [request.ts for request in gate.due(now=601.0)]
[1000]

>>> gate.park(0, Lookup("ip:1", "a:Purchase:2", 0, 9_000), now=602.0)  # past every watermark
>>> gate.observe(0, {}, now=603.0, idle={0: True})
>>> gate.due(now=603.0)  # partition 1 has not said it is idle
[]
>>> gate.observe(0, {}, now=604.0, idle={1: True})
>>> [request.ts for request in gate.due(now=604.0)]
[9000]

>>> gate = LookupGate(sources=1, ordered=("em:",))
>>> first, second = Lookup("em:e1", "o1", 0, 1_000), Lookup("em:e1", "o2", 0, 5_000)
>>> gate.park(0, second, now=0.0); gate.park(0, first, now=0.0)
>>> gate.observe(0, {0: 9_000}, now=1.0)
>>> [r.conversion_key for r in gate.due(now=1.0)]  # the second waits for the first's decision
['o1']
>>> gate.decided("em:e1", "o1")  # after its link, if it made one
>>> [r.conversion_key for r in gate.due(now=2.0)]
['o2']
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from convstream.core.messages import Lookup

Request = Lookup

#: How long a users partition's report that it is idle holds (wall time, seconds): its owner
#: repeats it every second while it stays so.
DEFAULT_IDLE_VALID_S = 5.0
#: How long an answered lookup of an ordered key holds the key's later lookups without its
#: decision (wall time, seconds): well past a redrive (``redrive_after_s``).
DEFAULT_TURN_TIMEOUT_S = 600.0


class _Partition:
    """The marks, idle reports and parked lookups of one identifiers partition."""

    def __init__(self) -> None:
        self.marks: dict[int, int] = {}
        self.idle_at: dict[int, float] = {}  # users partition -> when it last reported idle
        self.by_ts: list[tuple[int, int]] = []  # parked: (ts, id)


class _Key:
    """The lookups of one ordered key: parked ones by (ts, conversion), and those answered whose
    conversion has not said it is decided."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, str, int]] = []  # (ts, conversion key, id)
        self.open: dict[str, tuple[int, float]] = {}  # conversion key -> (ts, answered at)
        self.ready = 0  # queued lookups the rules released: waiting their turn


class LookupGate:
    """Parked lookups of the identifiers partitions one worker owns; see the module docstring.

    ``sources`` is the number of users partitions whose watermarks (or idleness) must be known.
    """

    def __init__(
        self,
        sources: int,
        *,
        idle_valid_s: float = DEFAULT_IDLE_VALID_S,
        turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S,
        ordered: tuple[str, ...] = (),
        hot_key: int = 8,
    ) -> None:
        self.sources = sources
        self.ordered = ordered
        self.hot_key = hot_key
        self.idle_valid_s = idle_valid_s
        self.turn_timeout_s = turn_timeout_s
        self._parts: dict[int, _Partition] = {}
        self._parked: dict[int, Request] = {}
        self._ids_of: dict[Request, int] = {}  # a request parked twice is held once
        self._partition_of: dict[int, int] = {}
        self._newest: dict[tuple[str, str], int] = {}  # (key, conversion) -> its latest round's
        self._moot: list[Request] = []
        self._ids = itertools.count()
        self._keys: dict[str, _Key] = {}
        self._ready: set[int] = set()  # ordered lookups the rules released, waiting their turn
        self._dirty: set[str] = set()  # keys whose turn may have come
        self._answered: deque[tuple[float, str, str]] = deque()  # (at, key, conversion key)
        #: Answered lookups whose decision never came within ``turn_timeout_s`` (so far).
        self.turns_expired = 0
        #: Lookups an ordered key let go before the decisions before them (a hot key).
        self.hot_key_skips = 0

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        return part

    def watermark(self, partition: int) -> int | None:
        """Minimum watermark over all users partitions as read on ``partition`` (None: some
        users partition has not reported one yet). Idleness does not move it: it is the
        event-time clock of the sightings this partition holds."""
        part = self._parts.get(partition)
        if part is None or len(part.marks) < self.sources:
            return None
        return min(part.marks.values())

    def observe(
        self,
        partition: int,
        marks: dict[int, int],
        now: float,
        idle: dict[int, bool] | None = None,
    ) -> None:
        """Watermarks of users partitions carried by a message read on ``partition``, and
        which of them are idle (the latest report of each counts)."""
        part = self._part(partition)
        for source, mark in marks.items():
            if mark > part.marks.get(source, mark - 1):
                part.marks[source] = mark
        for source, flag in (idle or {}).items():
            if flag:
                part.idle_at[source] = now
            else:
                part.idle_at.pop(source, None)

    def _released_up_to(self, part: _Partition, now: float) -> float | None:
        """Event time up to which this partition's lookups may go: the least watermark of the
        users partitions that are not idle (infinite when all are)."""
        horizon = float("inf")
        for source in range(self.sources):
            at = part.idle_at.get(source)
            if at is not None and now - at <= self.idle_valid_s:
                continue
            mark = part.marks.get(source)
            if mark is None:
                return None
            horizon = min(horizon, mark)
        return horizon

    def decided(self, key: str, conversion: str) -> None:
        """``conversion`` is decided, and its links to ``key`` (if any) were sent before this.

        A lookup of the key by the conversion still parked here is moot (:meth:`take_moot`): a
        conversion decides only once every lookup of its round is answered, and the lookups of
        its next round are sent after this message, so the one parked was answered elsewhere
        (by a worker that died before its cs-ident offset was committed, whose answer the
        conversion read) or is an earlier round's. Answered now, it would open a turn that no
        decision closes and hold the key's later lookups for ``turn_timeout_s``.
        """
        held = self._newest.get((key, conversion))
        if held is not None:
            self._moot.append(self._drop(held))
        entry = self._keys.get(key)
        if entry is not None and entry.open.pop(conversion, None) is not None:
            self._dirty.add(key)

    def park(self, partition: int, request: Request, now: float) -> None:
        """Hold ``request`` (a lookup with event time ``request.ts``) read on ``partition``; one
        already held (read again after a restart, and restored from the parked table) once.

        A lookup of the key by the same conversion in an earlier round than one held is moot:
        its answer would be ignored, so it is never answered (:meth:`take_moot` hands it back,
        for the parked table). A round started again after a restart
        (:meth:`convstream.core.lifecycle.Lifecycle.resume`) so costs no second answer.
        """
        if request in self._ids_of:
            return
        pair = (request.key, request.conversion_key)
        held = self._newest.get(pair)
        if held is not None and self._parked[held].round > request.round:
            self._moot.append(request)
            return
        if held is not None and self._parked[held].round < request.round:
            self._moot.append(self._drop(held))
        part = self._part(partition)
        n = next(self._ids)
        self._parked[n] = request
        self._ids_of[request] = n
        self._partition_of[n] = partition
        self._newest[pair] = n
        heapq.heappush(part.by_ts, (request.ts, n))
        key = request.key
        if self._is_ordered(key):
            entry = self._keys.setdefault(key, _Key())
            # A new round of the same conversion: its earlier one will not be decided.
            entry.open.pop(request.conversion_key, None)
            heapq.heappush(entry.queue, (request.ts, request.conversion_key, n))
            self._dirty.add(key)

    def take_moot(self) -> list[Request]:
        """The lookups made moot since the last call (:meth:`park`)."""
        out, self._moot = self._moot, []
        return out

    def _drop(self, n: int) -> Request:
        """Forget parked lookup ``n`` unanswered (its heap and queue entries are skipped)."""
        request = self._parked.pop(n)
        del self._ids_of[request]
        del self._partition_of[n]
        pair = (request.key, request.conversion_key)
        if self._newest.get(pair) == n:
            del self._newest[pair]
        if n in self._ready:
            self._ready.discard(n)
            self._keys[request.key].ready -= 1
        if self._is_ordered(request.key):
            self._dirty.add(request.key)
        return request

    def due(self, now: float) -> list[Request]:
        """Remove and return every lookup that may be answered now (see the module docstring)."""
        ready: list[Request] = []
        for part in self._parts.values():
            horizon = self._released_up_to(part, now)
            if horizon is None:
                continue
            while part.by_ts and part.by_ts[0][0] <= horizon:
                self._pass(heapq.heappop(part.by_ts)[1], ready, now)
        # A decision that never came (see the module docstring) stops holding its key back.
        while self._answered and self._answered[0][0] <= now - self.turn_timeout_s:
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
        key = request.key
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
            if n not in self._parked:  # superseded meanwhile
                heapq.heappop(entry.queue)
                continue
            if n not in self._ready:
                break
            if any((t, c) < (ts, conversion) for c, (t, _) in entry.open.items()):
                if entry.ready < self.hot_key:
                    break
                self.hot_key_skips += 1
            heapq.heappop(entry.queue)
            self._take(n, ready, now)
        if not entry.queue and not entry.open:
            del self._keys[key]

    def _take(self, n: int, ready: list[Request], now: float) -> None:
        """Answer lookup ``n``. An ordered one opens its conversion's turn on the key: later
        lookups of the key wait for its decision."""
        request = self._parked.pop(n, None)
        if request is None:
            return
        del self._ids_of[request]
        del self._partition_of[n]
        pair = (request.key, request.conversion_key)
        if self._newest.get(pair) == n:
            del self._newest[pair]
        ready.append(request)
        key = request.key
        if not self._is_ordered(key):
            return
        if n in self._ready:
            self._ready.discard(n)
            self._keys[key].ready -= 1
        self._keys[key].open[request.conversion_key] = (request.ts, now)
        self._answered.append((now, key, request.conversion_key))

    def forget_partition(self, partition: int) -> int:
        """Drop the lookups parked for ``partition`` (it moved to another worker, which restores
        them from the parked table) and its marks; returns how many went."""
        gone = [n for n, p in self._partition_of.items() if p == partition]
        for n in gone:
            self._drop(n)
        self._parts.pop(partition, None)
        return len(gone)

    def __len__(self) -> int:
        return len(self._parked)

    def waiting(self) -> tuple[int, int]:
        """Parked lookups waiting for the watermark (or idle input), and for their turn."""
        return len(self._parked) - len(self._ready), len(self._ready)
