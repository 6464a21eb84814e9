"""Per-partition watermarks over the engagement topics (convstream/stream/watermarks.py)."""

from __future__ import annotations

from convstream.stream.watermarks import WatermarkTracker

T = 1_767_571_200_000
MIN = 60_000
DAY = 24 * 60 * MIN
TOPICS = ("impressions", "identity")


def _tracker(now: list[float], idle_s: float = 10.0) -> WatermarkTracker:
    return WatermarkTracker(TOPICS, lateness_ms=5 * MIN, idle_s=idle_s, clock=lambda: now[0])


def test_the_slowest_topic_holds_the_watermark_however_long_it_takes():
    """No wall-clock rule: a topic read slowly (a loaded machine) holds it back for good."""
    now = [0.0]
    wm = _tracker(now)
    wm.observe("impressions", 0, T + 180 * MIN, offset=99)
    assert wm.watermark(0) is None  # identity not read yet
    wm.observe("identity", 0, T, offset=10)
    assert wm.watermark(0) == T - 5 * MIN
    now[0] = 3600.0
    assert wm.watermark(0) == T - 5 * MIN
    assert not wm.idle(0)  # never asked the broker: not idle either


def test_a_topic_read_to_its_end_offset_no_longer_holds_back():
    """Identity is sparse: read to the broker's end, its next record was produced after the
    impressions read before the query, so it is no older than them (minus the lateness)."""
    now = [0.0]
    wm = _tracker(now)
    wm.observe("impressions", 0, T + 180 * MIN, offset=99)
    wm.observe("identity", 0, T, offset=10)
    snapshot = wm.snapshot()
    wm.observe("impressions", 0, T + 240 * MIN, offset=150)  # read while the query runs
    wm.ends({("impressions", 0): 300, ("identity", 0): 11}, snapshot)
    assert wm.watermark(0) == T + 175 * MIN  # the snapshot's newest, not the later 240 min
    wm.observe("identity", 0, T + 200 * MIN, offset=11)
    assert wm.watermark(0) == T + 195 * MIN


def test_the_end_of_the_last_fetch_is_not_the_end():
    """A topic not read to the end offset the broker gave keeps holding the watermark back."""
    now = [0.0]
    wm = _tracker(now)
    wm.observe("impressions", 0, T + 180 * MIN, offset=99)
    wm.observe("identity", 0, T, offset=10)
    wm.ends({("impressions", 0): 100, ("identity", 0): 40}, wm.snapshot())
    assert wm.watermark(0) == T - 5 * MIN
    now[0] = 60.0
    wm.ends({("impressions", 0): 100, ("identity", 0): 40}, wm.snapshot())
    assert wm.watermark(0) == T - 5 * MIN and not wm.idle(0)


def test_idle_once_read_to_the_end_with_nothing_new_for_idle_s():
    now = [0.0]
    wm = _tracker(now, idle_s=10.0)
    wm.observe("impressions", 0, T, offset=9)
    wm.observe("identity", 0, T, offset=4)
    ends = {("impressions", 0): 10, ("identity", 0): 5}
    wm.ends(ends, wm.snapshot())
    assert not wm.idle(0)  # read to the end only just
    now[0] = 9.9
    wm.ends(ends, wm.snapshot())
    assert not wm.idle(0)
    now[0] = 10.0
    assert wm.idle(0)
    wm.observe("identity", 0, T + MIN, offset=5)  # a new record: not idle any more
    assert not wm.idle(0)
    now[0] = 25.0
    wm.ends({("impressions", 0): 10, ("identity", 0): 6}, wm.snapshot())
    assert not wm.idle(0)  # the end moved just now
    now[0] = 35.0
    wm.ends({("impressions", 0): 10, ("identity", 0): 6}, wm.snapshot())
    assert wm.idle(0)
    assert not wm.idle(1)  # nothing known about partition 1


def test_a_partition_without_any_engagement_is_idle_but_has_no_watermark():
    now = [0.0]
    wm = _tracker(now, idle_s=1.0)
    ends = {("impressions", 3): 0, ("identity", 3): 0}
    wm.ends(ends, wm.snapshot())
    now[0] = 1.0
    wm.ends(ends, wm.snapshot())
    assert wm.idle(3)
    assert wm.watermark(3) is None


def test_a_dead_lettered_last_record_does_not_keep_its_partition_unread():
    """The users agent skips a bad record without an event time; its offset still counts, or
    the partition would never be idle (and the last lookups never answered)."""
    now = [0.0]
    wm = _tracker(now, idle_s=1.0)
    wm.observe("impressions", 0, T, offset=4)
    wm.skip("identity", 0, offset=0)
    ends = {("impressions", 0): 5, ("identity", 0): 1}
    wm.ends(ends, wm.snapshot())
    assert wm.watermark(0) == T - 5 * MIN
    now[0] = 1.0
    assert wm.idle(0)


def test_a_partition_taken_over_with_nothing_new_is_read_to_its_committed_offset():
    """A restarted worker reads nothing on a partition its predecessor had read to the end:
    the committed offset says so, or the partition would never be idle."""
    now = [0.0]
    wm = _tracker(now, idle_s=1.0)
    ends = {("impressions", 0): 500, ("identity", 0): 40}
    wm.ends(ends, wm.snapshot())
    now[0] = 2.0
    assert not wm.idle(0)
    wm.committed("impressions", 0, 500)
    wm.committed("identity", 0, 40)
    assert wm.idle(0)
    wm.committed("identity", 0, 10)  # an older commit does not move it back
    assert wm.idle(0)


def test_one_record_far_ahead_does_not_move_the_watermark():
    """Issue 23: one impression stamped in 2255 per partition made every identifier entry
    expire on arrival, through the watermark."""
    wm = WatermarkTracker(("impressions",), lateness_ms=0, idle_s=10.0)
    wm.observe("impressions", 0, T, offset=0)
    wm.observe("impressions", 0, 9 * 10**12, offset=1)
    assert wm.watermark(0) == T
    for i in range(1, 4):
        wm.observe("impressions", 0, T + i * MIN, offset=1 + i)
        assert wm.watermark(0) == T + i * MIN
    assert wm.newest("impressions") == T + 3 * MIN


def test_a_gap_in_traffic_costs_the_watermark_one_record():
    wm = WatermarkTracker(("impressions",), lateness_ms=0, idle_s=10.0)
    wm.observe("impressions", 0, T, offset=0)
    wm.observe("impressions", 0, T + 2 * DAY, offset=1)  # two days later
    assert wm.watermark(0) == T
    wm.observe("impressions", 0, T + 2 * DAY + 1, offset=2)
    assert wm.watermark(0) == T + 2 * DAY + 1
    wm.observe("impressions", 0, T + 2 * DAY + 5 * 60 * MIN, offset=3)  # five hours: a gap
    assert wm.watermark(0) == T + 2 * DAY + 5 * 60 * MIN
