"""The robust event-time clock: one outlier, anywhere, changes no other record's verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstream.core.clock import EventClock

DAY = 86_400_000
T0 = 1_767_571_200_000
BOUNDS = {"max_future_ms": 7 * DAY, "max_age_ms": 30 * DAY, "outliers": 2, "window": 16}


def verdicts(stream: list[int], clock: EventClock | None = None) -> list[str | None]:
    clock = EventClock(**BOUNDS) if clock is None else clock  # an empty clock is falsy
    return [clock.admit(ts) for ts in stream]


# Good traffic: event times that move forward by up to two hours, sometimes a little back.
steps = st.lists(st.integers(-600_000, 2 * 3600_000), min_size=5, max_size=80)


#: The conversions' bounds: far ahead is allowed (sparse partitions), late is not.
CONVERSION_BOUNDS = {**BOUNDS, "max_future_ms": 30 * DAY, "max_age_ms": 7 * DAY}
OUTLIERS = [9 * 10**12, 10**12, T0 - 90 * DAY, T0 + 300 * DAY, T0 + 20 * DAY]


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    where=st.integers(0, 1000),
    outlier=st.sampled_from(OUTLIERS),
    bounds=st.sampled_from([BOUNDS, CONVERSION_BOUNDS]),
)
def test_one_outlier_changes_no_other_verdict(steps, where, outlier, bounds):
    stream, ts = [], T0
    for step in steps:
        ts += step
        stream.append(ts)
    # Past the warm-up: before it only the broker bound judges (tested below).
    where = max(where % (len(stream) + 1), 2 * bounds["outliers"] + 1)
    control = verdicts(stream, EventClock(**bounds))
    planted = stream[:where] + [outlier] + stream[where:]
    got = verdicts(planted, EventClock(**bounds))
    if outlier != T0 + 20 * DAY:  # inside the conversions' future bound: admitted
        assert got[where] is not None
    assert got[:where] + got[where + 1 :] == control == [None] * len(stream)


def test_a_maximum_clock_would_have_rejected_the_good_records():
    """The failure this guards against (issue 23, item 3): a conversion 20 days ahead, inside
    the future bound, then good conversions that a clock at its event time calls too old."""
    stream = [T0 + i * 60_000 for i in range(10)]
    clock = EventClock(**CONVERSION_BOUNDS)
    for ts in stream[:5]:
        clock.admit(ts)
    assert clock.admit(T0 + 20 * DAY) is None  # inside the future bound: admitted
    # The clock did not follow it, so the later good records are not "too old" for it...
    assert [clock.admit(ts) for ts in stream[5:]] == [None] * 5
    # ...while a record older than the age bound from the clock is.
    assert clock.admit(T0 - 8 * DAY) == "too_old"


def test_broker_timestamp_bounds_the_future_from_the_first_record():
    clock = EventClock(**BOUNDS)
    assert not clock.warm()
    assert clock.admit(9 * 10**12, broker_ts=T0) == "future_ts"
    assert clock.admit(T0 + 2 * DAY, broker_ts=T0) == "future_ts"
    assert clock.admit(T0 + 3600_000, broker_ts=T0) is None  # producer clocks drift an hour
    # Replays are old: the broker time never makes a record too old.
    assert clock.admit(T0 - 200 * DAY, broker_ts=T0) is None
    assert len(clock) == 2


def test_without_a_broker_bound_only_the_clock_judges():
    clock = EventClock(**{**BOUNDS, "broker_skew_ms": None})
    assert clock.admit(T0 + 2 * DAY, broker_ts=T0) is None


def test_the_window_forgets_old_records_so_the_clock_follows_time():
    clock = EventClock(**BOUNDS)
    for i in range(100):
        assert clock.admit(T0 + i * DAY) is None  # a day a record: a sparse partition
    assert clock.now() == T0 + 97 * DAY  # a record behind... the third newest
    assert clock.admit(T0 + 104 * DAY) is None  # a week after it: in the bounds
    assert clock.admit(T0 + 120 * DAY) == "future_ts"
    assert clock.admit(T0 + 66 * DAY) == "too_old"
    assert len(clock) == 16


def test_dumps_loads_round_trip_keeps_verdicts():
    clock = EventClock(**BOUNDS)
    for i in range(30):
        clock.admit(T0 + i * 60_000)
    again = EventClock.loads(clock.dumps(), **BOUNDS)
    assert again.dumps() == clock.dumps()
    for ts in (T0, T0 + 8 * DAY, T0 - 31 * DAY, T0 + DAY):
        assert again.judge(ts) == clock.judge(ts)
    assert EventClock.loads(None, **BOUNDS).now() is None
    # A smaller window after a settings change keeps the newest values.
    small = EventClock.loads(clock.dumps(), **{**BOUNDS, "window": 5})
    assert len(small) == 5 and small.now() == T0 + 27 * 60_000  # third newest of 25..29
    # Junk in a restored blob is skipped, never trusted.
    assert len(EventClock.loads(b'[1, "x", true, 2.5, 3]', **BOUNDS)) == 2


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        EventClock(max_future_ms=1, max_age_ms=1, window=4, outliers=2)


def test_no_clock_until_real_records_outnumber_outliers_on_both_sides():
    """Seen in tests/integration/test_hostile_clocks.py: a sparse partition's cold clock
    admitted one record far ahead and one far behind; with three records the one far behind
    was the clock, and every good record after it was future_ts."""
    clock = EventClock(**BOUNDS)
    for ts in (T0, T0 + 300 * DAY, T0 - 200 * DAY, T0 + 60_000):
        assert clock.admit(ts) is None  # cold: only the broker bound judges
        assert clock.now() is None
    assert clock.admit(T0 + 120_000) is None
    assert clock.now() == T0 + 60_000
    assert [clock.admit(T0 + i * DAY) for i in range(1, 4)] == [None] * 3


def test_a_cold_clock_judges_by_the_fallback_it_is_given():
    """A sparse partition's first records, read before its clock is warm, are judged by the
    clock of the worker's other partitions."""
    clock = EventClock(**BOUNDS)
    assert clock.admit(T0 + 300 * DAY, fallback=T0) == "future_ts"
    assert clock.admit(T0 - 200 * DAY, fallback=T0) == "too_old"
    assert clock.admit(T0 + 300 * DAY) is None  # no fallback: admitted (and outvoted later)
    assert clock.explain(T0 + 300 * DAY, fallback=T0) == "300.0 days ahead of the clock"
