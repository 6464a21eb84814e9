"""When the identifiers agent may answer a parked lookup (convstream/core/lookup_gate.py)."""

from __future__ import annotations

from convstream.core.lookup_gate import LookupGate

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


def test_a_backlog_is_not_a_stall_while_a_users_partition_has_not_reported_yet():
    """A replay's start: users partition 1 reports its backlog, partition 0 has not reported a
    watermark yet. The watermark is unknown, but the input is not idle: no answer from a nearly
    empty index after max_wait_s, only after the ceiling without progress."""
    gate = _gate(max_wait_s=5.0, ceiling_s=60.0)
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {1: T - 3_600_000}, now=0.0, behind={1: True})
    assert gate.due(now=30.0) == []
    assert gate.due(now=60.0) == [_lookup(T)]


def test_once_nothing_is_behind_the_stall_rule_is_back_to_max_wait():
    gate = _gate(max_wait_s=5.0, ceiling_s=60.0)
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {1: T - 3_600_000}, now=0.0, behind={1: True})
    gate.observe(0, {}, now=2.0, behind={1: False})  # partition 0 is nobody's, say
    assert gate.due(now=4.9) == []
    assert gate.due(now=5.0) == [_lookup(T)]


def test_the_ceiling_still_bounds_a_conversion_ahead_of_engagements_read_to_their_end():
    gate = _gate(max_wait_s=10.0, ceiling_s=60.0)
    gate.park(0, _lookup(T + 3_600_000), now=0.0)
    for step in range(1, 60):
        mark = T + step * 1_000
        gate.observe(0, {0: mark, 1: mark}, now=float(step), behind={0: False, 1: False})
        assert gate.due(now=float(step)) == []
    assert gate.due(now=60.0) == [_lookup(T + 3_600_000)]


HOUR = 60 * MIN


def _ordered(ceiling_s: float = 60.0) -> LookupGate:
    gate = LookupGate(
        1, lateness_ms=0, max_wait_s=10.0, ceiling_s=ceiling_s, ordered=("em:", "ext:")
    )
    gate.observe(0, {0: T + 100 * HOUR}, now=0.0)  # engagements read far past every lookup
    return gate


def _of(ts: int, conversion: str, key: str = "em:e1") -> dict:
    return {"ts": ts, "k": key, "ck": conversion, "r": 0}


def test_lookups_of_a_linkable_key_wait_for_the_decisions_before_them():
    """A replay parks hours of conversions at once: a later order must not be answered before
    an earlier one with the same email has been decided and sent the link it may make."""
    gate = _ordered()
    first, second, third = _of(T, "o1"), _of(T + HOUR, "o2"), _of(T + 4 * HOUR, "o3")
    ip = _of(T + 4 * HOUR, "o3", key="ip:10.0.0.1")
    for lookup in (third, ip, second, first):
        gate.park(0, lookup, now=0.0)
    assert gate.due(now=0.1) == [ip, first]  # addresses are never linked: no order
    assert gate.waiting() == (0, 2)  # past the watermark, waiting for their turn
    gate.decided("em:e1", "o1")
    assert gate.due(now=0.3) == [second]
    gate.decided("em:e2", "o2")  # another key's decision changes nothing
    assert gate.due(now=0.5) == []
    gate.decided("em:e1", "o2")
    assert gate.due(now=0.7) == [third]
    assert len(gate) == 0


def test_only_conversions_sharing_a_key_wait_for_each_other():
    gate = _ordered()
    gate.park(0, _of(T + HOUR, "o1"), now=0.0)
    gate.park(0, _of(T + 2 * HOUR, "o2", key="ext:a:c9"), now=0.0)
    released = sorted(gate.due(now=0.1), key=lambda lookup: lookup["ck"])
    assert released == [_of(T + HOUR, "o1"), _of(T + 2 * HOUR, "o2", key="ext:a:c9")]


def test_order_still_waits_for_the_watermark():
    gate = LookupGate(1, lateness_ms=0, max_wait_s=10.0, ordered=("em:",))
    gate.observe(0, {0: T}, now=0.0)
    gate.park(0, _of(T + HOUR, "o2"), now=0.0)
    assert gate.due(now=0.1) == []
    assert gate.waiting() == (1, 0)
    gate.park(0, _of(T, "o1"), now=0.2)  # read late, but older: it goes first
    assert gate.due(now=0.3) == [_of(T, "o1")]
    gate.decided("em:e1", "o1")
    assert gate.due(now=0.5) == []  # its own watermark is not there yet
    gate.observe(0, {0: T + HOUR}, now=0.6)
    assert gate.due(now=0.7) == [_of(T + HOUR, "o2")]


def test_a_new_round_of_the_same_conversion_does_not_wait_for_its_old_one():
    """A CAPI copy with more identifiers runs the conversion's round again: the first round's
    answer is ignored and will never be decided."""
    gate = _ordered()
    gate.park(0, _of(T, "o1"), now=0.0)
    gate.park(0, _of(T + HOUR, "o2"), now=0.0)
    assert gate.due(now=0.1) == [_of(T, "o1")]
    gate.park(0, _of(T, "o1"), now=0.2)
    assert gate.due(now=0.3) == [_of(T, "o1")]
    gate.decided("em:e1", "o1")
    assert gate.due(now=0.5) == [_of(T + HOUR, "o2")]


def test_a_decision_that_never_comes_stops_holding_the_key_after_the_ceiling():
    """A round cut by a rebalance, or a conversion whose worker died: the key goes on."""
    gate = _ordered(ceiling_s=30.0)
    gate.park(0, _of(T, "o1"), now=0.0)
    assert gate.due(now=0.1) == [_of(T, "o1")]
    gate.park(0, _of(T + HOUR, "o2"), now=20.0)
    assert gate.due(now=30.0) == []
    assert gate.turns_expired == 0
    assert gate.due(now=30.1) == [_of(T + HOUR, "o2")]
    assert gate.turns_expired == 1  # counted: convstream_key_turns_expired_total


def test_the_stalled_rule_keeps_the_order():
    """End of a replay: the watermark stops short of the last conversions; they still go out
    one decision after the other."""
    gate = LookupGate(1, lateness_ms=0, max_wait_s=10.0, ceiling_s=600.0, ordered=("em:",))
    gate.observe(0, {0: T}, now=0.0)
    gate.park(0, _of(T + HOUR, "o1"), now=0.0)
    gate.park(0, _of(T + 3 * HOUR, "o2"), now=0.0)
    assert gate.due(now=10.0) == [_of(T + HOUR, "o1")]
    gate.decided("em:e1", "o1")
    assert gate.due(now=11.0) == [_of(T + 3 * HOUR, "o2")]


def test_a_hot_key_does_not_queue_without_bound():
    """A placeholder email that many orders share, live: each waiting for the decision before
    it would queue them up without bound. Beyond ``hot_key`` waiting, the oldest go out."""
    gate = LookupGate(1, lateness_ms=0, max_wait_s=10.0, ordered=("em:",), hot_key=3)
    gate.observe(0, {0: T + 100 * HOUR}, now=0.0)
    orders = [_of(T + i * MIN, f"o{i}", key="em:placeholder") for i in range(5)]
    for order in orders:
        gate.park(0, order, now=0.0)
    # o0 has nothing before it; o1 and o2 go because 4 and then 3 wait; two wait for o2.
    assert gate.due(now=0.1) == orders[:3]
    assert gate.waiting() == (0, 2)
    gate.decided("em:placeholder", "o2")  # o0 and o1 still open: order holds
    assert gate.due(now=0.3) == []


def test_a_lookup_the_ceiling_answers_still_holds_the_key_for_its_decision():
    """No engagement input for a minute (a users topic nobody reads): the ceiling answers the
    first order before any watermark. Its decision may still link the email, so a later order
    of the same email read once the watermark is back waits for it, as if answered in turn."""
    gate = LookupGate(1, lateness_ms=0, max_wait_s=10.0, ceiling_s=60.0, ordered=("em:",))
    gate.park(0, _of(T, "o1"), now=0.0)
    assert gate.due(now=59.9) == []
    assert gate.due(now=60.0) == [_of(T, "o1")]
    gate.park(0, _of(T + HOUR, "o2"), now=61.0)
    gate.observe(0, {0: T + 2 * HOUR}, now=62.0)
    assert gate.due(now=62.0) == []
    assert gate.waiting() == (0, 1)
    gate.decided("em:e1", "o1")
    assert gate.due(now=63.0) == [_of(T + HOUR, "o2")]
    # A decision that never comes holds the key no longer than the ceiling, as in turn.
    gate.park(0, _of(T + 90 * MIN, "o3"), now=64.0)
    assert gate.due(now=64.0) == []
    assert gate.due(now=123.0) == [_of(T + 90 * MIN, "o3")]
    assert gate.turns_expired == 1
