"""An event-time clock that one record cannot bend: judge "future" and "too old" robustly.

A partition's clock is the ``outliers + 1``-th newest event time among its last ``window``
admitted records, not the newest one, so up to ``outliers`` records stamped far ahead cannot move
it (records stamped far behind never can). It still follows sparse traffic a record or two
behind, where a median would lag half a window. A record is ``future_ts`` when its event time is
more than ``max_future_ms`` ahead of that clock, or more than ``broker_skew_ms`` ahead of its
broker timestamp (nothing happens after it was produced; replays are old, so the broker time
bounds the future only, never the past). It is ``too_old`` when it is more than ``max_age_ms``
behind the clock. Until ``2 * outliers + 1`` records are admitted (enough for real ones to
outnumber outliers on both sides, so that none is the clock) it judges by a ``fallback`` clock
the caller gives (the worker's other partitions, say), else only the broker bound judges. The
state is a list of ints: ``dumps`` / ``loads`` keep it in a changelogged table across restarts
(the bounds come from settings at load time).

>>> DAY = 86_400_000
>>> clock = EventClock(max_future_ms=7 * DAY, max_age_ms=30 * DAY)
>>> T = 1_767_571_200_000
>>> [clock.admit(T + i * 60_000) for i in range(5)]
[None, None, None, None, None]
>>> clock.admit(9 * 10**12)  # year 2255: rejected, and the clock does not move
'future_ts'
>>> clock.admit(T + 20 * DAY, broker_ts=T + 1)  # stamped 20 days after it was produced
'future_ts'
>>> clock.admit(T - 40 * DAY)
'too_old'
>>> clock.admit(T + 6 * DAY)  # inside the bounds: admitted...
>>> (clock.now() - T) // 60_000  # ...but the clock stays with the others (minutes after T)
3
>>> again = EventClock.loads(clock.dumps(), max_future_ms=7 * DAY, max_age_ms=30 * DAY)
>>> again.now() == clock.now(), len(again)
(True, 6)
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from typing import Literal

import orjson

#: The dead-letter reasons a clock gives.
Verdict = Literal["future_ts", "too_old"]

DEFAULT_WINDOW = 64
#: How many recent records stamped ahead of all the others the clock ignores.
DEFAULT_OUTLIERS = 2
#: How far a record's event time may run ahead of its broker timestamp: producers' clocks drift.
DEFAULT_BROKER_SKEW_MS = 24 * 3600 * 1000


def consensus(clocks: Iterable[EventClock]) -> int | None:
    """The lower median of the warm clocks' times: the ``fallback`` for a cold one (a sparse
    partition's first records), which no outlier and no single partition can move.

    >>> warm = [EventClock(max_future_ms=1, max_age_ms=1, outliers=0) for _ in range(3)]
    >>> for c, ts in zip(warm, (10, 30, 20)): c.observe(ts)
    >>> consensus(warm), consensus([EventClock(max_future_ms=1, max_age_ms=1)])
    (20, None)
    """
    times = sorted(t for t in (c.now() for c in clocks) if t is not None)
    return times[(len(times) - 1) // 2] if times else None


class EventClock:
    """The robust event-time clock of one input partition (see the module docstring)."""

    def __init__(
        self,
        *,
        max_future_ms: int,
        max_age_ms: int | None,
        window: int = DEFAULT_WINDOW,
        outliers: int = DEFAULT_OUTLIERS,
        broker_skew_ms: int | None = DEFAULT_BROKER_SKEW_MS,
    ) -> None:
        if outliers < 0 or window <= 2 * outliers:
            raise ValueError("need 0 <= outliers and 2 * outliers < window")
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.window = window
        self.outliers = outliers
        self.broker_skew_ms = broker_skew_ms
        self._recent: deque[int] = deque()  # admission order, for eviction
        self._sorted: list[int] = []  # the same values, sorted, for the ranks

    def now(self) -> int | None:
        """The clock: the ``outliers + 1``-th newest recent admitted event time, or None until
        :meth:`warm` (with fewer, an outlier far behind admitted on a cold clock could be it).

        >>> c = EventClock(max_future_ms=10, max_age_ms=None, outliers=1)
        >>> for ts in (5, 1, 1000): c.observe(ts)
        >>> c.now()
        5
        """
        if not self.warm():
            return None
        return self._sorted[len(self._sorted) - 1 - self.outliers]

    def warm(self) -> bool:
        """Whether enough records are admitted for the clock to judge them."""
        return len(self._sorted) > 2 * self.outliers

    def judge(
        self, ts: int, *, broker_ts: int | None = None, fallback: int | None = None
    ) -> Verdict | None:
        """Why ``ts`` must not enter (a dead-letter reason), or None; the clock is unchanged.

        ``broker_ts`` is the record's broker timestamp in epoch milliseconds, if any;
        ``fallback`` the clock to judge by while this one is not :meth:`warm`.

        >>> c = EventClock(max_future_ms=10, max_age_ms=10)
        >>> c.judge(1_000), c.judge(1_000, fallback=0), c.judge(5, fallback=0)
        (None, 'future_ts', None)
        """
        if self.broker_skew_ms is not None and broker_ts and ts > broker_ts + self.broker_skew_ms:
            return "future_ts"
        now = self.now()
        if now is None:
            now = fallback
        if now is None:
            return None
        if ts > now + self.max_future_ms:
            return "future_ts"
        if self.max_age_ms is not None and ts < now - self.max_age_ms:
            return "too_old"
        return None

    def observe(self, ts: int) -> None:
        """Count ``ts`` among the recent event times (call it for admitted records only)."""
        self._recent.append(ts)
        bisect.insort(self._sorted, ts)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def admit(
        self, ts: int, *, broker_ts: int | None = None, fallback: int | None = None
    ) -> Verdict | None:
        """``judge``, then ``observe`` the record if it may enter: what an agent calls."""
        verdict = self.judge(ts, broker_ts=broker_ts, fallback=fallback)
        if verdict is None:
            self.observe(ts)
        return verdict

    def explain(self, ts: int, *, broker_ts: int | None = None, fallback: int | None = None) -> str:
        """Why a record was refused, in words and days (a dead-letter ``detail``).

        >>> c = EventClock(max_future_ms=1, max_age_ms=1, outliers=0)
        >>> c.observe(0)
        >>> c.explain(2 * 86_400_000), c.explain(-86_400_000 // 2)
        ('2.0 days ahead of the clock', '0.5 days behind the clock')
        """
        day = 86_400_000
        if self.broker_skew_ms is not None and broker_ts and ts > broker_ts + self.broker_skew_ms:
            return f"{(ts - broker_ts) / day:.1f} days ahead of its broker timestamp"
        now = self.now()
        if now is None:
            now = fallback
        if now is None:
            return "no clock yet"
        if ts >= now:
            return f"{(ts - now) / day:.1f} days ahead of the clock"
        return f"{(now - ts) / day:.1f} days behind the clock"

    def dumps(self) -> bytes:
        """The state (recent event times, oldest first) as JSON."""
        return orjson.dumps(list(self._recent))

    @classmethod
    def loads(cls, blob: bytes | str | None, **bounds: int | None) -> EventClock:
        """A clock from :meth:`dumps` (None or empty: a new one), with ``bounds`` as in
        ``__init__``; a window smaller than the saved one keeps the newest values."""
        clock = cls(**bounds)  # type: ignore[arg-type]
        for ts in orjson.loads(blob) if blob else ():
            if isinstance(ts, int) and not isinstance(ts, bool):
                clock.observe(ts)
        return clock

    def __len__(self) -> int:
        return len(self._recent)
