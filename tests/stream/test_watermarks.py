"""Per-partition watermarks over the engagement topics (convstream/stream/watermarks.py)."""

from __future__ import annotations

from convstream.stream.watermarks import WatermarkTracker

T = 1_767_571_200_000
MIN = 60_000


def test_a_topic_read_to_its_end_holds_back_until_it_settles():
    """A replay produced while the worker reads it: impressions are read to the end of their
    last fetch an instant before more land, while identity, fetched later, is hours ahead."""
    now = [0.0]
    highwater = {("impressions", 0): 100, ("identity", 0): 50}
    wm = WatermarkTracker(
        ("impressions", "identity"),
        lateness_ms=5 * MIN,
        highwater=highwater.get,
        settle_s=1.0,
        clock=lambda: now[0],
    )
    wm.observe("impressions", 0, T, offset=99)
    wm.observe("identity", 0, T + 180 * MIN, offset=10)
    assert wm.watermark(0) == T - 5 * MIN  # not T + 175 min: impressions may still grow
    now[0] = 0.5
    highwater[("impressions", 0)] = 120  # more impressions landed
    assert wm.watermark(0) == T - 5 * MIN
    wm.observe("impressions", 0, T + MIN, offset=119)
    now[0] = 1.2
    assert wm.watermark(0) == T - 4 * MIN  # read to the end again, seen so from now on
    now[0] = 2.2
    assert wm.watermark(0) == T + 175 * MIN  # settled: identity alone holds the watermark


def test_nothing_read_and_nothing_to_read_gives_no_watermark():
    wm = WatermarkTracker(("clicks",), lateness_ms=0, highwater=lambda key: 0, settle_s=0.0)
    assert wm.watermark(0) is None


def test_behind_once_a_topic_has_had_records_left_for_settle_s():
    """A backlog, not live traffic between two fetches: lookups wait for a backlog however
    long it takes (convstream/core/lookup_gate.py), but must not wait that way for live traffic."""
    now = [0.0]
    highwater = {("clicks", 0): 10, ("views", 0): 50}
    wm = WatermarkTracker(
        ("clicks", "views"),
        lateness_ms=0,
        highwater=highwater.get,
        settle_s=1.0,
        clock=lambda: now[0],
    )
    wm.observe("clicks", 0, T, offset=9)
    wm.observe("views", 0, T, offset=20)
    assert not wm.behind(0)  # views 21..49 unread, only just
    now[0] = 1.0
    assert wm.behind(0)
    wm.observe("views", 0, T + MIN, offset=49)
    assert not wm.behind(0)  # read to the end
    now[0] = 1.5
    highwater[("clicks", 0)] = 11  # live: a record lands between two fetches
    assert not wm.behind(0)
    wm.observe("clicks", 0, T + MIN, offset=10)
    now[0] = 3.0
    assert not wm.behind(0)
    highwater[("clicks", 0)] = 500  # a burst the consumer cannot keep up with
    assert not wm.behind(0)
    now[0] = 4.0
    assert wm.behind(0)
    assert wm.behind(1) is False  # nothing known about partition 1: nobody reads it here
    wm.observe("views", 2, T, offset=0)  # partition 2 assigned just now, clicks not fetched
    assert wm.behind(2)


def test_a_dead_lettered_last_record_does_not_keep_its_partition_unread():
    """The users agent skips a bad record without an event time; its offset still counts, or
    the partition would look behind for good (and lookups would wait for the ceiling)."""
    now = [0.0]
    wm = WatermarkTracker(
        ("clicks", "identity"),
        lateness_ms=0,
        highwater={("clicks", 0): 5, ("identity", 0): 1}.get,
        settle_s=1.0,
        clock=lambda: now[0],
    )
    wm.observe("clicks", 0, T, offset=4)
    wm.skip("identity", 0, offset=0)
    assert wm.watermark(0) is None  # read to the end only just
    now[0] = 1.0
    assert wm.watermark(0) == T
    assert not wm.behind(0)


def test_one_record_far_ahead_does_not_move_the_watermark():
    """Issue 23: one impression stamped in 2255 per partition made every identifier entry
    expire on arrival, through the watermark."""
    highwater = {("impressions", 0): 10**6}
    wm = WatermarkTracker(("impressions",), lateness_ms=0, highwater=highwater.get)
    wm.observe("impressions", 0, T, offset=0)
    wm.observe("impressions", 0, 9 * 10**12, offset=1)
    assert wm.watermark(0) == T
    for i in range(1, 4):
        wm.observe("impressions", 0, T + i * MIN, offset=1 + i)
        assert wm.watermark(0) == T + i * MIN
    assert wm.newest("impressions") == T + 3 * MIN


def test_a_gap_in_traffic_costs_the_watermark_one_record():
    highwater = {("impressions", 0): 10**6}
    wm = WatermarkTracker(("impressions",), lateness_ms=0, highwater=highwater.get)
    wm.observe("impressions", 0, T, offset=0)
    wm.observe("impressions", 0, T + 5 * 60 * MIN, offset=1)  # five hours later
    assert wm.watermark(0) == T
    wm.observe("impressions", 0, T + 5 * 60 * MIN + 1, offset=2)
    assert wm.watermark(0) == T + 5 * 60 * MIN + 1
