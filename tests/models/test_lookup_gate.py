"""When the identifiers agent may answer a parked lookup (models/lookup_gate.py)."""

from __future__ import annotations

from models.lookup_gate import LookupGate

T = 1_767_571_200_000
MIN = 60_000
LATENESS = 5 * MIN


def _gate(sources: int = 2, max_wait_s: float = 10.0, ceiling_s: float = 600.0) -> LookupGate:
    return LookupGate(sources, lateness_ms=LATENESS, max_wait_s=max_wait_s, ceiling_s=ceiling_s)


def _lookup(ts: int, key: str = "ip:10.0.0.1") -> dict:
    return {"ts": ts, "k": key, "ck": "a:Purchase:1", "r": 0}


def test_released_once_every_users_partition_passed_the_conversion():
    gate = _gate()
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {0: T + MIN}, now=0.1)
    assert gate.due(now=0.2) == []  # users partition 1 has not reported
    gate.observe(0, {1: T}, now=0.3)
    assert gate.due(now=0.4) == [_lookup(T)]
    assert len(gate) == 0


def test_watermarks_read_on_another_partition_do_not_release():
    """Sightings for a key and its lookups share a cs-ident partition; marks read on another
    partition may run ahead of this one's sightings, so they must not release its lookups."""
    gate = _gate()
    gate.park(1, _lookup(T), now=0.0)
    gate.observe(0, {0: T + MIN, 1: T + MIN}, now=0.1)
    gate.observe(1, {0: T - 2 * LATENESS, 1: T - 2 * LATENESS}, now=0.1)
    assert gate.due(now=0.2) == []
    assert gate.watermark(0) == T + MIN and gate.watermark(1) == T - 2 * LATENESS
    gate.observe(1, {0: T, 1: T}, now=0.3)
    assert gate.due(now=0.4) == [_lookup(T)]


def test_a_backlog_is_waited_for_however_long_the_lookup_was_parked():
    """A replay reads conversions far ahead of impressions: the bounded wait must not answer a
    lookup while the engagements before it are still being read."""
    gate = _gate(max_wait_s=5.0)
    gate.park(0, _lookup(T), now=0.0)
    for step in range(1, 40):  # 39 s of draining, the watermark moving every second
        gate.observe(0, {0: T - 10 * 3_600_000 + step * 60_000, 1: T}, now=float(step))
        assert gate.due(now=float(step)) == []
    gate.observe(0, {0: T}, now=40.0)
    assert gate.due(now=40.0) == [_lookup(T)]


def test_the_wait_covers_lateness_once_engagements_are_read_up_to_the_conversion():
    gate = _gate(max_wait_s=10.0)
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {0: T - LATENESS, 1: T - LATENESS + 1}, now=100.0)  # read up to T
    assert gate.due(now=100.0) == []
    gate.observe(0, {0: T - LATENESS + 2, 1: T - LATENESS + 3}, now=105.0)
    assert gate.due(now=109.9) == []
    assert gate.due(now=110.0) == [_lookup(T)]


def test_a_stalled_watermark_releases_after_the_bounded_wait():
    """End of a replay: nothing moves the watermark past the last conversions any more."""
    gate = _gate(max_wait_s=10.0)
    gate.observe(0, {0: T - 3_600_000, 1: T - 3_600_000}, now=0.0)
    gate.park(0, _lookup(T), now=5.0)
    assert gate.due(now=12.0) == []  # the watermark stopped 12 s ago, the lookup came 7 s ago
    assert gate.due(now=15.0) == [_lookup(T)]


def test_no_users_partition_ever_reporting_still_releases():
    gate = _gate(max_wait_s=10.0)
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {}, now=1.0)  # the users agents run, but have no watermark to give
    assert gate.due(now=9.0) == []
    assert gate.due(now=11.0) == [_lookup(T)]


def test_the_ceiling_bounds_every_wait():
    gate = _gate(max_wait_s=10.0, ceiling_s=60.0)
    gate.park(0, _lookup(T + 3_600_000), now=0.0)  # stamped an hour ahead of the engagements
    for step in range(1, 60):
        gate.observe(0, {0: T + step * 1_000, 1: T + step * 1_000}, now=float(step))
        assert gate.due(now=float(step)) == []
    assert gate.due(now=60.0) == [_lookup(T + 3_600_000)]


def test_the_stall_clock_waits_for_the_users_agents_first_message():
    """A worker's conversions agent can start reading seconds before its users agent: lookups
    parked then must not be answered from an index that has not seen a sighting yet."""
    gate = _gate(max_wait_s=5.0)
    gate.park(0, _lookup(T), now=0.0)
    assert gate.due(now=30.0) == []
    gate.observe(0, {0: T - 3_600_000}, now=30.0)  # the users agent starts, one partition so far
    assert gate.due(now=34.0) == []
    assert gate.due(now=35.0) == [_lookup(T)]


def test_the_ceiling_does_not_cut_a_backlog_short():
    """A replay slower than the ceiling (a loaded machine): while a users partition reports
    engagements left to read, lookups wait for the watermark, however long it takes."""
    gate = _gate(max_wait_s=5.0, ceiling_s=60.0)
    gate.park(0, _lookup(T), now=0.0)
    for step in range(1, 120):
        mark = T - 10 * 3_600_000 + step * 60_000
        gate.observe(0, {0: mark, 1: mark}, now=float(step), behind={0: True, 1: False})
        assert gate.due(now=float(step)) == []
    gate.observe(0, {0: T, 1: T}, now=120.0, behind={0: False})
    assert gate.due(now=120.0) == [_lookup(T)]


def test_the_ceiling_still_bounds_a_conversion_ahead_of_engagements_read_to_their_end():
    gate = _gate(max_wait_s=10.0, ceiling_s=60.0)
    gate.park(0, _lookup(T + 3_600_000), now=0.0)
    for step in range(1, 60):
        mark = T + step * 1_000
        gate.observe(0, {0: mark, 1: mark}, now=float(step), behind={0: False, 1: False})
        assert gate.due(now=float(step)) == []
    assert gate.due(now=60.0) == [_lookup(T + 3_600_000)]
