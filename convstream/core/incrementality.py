"""The probability that an attributed conversion was caused by the ads, learned online from the
holdout contrast alone (never from a truth file).

**What is estimated.** A user entered in campaign c (at their first impression of it, a ghost
for the holdout; :mod:`convstream.core.lift`) converts at c's advertiser at some rate that
depends on the moment: how long since their last exposure to c, how many exposures they had,
how active they are. Write lambda_E(x) for that rate had they been exposed and lambda_H(x) had
they been held out, x the features at that moment. An exposed user's conversion at features x
was caused by the ads with probability (lambda_E(x) - lambda_H(x)) / lambda_E(x) =
1 - lambda_H(x) / lambda_E(x): the share of the exposed conversion rate the holdout removes.

**How, from converters only (a case-only design).** Assignment is random per user and
campaign and a ghost impression is logged when the ad would have been shown, so the time users
spend at any x (the person-time) is split between the arms in the campaign's ratio n_H / n_E
(its held-out and exposed users). A conversion at x then comes from the holdout with odds
(lambda_H(x) n_H) / (lambda_E(x) n_E): the non-converting time of every user is what makes the
arms comparable, and it enters through that ratio, which counts every user who entered,
converted or not. A logistic regression on converters' units (y: held out) with the known term
log(n_H / n_E) of the unit's campaign in its logit (an offset) therefore learns
log(lambda_H(x) / lambda_E(x)) as the rest of it, b(x), and

    incremental_probability(x) = max(0, 1 - exp(b(x))).

That is the two-model (T-learner) ratio p_H / p_E without fitting either rate: their common
baseline (how often this kind of user converts anyway) cancels, which is the part a 10 %
holdout could never estimate well. Every conversion of a matched user trains one example per
unit of the user's that it falls in (every campaign of its advertiser entered less than a
window before), in either arm.

**Features, all the same in both arms.** Campaign, recency of the last exposure to the campaign
(impression or ghost), campaign x recency (how soon a campaign's lift fades differs), frequency
of exposure to it in the unit, and the user's activity (exposures to any campaign in the last 7
days), one-hot in bins. Not the engagement type: a
held-out user never clicks (the ghost was not shown), so "clicked" exists in one arm only and no
randomized contrast says what it changes; a click follows its impression within seconds, so
its recency is the impression's.

**Bounded, event time, deterministic.** Per user one unit per campaign entered (its newest
``max_times`` exposure times and a count), dropped by :meth:`Incrementality.expire` once the
window has closed, and 7 days of exposure times for activity (at most ``max_recent``); per
campaign two counters; the model has one weight per feature value. Times are event times;
the same events in the same order give the same figures.

>>> inc = Incrementality(Estimator(min_holdout=1))
>>> for i in range(40):
...     inc.exposure(f"u{i}", "a", "c", 0, holdout=i % 4 == 0)
>>> for i in range(40):  # every held-out user converts once, every exposed user twice
...     for k in range(1 if i % 4 == 0 else 2):
...         _ = inc.learn(f"u{i}", "a", 1_000 + k)
>>> p, w = inc.score("u1", "a", 2_000, [{"campaign_id": "c", "credit": 1.0,
...                                      "label_weight": 0.8, "engagement_ts": 0}])
>>> 0.3 < p < 0.7, round(w / p, 3)
(True, 0.8)
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convstream.core.attribution import AttributionConfig
from convstream.core.logit import Logit
from convstream.core.units import DAY_MS, HOUR_MS

UserId = str
CampaignId = str
AdvertiserId = str
Features = dict[str, float]

#: Bin edges: recency of the last exposure (ms), frequency (exposures), activity (exposures
#: in the last 7 days, every campaign).
RECENCY_EDGES_MS = (HOUR_MS, 6 * HOUR_MS, DAY_MS, 3 * DAY_MS, 7 * DAY_MS)
FREQUENCY_EDGES = (2, 3, 5, 9)
ACTIVITY_EDGES = (5, 15, 40)
ACTIVITY_WINDOW_MS = 7 * DAY_MS


def bin_of(value: float, edges: tuple[float, ...]) -> int:
    """The index of the bin ``value`` falls in: edges are lower bounds of bins 1, 2, ...

    >>> [bin_of(v, (2, 5)) for v in (1, 2, 4, 5, 99)]
    [0, 1, 1, 2, 2]
    """
    return bisect.bisect_right(edges, value)


@dataclass(slots=True)
class Unit:
    """One user in one campaign, from their first exposure for a window: its arm and its
    exposures (the newest ``times``, sorted, and how many in all)."""

    campaign_id: CampaignId
    first_ts: int
    holdout: bool
    times: list[int] = field(default_factory=list)
    n: int = 0

    def seen(self, ts: int, max_times: int) -> None:
        bisect.insort(self.times, ts)
        if len(self.times) > max_times:
            del self.times[0]
        self.n += 1
        self.first_ts = min(self.first_ts, ts)


def features(unit: Unit, activity: int, ts: int) -> Features:
    """A unit's features at ``ts``, from its exposures at or before ``ts`` only.

    >>> u = Unit("c", 0, False, [0, 2 * HOUR_MS, 9 * DAY_MS], 3)
    >>> sorted(features(u, 7, 3 * HOUR_MS))
    ['activity=1', 'campaign=c', 'campaign=c&recency=1', 'frequency=1', 'recency=1']
    """
    k = bisect.bisect_right(unit.times, ts)
    last = unit.times[k - 1] if k else unit.first_ts
    n = unit.n - (len(unit.times) - k)
    recency = bin_of(max(0, ts - last), RECENCY_EDGES_MS)
    return {
        f"campaign={unit.campaign_id}": 1.0,
        f"campaign={unit.campaign_id}&recency={recency}": 1.0,
        f"recency={recency}": 1.0,
        f"frequency={bin_of(max(1, n), FREQUENCY_EDGES)}": 1.0,
        f"activity={bin_of(activity, ACTIVITY_EDGES)}": 1.0,
    }


class Estimator:
    """log(lambda_H / lambda_E) as the logit of a weighted logistic regression on converters'
    arms (:class:`~convstream.core.logit.Logit`, exact on its sufficient statistics); the
    probability is None until ``min_holdout`` held-out conversions were learned.

    ``l2`` pulls each feature's weight towards 0, that is towards the pooled ratio: a campaign
    with few held-out conversions gets the lift of all of them.
    """

    def __init__(self, *, l2: float = 10.0, min_holdout: int = 20, refit_every: int = 20) -> None:
        self.model = Logit(l2=l2, refit_every=refit_every)
        self.min_holdout = min_holdout
        self.holdout_learned = 0
        self.learned = 0

    def learn(self, x: Features, holdout: bool) -> None:
        self.model.add(x, positive=float(holdout), negative=float(not holdout))
        self.learned += 1
        self.holdout_learned += holdout

    def ready(self) -> bool:
        return self.holdout_learned >= self.min_holdout

    def probability(self, x: Features) -> float | None:
        """1 - lambda_H / lambda_E at ``x``, at least 0; None before ``min_holdout``."""
        if not self.ready():
            return None
        return max(0.0, 1.0 - math.exp(min(50.0, self.model.logit(x))))


class Incrementality:
    """Exposures and converters in, each attributed label's incremental probability out.

    Drivers: the offline engine (labels as they are emitted) and
    :mod:`convstream.core.incrementality_replay` (a replay and its labels, in event time).
    """

    def __init__(
        self,
        estimator: Estimator | None = None,
        config: AttributionConfig | None = None,
        *,
        max_times: int = 32,
        max_recent: int = 512,
    ) -> None:
        self.estimator = estimator or Estimator()
        self.config = config or AttributionConfig()
        self.max_times = max_times
        self.max_recent = max_recent
        self.units: dict[UserId, dict[AdvertiserId, list[Unit]]] = {}
        self.recent: dict[UserId, list[int]] = {}
        #: Users entered per campaign: [exposed, held out] (re-entries after a window count).
        self.arms: dict[CampaignId, list[int]] = {}
        self.estimator.model.offset = self.log_arm_ratio
        self._ends: list[tuple[int, UserId, AdvertiserId, CampaignId, int]] = []

    def window_ms(self, advertiser_id: AdvertiserId) -> int:
        s = self.config.for_advertiser(advertiser_id)
        return max(s.click_window_ms, s.view_window_ms)

    def exposure(
        self,
        user_id: UserId,
        advertiser_id: AdvertiserId,
        campaign_id: CampaignId,
        ts: int,
        *,
        holdout: bool,
    ) -> None:
        """An impression (``holdout=False``) or a ghost impression (``holdout=True``)."""
        window = self.window_ms(advertiser_id)
        units = self.units.setdefault(user_id, {}).setdefault(advertiser_id, [])
        unit = next(
            (u for u in units if u.campaign_id == campaign_id and ts <= u.first_ts + window),
            None,
        )
        if unit is None:
            unit = Unit(campaign_id, ts, holdout)
            units.append(unit)
            self.arms.setdefault(campaign_id, [0, 0])[holdout] += 1
            heapq.heappush(self._ends, (ts + window, user_id, advertiser_id, campaign_id, ts))
        unit.seen(ts, self.max_times)
        recent = self.recent.setdefault(user_id, [])
        bisect.insort(recent, ts)
        horizon = recent[-1] - ACTIVITY_WINDOW_MS
        cut = bisect.bisect_left(recent, horizon)
        cut = max(cut, len(recent) - self.max_recent)
        if cut > 0:
            del recent[:cut]

    def _activity(self, user_id: UserId, ts: int) -> int:
        recent = self.recent.get(user_id, [])
        lo = bisect.bisect_left(recent, ts - ACTIVITY_WINDOW_MS)
        return bisect.bisect_right(recent, ts) - lo

    def units_at(self, user_id: UserId, advertiser_id: AdvertiserId, ts: int) -> list[Unit]:
        """The user's units of the advertiser's campaigns whose window holds ``ts``."""
        window = self.window_ms(advertiser_id)
        units = self.units.get(user_id, {}).get(advertiser_id, ())
        return [u for u in units if u.first_ts <= ts <= u.first_ts + window]

    def log_arm_ratio(self, cell: Iterable[str]) -> float:
        """log(n_H / n_E) of the campaign of a cell of features, its users so far: the odds
        that a conversion comes from the holdout when the ads change nothing (an empty arm
        counts half a user, so that the logarithm is finite).

        >>> inc = Incrementality()
        >>> inc.arms["c"] = [90, 10]
        >>> round(inc.log_arm_ratio(["campaign=c", "recency=0"]), 4)
        -2.1972
        """
        for name in cell:
            if name.startswith("campaign=") and "&" not in name:
                exposed, held = self.arms.get(name[len("campaign=") :], (0, 0))
                return math.log((held or 0.5) / (exposed or 0.5))
        return 0.0

    def learn(self, user_id: UserId, advertiser_id: AdvertiserId, ts: int) -> int:
        """A conversion of ``user_id``: one example per unit it falls in; returns how many."""
        activity = self._activity(user_id, ts)
        learned = 0
        for unit in self.units_at(user_id, advertiser_id, ts):
            self.estimator.learn(features(unit, activity, ts), unit.holdout)
            learned += 1
        return learned

    def unit_features(
        self, user_id: UserId, advertiser_id: AdvertiserId, ts: int, credit: Mapping[str, Any]
    ) -> Features:
        """The features of the credited campaign's unit at ``ts`` (an exposed unit); without
        one (its impression was not read), a unit of the credited engagement alone."""
        campaign = credit["campaign_id"]
        activity = self._activity(user_id, ts)
        for unit in self.units_at(user_id, advertiser_id, ts):
            if unit.campaign_id == campaign and not unit.holdout:
                return features(unit, activity, ts)
        ets = int(credit.get("engagement_ts", ts))
        return features(Unit(campaign, ets, False, [ets], 1), activity, ts)

    def score(
        self,
        user_id: UserId | None,
        advertiser_id: AdvertiserId,
        ts: int,
        credits: Iterable[Mapping[str, Any]],
    ) -> tuple[float | None, float | None]:
        """(incremental_probability, incremental_weight) of a label: the credit-weighted mean
        of the credited campaigns' probabilities, and label_weight times it. (None, 0.0)
        without a credit (nothing attributed, nothing incremental to weigh); (None, None)
        while the estimator is not ready (docs/contract.md)."""
        credits = list(credits)
        total = math.fsum(c["credit"] for c in credits)
        if user_id is None or not credits or total <= 0:
            return None, 0.0
        if not self.estimator.ready():
            return None, None
        probs = []
        for c in credits:
            p = self.estimator.probability(self.unit_features(user_id, advertiser_id, ts, c))
            probs.append(0.0 if p is None else p)
        prob = math.fsum(c["credit"] * p for c, p in zip(credits, probs, strict=True)) / total
        weight = math.fsum(c["label_weight"] for c in credits) * prob
        return prob, weight

    def annotate(self, label: Mapping[str, Any]) -> dict[str, Any]:
        """``label`` with ``incremental_probability`` and ``incremental_weight``."""
        prob, weight = self.score(
            label.get("user_id"), label["advertiser_id"], int(label["ts"]), label["credits"]
        )
        return {**label, "incremental_probability": prob, "incremental_weight": weight}

    def expire(self, now_ts: int) -> int:
        """Forget the units whose window closed before ``now_ts``; returns how many."""
        dropped = 0
        while self._ends and self._ends[0][0] < now_ts:
            _, user_id, advertiser_id, campaign_id, first = heapq.heappop(self._ends)
            by_adv = self.units.get(user_id, {})
            units = by_adv.get(advertiser_id, [])
            kept = [u for u in units if not (u.campaign_id == campaign_id and u.first_ts <= first)]
            dropped += len(units) - len(kept)
            if kept:
                by_adv[advertiser_id] = kept
            else:
                by_adv.pop(advertiser_id, None)
            if not by_adv:
                self.units.pop(user_id, None)
                recent = self.recent.get(user_id)
                if recent is not None and (not recent or recent[-1] < now_ts - ACTIVITY_WINDOW_MS):
                    self.recent.pop(user_id, None)
        return dropped
