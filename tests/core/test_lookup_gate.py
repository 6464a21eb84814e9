"""When the identifiers agent may answer a parked lookup (convstream/core/lookup_gate.py)."""

from __future__ import annotations

from convstream.core.lookup_gate import LookupGate
from convstream.core.messages import Lookup

T = 1_767_571_200_000
MIN = 60_000
HOUR = 60 * MIN
DAY_S = 24 * 3600.0


def _gate(sources: int = 2, idle_valid_s: float = 5.0) -> LookupGate:
    return LookupGate(sources, idle_valid_s=idle_valid_s)


def _lookup(ts: int, key: str = "ip:10.0.0.1") -> Lookup:
    return Lookup(key, "a:Purchase:1", 0, ts)


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
    gate.observe(1, {0: T - HOUR, 1: T - HOUR}, now=0.1)
    assert gate.due(now=0.2) == []
    assert gate.watermark(0) == T + MIN and gate.watermark(1) == T - HOUR
    gate.observe(1, {0: T, 1: T}, now=0.3)
    assert gate.due(now=0.4) == [_lookup(T)]


def test_a_backlog_is_waited_out_however_long_it_takes():
    """A loaded machine reads the engagements slowly: a day of wall time with the watermark
    crawling towards T, and the lookup is still not answered a millisecond short of it. Fails if
    any wall-clock rule (a bounded wait, a stalled watermark, a ceiling) is put back."""
    gate = _gate()
    gate.park(0, _lookup(T), now=0.0)
    for step in range(1, 25):
        now = step * 3600.0
        mark = T - (25 - step) * MIN
        gate.observe(0, {0: mark, 1: T + HOUR}, now=now)
        assert gate.due(now=now) == []
        assert gate.due(now=now + 1800.0) == []  # half an hour without the watermark moving
    gate.observe(0, {0: T - 1}, now=DAY_S)
    assert gate.due(now=DAY_S + 3600.0) == []
    gate.observe(0, {0: T}, now=DAY_S + 3601.0)
    assert gate.due(now=DAY_S + 3601.0) == [_lookup(T)]


def test_a_watermark_that_stopped_moving_is_not_idle_input():
    """A users partition whose worker is starved (or gone) sends nothing: no report that it is
    idle, so nothing is answered, however long the wait."""
    gate = _gate()
    gate.observe(0, {0: T - HOUR, 1: T - HOUR}, now=0.0)
    gate.park(0, _lookup(T), now=0.0)
    assert gate.due(now=DAY_S) == []


def test_a_lookup_past_the_watermark_goes_once_every_users_partition_is_idle():
    """The end of a replay: nothing moves the watermark past the last conversions any more, and
    the users agents report their partitions read to the end, with nothing new."""
    gate = _gate()
    gate.observe(0, {0: T - HOUR, 1: T - HOUR}, now=0.0)
    gate.park(0, _lookup(T), now=0.0)
    gate.observe(0, {}, now=1.0, idle={0: True})
    assert gate.due(now=1.0) == []  # partition 1 still has records to read, or may have
    gate.observe(0, {}, now=2.0, idle={1: True})
    assert gate.due(now=2.0) == [_lookup(T)]


def test_an_idle_partition_does_not_hold_back_the_others_watermark():
    gate = _gate()
    gate.park(0, _lookup(T), now=0.0)
    gate.park(0, _lookup(T + HOUR), now=0.0)
    gate.observe(0, {0: T + MIN}, now=1.0, idle={1: True})  # 1 never had an engagement
    assert gate.due(now=1.0) == [_lookup(T)]
    assert gate.watermark(0) is None  # idleness is no event time: identifier expiry waits


def test_idleness_is_believed_only_while_it_is_repeated():
    """A worker that reported its partition idle and went away no longer vouches for it: its
    partition may be filling up, unread, until its next owner reports."""
    gate = _gate(idle_valid_s=5.0)
    gate.observe(0, {0: T - HOUR, 1: T + HOUR}, now=0.0, idle={0: True})
    gate.park(0, _lookup(T), now=6.0)
    assert gate.due(now=6.0) == []
    gate.observe(0, {}, now=7.0, idle={0: True})
    assert gate.due(now=7.0) == [_lookup(T)]


def test_a_partition_no_longer_idle_holds_back_again():
    gate = _gate()
    gate.observe(0, {0: T - HOUR, 1: T + HOUR}, now=0.0, idle={0: True})
    gate.observe(0, {}, now=1.0, idle={0: False})  # new engagements on partition 0
    gate.park(0, _lookup(T), now=1.0)
    assert gate.due(now=1.0) == []
    gate.observe(0, {0: T}, now=2.0, idle={0: False})
    assert gate.due(now=2.0) == [_lookup(T)]


def test_released_in_event_time_order():
    gate = _gate(sources=1)
    lookups = [_lookup(T + i * MIN, key=f"ip:10.0.0.{i}") for i in (3, 1, 2)]
    for lookup in lookups:
        gate.park(0, lookup, now=0.0)
    gate.observe(0, {0: T + 5 * MIN}, now=1.0)
    assert [r.ts for r in gate.due(now=1.0)] == [T + MIN, T + 2 * MIN, T + 3 * MIN]


def _ordered(turn_timeout_s: float = 600.0) -> LookupGate:
    gate = LookupGate(1, turn_timeout_s=turn_timeout_s, ordered=("em:", "ext:"))
    gate.observe(0, {0: T + 100 * HOUR}, now=0.0)  # engagements read far past every lookup
    return gate


def _of(ts: int, conversion: str, key: str = "em:e1") -> Lookup:
    return Lookup(key, conversion, 0, ts)


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
    released = sorted(gate.due(now=0.1), key=lambda lookup: lookup.conversion_key)
    assert released == [_of(T + HOUR, "o1"), _of(T + 2 * HOUR, "o2", key="ext:a:c9")]


def test_order_still_waits_for_the_watermark():
    gate = LookupGate(1, ordered=("em:",))
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


def test_a_decision_that_never_comes_stops_holding_the_key_after_the_turn_timeout():
    """A round cut by a rebalance, or a conversion whose worker died, and no redrive: the key
    goes on after ``turn_timeout_s``."""
    gate = _ordered(turn_timeout_s=600.0)
    gate.park(0, _of(T, "o1"), now=0.0)
    assert gate.due(now=0.1) == [_of(T, "o1")]
    gate.park(0, _of(T + HOUR, "o2"), now=20.0)
    assert gate.due(now=600.0) == []
    assert gate.turns_expired == 0
    assert gate.due(now=600.2) == [_of(T + HOUR, "o2")]
    assert gate.turns_expired == 1  # counted: convstream_key_turns_expired_total


def test_a_slow_decision_still_holds_its_key():
    """On a loaded machine a decision can take minutes after its answer (probes queued behind
    a backlog): the later lookup of the key waits for it, not for a wall-clock ceiling."""
    gate = _ordered()
    gate.park(0, _of(T, "o1"), now=0.0)
    gate.park(0, _of(T + HOUR, "o2"), now=0.0)
    assert gate.due(now=0.1) == [_of(T, "o1")]
    assert gate.due(now=300.0) == []
    gate.decided("em:e1", "o1")
    assert gate.due(now=300.1) == [_of(T + HOUR, "o2")]
    assert gate.turns_expired == 0


def test_idle_input_keeps_the_order():
    """End of a replay: the watermark stops short of the last conversions; once the input is
    idle they still go out one decision after the other."""
    gate = LookupGate(1, ordered=("em:",))
    gate.observe(0, {0: T}, now=0.0)
    gate.park(0, _of(T + HOUR, "o1"), now=0.0)
    gate.park(0, _of(T + 3 * HOUR, "o2"), now=0.0)
    assert gate.due(now=10.0) == []
    gate.observe(0, {}, now=10.0, idle={0: True})
    assert gate.due(now=10.0) == [_of(T + HOUR, "o1")]
    gate.decided("em:e1", "o1")
    assert gate.due(now=11.0) == [_of(T + 3 * HOUR, "o2")]


def test_a_hot_key_does_not_queue_without_bound():
    """A placeholder email that many orders share, live: each waiting for the decision before
    it would queue them up without bound. Beyond ``hot_key`` waiting, the oldest go out."""
    gate = LookupGate(1, ordered=("em:",), hot_key=3)
    gate.observe(0, {0: T + 100 * HOUR}, now=0.0)
    orders = [_of(T + i * MIN, f"o{i}", key="em:placeholder") for i in range(5)]
    for order in orders:
        gate.park(0, order, now=0.0)
    # o0 has nothing before it; o1 and o2 go because 4 and then 3 wait; two wait for o2.
    assert gate.due(now=0.1) == orders[:3]
    assert gate.waiting() == (0, 2)
    assert gate.hot_key_skips == 2  # counted: these two did not wait for the decisions before
    gate.decided("em:placeholder", "o2")  # o0 and o1 still open: order holds
    assert gate.due(now=0.3) == []


def test_a_lookup_parked_again_after_a_restart_is_held_once():
    """Restored from the parked table and read again from cs-ident (its offset was not
    committed): one answer, not two."""
    gate = _gate(sources=1)
    gate.park(0, _lookup(T), now=0.0)
    gate.park(0, _lookup(T), now=0.1)
    assert len(gate) == 1
    gate.observe(0, {0: T}, now=0.2)
    assert gate.due(now=0.3) == [_lookup(T)]
    # Once answered, the same request read again is a new one (its answer is a duplicate the
    # conversion ignores).
    gate.park(0, _lookup(T), now=0.4)
    assert gate.due(now=0.5) == [_lookup(T)]


def test_a_partition_that_moved_away_takes_its_parked_lookups_along():
    gate = LookupGate(1, ordered=("em:",))
    gate.park(0, _lookup(T, "em:e1"), now=0.0)
    gate.park(1, _lookup(T, "ip:10.0.0.2"), now=0.0)
    gate.park(1, Lookup("em:e2", "a:Purchase:2", 0, T), now=0.0)
    gate.observe(1, {0: T}, now=0.1)
    assert gate.forget_partition(1) == 2
    assert len(gate) == 1 and gate.waiting() == (1, 0)
    assert gate.due(now=0.2) == []  # partition 1's marks went with it
    gate.observe(0, {0: T}, now=0.3)
    assert gate.due(now=0.4) == [_lookup(T, "em:e1")]
    # Back on this worker, its lookups are parked again (from the table) as new.
    gate.park(1, _lookup(T, "ip:10.0.0.2"), now=0.5)
    gate.observe(1, {0: T}, now=0.6)
    assert gate.due(now=0.7) == [_lookup(T, "ip:10.0.0.2")]


def test_a_later_round_of_the_conversion_makes_its_earlier_lookup_of_the_key_moot():
    """A round started again after a restart: the old round's lookup (restored, or read again)
    is never answered, whichever of the two is parked first."""
    gate = LookupGate(1, ordered=("em:",))
    old, new = Lookup("em:e1", "o1", 0, T), Lookup("em:e1", "o1", 1, T)
    gate.park(0, old, now=0.0)
    assert gate.take_moot() == []
    gate.park(0, new, now=0.1)
    assert gate.take_moot() == [old]
    gate.park(0, old, now=0.2)
    assert gate.take_moot() == [old]
    gate.park(0, Lookup("ip:1", "o1", 0, T), now=0.3)
    assert gate.take_moot() == []  # another key: not moot
    gate.observe(0, {0: T}, now=0.4)
    assert sorted(r.key for r in gate.due(now=0.5)) == ["em:e1", "ip:1"]
    assert len(gate) == 0
    # The key's turn is open for the new round only: its decision lets the next one go.
    gate.park(0, Lookup("em:e1", "o2", 0, T + 1), now=0.6)
    gate.observe(0, {0: T + 1}, now=0.7)
    assert gate.due(now=0.8) == []
    gate.decided("em:e1", "o1")
    assert [r.conversion_key for r in gate.due(now=0.9)] == ["o2"]


def test_a_decision_makes_a_lookup_of_its_conversion_still_parked_moot():
    """A worker answered o1's lookup and died before its cs-ident offset was committed; the
    next one parks the lookup again (read again, or the same round started again from a state
    the kill rolled back), while o1 decides with the answer it read. Answered after that
    decision, the lookup would open a turn nothing closes: o2 would wait the turn timeout."""
    gate = LookupGate(1, ordered=("em:",), turn_timeout_s=600.0)
    again = Lookup("em:e1", "o1", 0, T)
    gate.park(0, again, now=0.0)
    gate.park(0, Lookup("em:e1", "o2", 0, T + 1), now=0.0)
    gate.decided("em:e1", "o1")
    assert gate.take_moot() == [again]
    gate.observe(0, {0: T + 1}, now=0.1)
    assert [r.conversion_key for r in gate.due(now=0.2)] == ["o2"]
    assert len(gate) == 0
    # Another conversion's decision leaves a parked lookup alone.
    gate.park(0, Lookup("em:e1", "o3", 0, T + 2), now=0.3)
    gate.decided("em:e1", "o4")
    assert gate.take_moot() == [] and len(gate) == 1
