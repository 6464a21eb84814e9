"""The conversion lifecycle's own rules: the event-time clock that admits copies."""

from __future__ import annotations

from convstream.core.lifecycle import Admitted, Lifecycle, Reject, key_for_partition
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.units import DAY_MS, MINUTE_MS

T = 1_767_571_200_000


def _copy(event_id: str, ts: int) -> dict:
    return {
        "conversion_key": f"a:Purchase:{event_id}",
        "event_id": event_id,
        "event_name": "Purchase",
        "advertiser_id": "a",
        "ts": ts,
        "sources": ["capi"],
        "user_data": {"click_id": f"k-{event_id}"},
    }


def _outcomes(life: Lifecycle, copies: list[dict], **kwargs) -> list[str]:
    out = []
    for copy in copies:
        first = life.conversion(copy, partition=0, **kwargs)[0]
        out.append(first.outcome if isinstance(first, Admitted) else first.reason)
    return out


def test_one_conversion_stamped_weeks_ahead_does_not_make_the_real_ones_too_old():
    """Issue 23: a conversion 20 days ahead (inside the 30-day future rule) on a partition
    made every real conversion after it "too_old", until a restart."""
    life = Lifecycle({}, RuleBaseline, partitions=1)
    real = [_copy(f"o{i}", T + i * MINUTE_MS) for i in range(48)]
    outcomes = _outcomes(life, real[:10] + [_copy("ahead", T + 20 * DAY_MS)] + real[10:])
    assert outcomes.count("new") == 49 and "too_old" not in outcomes
    assert life.clock(0).now() < T + DAY_MS


def test_far_future_and_far_past_copies_are_rejected_and_leave_the_clock_alone():
    life = Lifecycle({}, RuleBaseline, partitions=1)
    _outcomes(life, [_copy(f"o{i}", T + i * MINUTE_MS) for i in range(8)])
    before = life.clock(0).now()
    assert _outcomes(life, [_copy("x1", T + 40 * DAY_MS), _copy("x2", T - 8 * DAY_MS)]) == [
        "future_ts",
        "too_old",
    ]
    assert life.clock(0).now() == before
    # A copy stamped a day after the broker received it is from a skewed clock.
    assert _outcomes(life, [_copy("x3", T + DAY_MS + 10 * MINUTE_MS)], broker_ts=T) == ["future_ts"]
    assert isinstance(life.conversion(_copy("o1", T), partition=0)[0], Admitted)


def test_the_clock_resumes_from_its_checkpoint():
    checkpoints: dict[str, bytes] = {}
    life = Lifecycle({}, RuleBaseline, partitions=2, checkpoints=checkpoints)
    _outcomes(life, [_copy(f"o{i}", T + i * MINUTE_MS) for i in range(8)])
    checkpoints[key_for_partition(0, 2, "clock")] = life.clock(0).dumps()
    again = Lifecycle({}, RuleBaseline, partitions=2, checkpoints=checkpoints)
    assert again.clock(0).now() == life.clock(0).now()
    assert again.conversion(_copy("old", T - 8 * DAY_MS), partition=0) == [
        Reject("too_old", "8.0 days behind the clock")
    ]
