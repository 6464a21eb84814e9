"""A user's exposures to campaigns, kept in the user state for incrementality: one unit per
campaign entered (:mod:`convstream.core.incrementality`) and the recent exposure times.

The users agent and the offline engine write them with :func:`add_exposure`, as they write
engagements, and a probe answer carries the candidate's units of one advertiser as of the
conversion (:func:`units_answer`). The state keys are ``"x"``: ``{advertiser_id: [[campaign_id,
first_ts, holdout, [newest exposure times], exposures], ...]}`` and ``"r"``: the user's exposure
times (every campaign), sorted, for the 7 days of activity and a grace of 7 more: the users agent
answers a probe when it may have read days past the conversion (a backlog), and the answer must
be the one it would have given at the time; ``"xe"`` is when units were last expired. Ghost
impressions are exposures of the holdout arm.

>>> state = {}
>>> add_exposure(state, "a", "c", 1_000, holdout=False, window_ms=10_000)
True
>>> add_exposure(state, "a", "c", 3_000, holdout=False, window_ms=10_000)
False
>>> units_answer(state, "a", 2_000, window_ms=10_000)
{'units': [['c', False, 1000, 1000, 1]], 'activity': 1}
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from convstream.core.units import DAY_MS

UserState = dict[str, Any]
#: [campaign_id, first_ts, holdout, times, n]: the stored unit.
UnitRow = list[Any]
#: [campaign_id, holdout, first_ts, last_ts, n] as of a conversion: what a probe answer carries.
UnitAnswer = list[Any]

ACTIVITY_WINDOW_MS = 7 * DAY_MS
MAX_TIMES = 32
MAX_RECENT = 512
#: A unit is kept this long after its window closed: a conversion older than that behind the
#: user's newest exposure would be too old to admit anyway (the 7-day rule).
GRACE_MS = 7 * DAY_MS


def add_exposure(
    state: UserState,
    advertiser_id: str,
    campaign_id: str,
    ts: int,
    *,
    holdout: bool,
    window_ms: int,
    max_times: int = MAX_TIMES,
    max_recent: int = MAX_RECENT,
) -> bool:
    """An impression (or a ghost: ``holdout``) into ``state``; True when it entered the user in
    the campaign (a new unit: the campaign's arm gains a user)."""
    units = state.setdefault("x", {}).setdefault(advertiser_id, [])
    row = next((u for u in units if u[0] == campaign_id and ts <= u[1] + window_ms), None)
    entered = row is None
    if row is None:
        row = [campaign_id, ts, bool(holdout), [], 0]
        units.append(row)
    times = row[3]
    bisect.insort(times, ts)
    if len(times) > max_times:
        del times[0]
    row[4] += 1
    row[1] = min(row[1], ts)
    recent = state.setdefault("r", [])
    bisect.insort(recent, ts)
    horizon = recent[-1] - ACTIVITY_WINDOW_MS - GRACE_MS
    cut = max(bisect.bisect_left(recent, horizon), len(recent) - max_recent)
    if cut > 0:
        del recent[:cut]
    return entered


#: Users entered in campaigns, by the event time they entered: {ts: {campaign: [exposed, held]}}.
Entered = dict[int, dict[str, list[int]]]


def note_exposures(
    state: UserState,
    exposures: Iterable[tuple[int, str, str, bool]],
    window_of: Callable[[str], int],
    entered: Entered | None = None,
) -> Entered:
    """A batch of one user's exposures ``(ts, advertiser_id, campaign_id, holdout)`` into
    ``state``, then the units closed long before the newest expired; returns ``entered`` (a new
    one when None) with the users this batch entered added: what the users agent and the
    offline engine both hand to the lifecycle (:meth:`~convstream.core.lifecycle.Lifecycle.
    entered`) for the arms' counts.

    >>> state = {}
    >>> note_exposures(state, [(5, "a", "c", True), (9, "a", "c", True)], lambda adv: 100)
    {5: {'c': [0, 1]}}
    """
    entered = {} if entered is None else entered
    newest = None
    for ts, advertiser_id, campaign_id, holdout in exposures:
        new = add_exposure(
            state,
            advertiser_id,
            campaign_id,
            ts,
            holdout=holdout,
            window_ms=window_of(advertiser_id),
        )
        if new:
            arm = entered.setdefault(ts, {}).setdefault(campaign_id, [0, 0])
            arm[bool(holdout)] += 1
        newest = ts if newest is None else max(newest, ts)
    # At most once a day of the user's event time: a scan of every unit per impression was most
    # of the cost (24 us of it per impression, measured on the default replay).
    if newest is not None and newest - state.get("xe", newest - DAY_MS) >= DAY_MS:
        expire_units(state, newest, window_of)
        state["xe"] = newest
    return entered


def expire_units(
    state: UserState, now_ts: int, window_of: Callable[[str], int], *, grace_ms: int = GRACE_MS
) -> int:
    """Drop the units whose window closed more than ``grace_ms`` before ``now_ts``; returns
    how many went.

    >>> state = {"x": {"a": [["c", 0, False, [0], 1]]}, "r": [0]}
    >>> expire_units(state, 30, lambda adv: 10, grace_ms=5), state
    (1, {'r': [0]})
    """
    by_adv = state.get("x")
    if not by_adv:
        return 0
    dropped = 0
    for adv in list(by_adv):
        end = now_ts - grace_ms - window_of(adv)
        kept = [u for u in by_adv[adv] if u[1] >= end]
        dropped += len(by_adv[adv]) - len(kept)
        if kept:
            by_adv[adv] = kept
        else:
            del by_adv[adv]
    if not by_adv:
        del state["x"]
    return dropped


def activity(state: UserState | None, ts: int) -> int:
    """The user's exposures (any campaign, ghosts included) in the 7 days up to ``ts``."""
    recent = (state or {}).get("r") or []
    lo = bisect.bisect_left(recent, ts - ACTIVITY_WINDOW_MS)
    return bisect.bisect_right(recent, ts) - lo


def unit_as_of(row: UnitRow, ts: int) -> UnitAnswer:
    """A stored unit as of ``ts``: its last exposure and its count up to then.

    >>> unit_as_of(["c", 0, True, [0, 5, 9], 7], 6)
    ['c', True, 0, 5, 6]
    """
    campaign, first, holdout, times, n = row
    k = bisect.bisect_right(times, ts)
    last = times[k - 1] if k else first
    return [campaign, holdout, first, last, n - (len(times) - k)]


def units_answer(
    state: UserState | None, advertiser_id: str, ts: int, *, window_ms: int
) -> dict[str, Any]:
    """The user's units of the advertiser's campaigns whose window holds ``ts``, as of ``ts``,
    and the user's activity then: the part of a probe answer incrementality reads."""
    rows = ((state or {}).get("x") or {}).get(advertiser_id) or []
    units = [unit_as_of(u, ts) for u in rows if u[1] <= ts <= u[1] + window_ms]
    return {"units": units, "activity": activity(state, ts)}
