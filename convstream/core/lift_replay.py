"""Lift over a replay: its (ghost) impressions and the labels' converters, in event-time order.

Impressions are read with the worker's own parser, so ``holdout`` means what it means to the
worker. A conversion counts for the user its label names (the highest revision of its key; a
label without a user counts for nobody), or for the truth's converter (the oracle, which shows
what the estimator gives with perfect matching).

>>> T = 1_767_571_200_000
>>> lines = [{"topic": "impressions", "value": {"event_id": "g1", "ts": T, "user_id": "u1",
...           "advertiser_id": "a", "campaign_id": "c", "ad_id": "ad", "holdout": True}}]
>>> labels = [{"conversion_key": "a:Purchase:1", "advertiser_id": "a", "ts": T + 5,
...            "user_id": "u1", "revision": 0}]
>>> e = track(exposures(lines), conversions_from_labels(labels)).estimate("c")
>>> e.holdout_users, e.holdout_conversions
(1, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from convstream.core.attribution import AttributionConfig
from convstream.core.evaluation import latest_labels
from convstream.core.lift import LiftTracker
from convstream.core.records import Engagement, Invalid, parse_impression


@dataclass(frozen=True, slots=True)
class Exposure:
    """An impression, or a ghost impression (``holdout``), of a campaign to a user."""

    ts: int
    user_id: str
    advertiser_id: str
    campaign_id: str
    holdout: bool


@dataclass(frozen=True, slots=True)
class Converted:
    """A conversion at an advertiser, credited to the user who made it."""

    ts: int
    user_id: str
    advertiser_id: str
    weight: float = 1.0


def exposure_of(rec: Engagement) -> Exposure | None:
    """The exposure an engagement record is: an impression, shown or ghost; a click is not one
    (a ghost is never clicked, so clicks exist in one arm only), whichever driver reads it.

    >>> exposure_of(Engagement("view", "g1", 5, "u", "a", "c", "ad", None, None, None,
    ...                        holdout=True))
    Exposure(ts=5, user_id='u', advertiser_id='a', campaign_id='c', holdout=True)
    >>> exposure_of(Engagement("click", "k1", 5, "u", "a", "c", "ad", None, None, None)) is None
    True
    """
    if rec.kind != "view":
        return None
    return Exposure(rec.ts, rec.user_id, rec.advertiser_id, rec.campaign_id, rec.holdout)


def exposures(replay_lines: Iterable[Mapping[str, Any]]) -> Iterator[Exposure]:
    """The replay's impressions, ghosts included; invalid ones are skipped, as dead-lettered."""
    for line in replay_lines:
        if line["topic"] != "impressions":
            continue
        value = line["value"]
        raw = value if isinstance(value, str | bytes) else orjson.dumps(value)
        try:
            rec = parse_impression(raw)
        except Invalid:
            continue
        exposure = exposure_of(rec)
        if exposure is not None:
            yield exposure


def conversions_from_labels(labels: Iterable[Mapping[str, Any]]) -> list[Converted]:
    """One conversion per labelled key with a user (its highest revision)."""
    kept, _, _ = latest_labels(labels)
    return [
        Converted(int(label["ts"]), label["user_id"], label["advertiser_id"])
        for label in kept.values()
        if label.get("user_id") is not None
    ]


def conversions_from_truth(truth: Iterable[Mapping[str, Any]]) -> list[Converted]:
    """The truth's conversions of platform users: lift as perfect matching would see it.

    >>> conversions_from_truth([{"ts": 5, "user_id": None, "advertiser_id": "a"}])
    []
    """
    return [
        Converted(int(row["ts"]), row["user_id"], row["advertiser_id"])
        for row in truth
        if row.get("user_id") is not None
    ]


def track(
    seen: Iterable[Exposure],
    converted: Iterable[Converted],
    *,
    config: AttributionConfig | None = None,
) -> LiftTracker:
    """A tracker fed every exposure and conversion in event-time order (an exposure before a
    conversion of the same millisecond: the ad was shown before the user converted)."""
    tracker = LiftTracker(config)
    events: list[tuple[int, int, Exposure | Converted]] = [(e.ts, 0, e) for e in seen]
    events += [(c.ts, 1, c) for c in converted]
    events.sort(key=lambda item: (item[0], item[1]))
    for _, _, event in events:
        if isinstance(event, Exposure):
            tracker.exposure(
                event.user_id,
                event.advertiser_id,
                event.campaign_id,
                event.ts,
                holdout=event.holdout,
            )
        else:
            tracker.conversion(event.user_id, event.advertiser_id, event.ts, event.weight)
    return tracker
