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
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convstream.core import exposures
from convstream.core.attribution import AttributionConfig
from convstream.core.exposures import ACTIVITY_WINDOW_MS, UnitAnswer
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


def answer_features(unit: UnitAnswer, activity: int, ts: int) -> Features:
    """The features at ``ts`` of a unit as a probe answer carries it
    (:func:`convstream.core.exposures.unit_as_of`): the same as :func:`features` of the
    stored unit.

    >>> answer_features(["c", False, 0, 2 * HOUR_MS, 2], 7, 3 * HOUR_MS) == features(
    ...     Unit("c", 0, False, [0, 2 * HOUR_MS, 9 * DAY_MS], 3), 7, 3 * HOUR_MS)
    True
    """
    campaign, holdout, first, last, n = unit
    return features(Unit(campaign, first, holdout, [last], n), activity, ts)


def conversion_examples(answer: Mapping[str, Any] | None, ts: int) -> list[tuple[Features, bool]]:
    """What a conversion at ``ts`` of the user whose probe answer is ``answer`` teaches: one
    example (features, held out) per unit of the advertiser whose window holds it."""
    answer = answer or {}
    act = int(answer.get("activity") or 0)
    return [(answer_features(u, act, ts), bool(u[1])) for u in answer.get("units") or []]


def credit_features(
    answer: Mapping[str, Any] | None, ts: int, credit: Mapping[str, Any]
) -> Features:
    """The features of the credited campaign's exposed unit at ``ts``; without one (its
    impression was not read), of a unit of the credited engagement alone."""
    answer = answer or {}
    act = int(answer.get("activity") or 0)
    campaign = credit["campaign_id"]
    for unit in answer.get("units") or []:
        if unit[0] == campaign and not unit[1]:
            return answer_features(unit, act, ts)
    ets = int(credit.get("engagement_ts", ts))
    return features(Unit(campaign, ets, False, [ets], 1), act, ts)


def score_credits(
    probability: Callable[[Features], float | None] | None,
    answer: Mapping[str, Any] | None,
    ts: int,
    credits: Iterable[Mapping[str, Any]],
) -> tuple[float | None, float | None]:
    """(incremental_probability, incremental_weight) of a label: the credit-weighted mean of
    the credited campaigns' probabilities, and label_weight times it. (None, 0.0) without a
    credit (nothing attributed, nothing incremental to weigh); (None, None) while the estimator
    is not ready (``probability`` None; docs/contract.md).

    >>> credit = {"campaign_id": "c", "credit": 1.0, "label_weight": 0.5, "engagement_ts": 0}
    >>> score_credits(lambda x: 0.4, None, 10, [credit]), score_credits(None, None, 10, [credit])
    ((0.4, 0.2), (None, None))
    """
    credits = list(credits)
    total = math.fsum(c["credit"] for c in credits)
    if not credits or total <= 0:
        return None, 0.0
    if probability is None:
        return None, None
    probs = []
    for c in credits:
        p = probability(credit_features(answer, ts, c))
        probs.append(0.0 if p is None else p)
    prob = math.fsum(c["credit"] * p for c, p in zip(credits, probs, strict=True)) / total
    weight = math.fsum(c["label_weight"] for c in credits) * prob
    return prob, weight


def log_arm_ratio(arms: Mapping[CampaignId, list[int]], cell: Iterable[str]) -> float:
    """log(n_H / n_E) of the campaign of a cell of features (``arms``: campaign -> [exposed,
    held out] users): the odds that a conversion comes from the holdout when the ads change
    nothing (an empty arm counts half a user, so that the logarithm is finite).

    >>> round(log_arm_ratio({"c": [90, 10]}, ["campaign=c", "recency=0"]), 4)
    -2.1972
    """
    for name in cell:
        if name.startswith("campaign=") and "&" not in name:
            exposed, held = arms.get(name[len("campaign=") :], (0, 0))
            return math.log((held or 0.5) / (exposed or 0.5))
    return 0.0


class Incrementality:
    """Exposures and converters in, each attributed label's incremental probability out, for a
    whole replay in one place: the driver of :mod:`convstream.core.incrementality_replay` (the
    estimator and its truth-trained oracle). Users' units are kept by the rules of the user
    state (:mod:`convstream.core.exposures`); the worker and the offline engine keep them there
    and score in the lifecycle (:mod:`convstream.core.incrementality_replica`).
    """

    def __init__(
        self,
        estimator: Estimator | None = None,
        config: AttributionConfig | None = None,
        *,
        max_times: int = exposures.MAX_TIMES,
        max_recent: int = exposures.MAX_RECENT,
    ) -> None:
        self.estimator = estimator or Estimator()
        self.config = config or AttributionConfig()
        self.max_times = max_times
        self.max_recent = max_recent
        #: Per user, the exposure part of a user state (``"x"`` units, ``"r"`` recent times).
        self.users: dict[UserId, dict[str, Any]] = {}
        #: Users entered per campaign: [exposed, held out] (re-entries after a window count).
        self.arms: dict[CampaignId, list[int]] = {}
        self.estimator.model.offset = self.log_arm_ratio

    def window_ms(self, advertiser_id: AdvertiserId) -> int:
        return self.config.unit_window_ms(advertiser_id)

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
        entered = exposures.add_exposure(
            self.users.setdefault(user_id, {}),
            advertiser_id,
            campaign_id,
            ts,
            holdout=holdout,
            window_ms=self.window_ms(advertiser_id),
            max_times=self.max_times,
            max_recent=self.max_recent,
        )
        if entered:
            self.arms.setdefault(campaign_id, [0, 0])[holdout] += 1

    def answer(self, user_id: UserId, advertiser_id: AdvertiserId, ts: int) -> dict[str, Any]:
        """The units part of the user's probe answer for a conversion at ``ts``."""
        return exposures.units_answer(
            self.users.get(user_id), advertiser_id, ts, window_ms=self.window_ms(advertiser_id)
        )

    def log_arm_ratio(self, cell: Iterable[str]) -> float:
        return log_arm_ratio(self.arms, cell)

    def learn(self, user_id: UserId, advertiser_id: AdvertiserId, ts: int) -> int:
        """A conversion of ``user_id``: one example per unit it falls in; returns how many."""
        examples = conversion_examples(self.answer(user_id, advertiser_id, ts), ts)
        for x, holdout in examples:
            self.estimator.learn(x, holdout)
        return len(examples)

    def unit_features(
        self, user_id: UserId, advertiser_id: AdvertiserId, ts: int, credit: Mapping[str, Any]
    ) -> Features:
        return credit_features(self.answer(user_id, advertiser_id, ts), ts, credit)

    def score(
        self,
        user_id: UserId | None,
        advertiser_id: AdvertiserId,
        ts: int,
        credits: Iterable[Mapping[str, Any]],
    ) -> tuple[float | None, float | None]:
        """(incremental_probability, incremental_weight): :func:`score_credits` with the
        estimator as it is now."""
        if user_id is None:
            return None, 0.0
        ready = self.estimator.probability if self.estimator.ready() else None
        return score_credits(ready, self.answer(user_id, advertiser_id, ts), ts, credits)

    def annotate(self, label: Mapping[str, Any]) -> dict[str, Any]:
        """``label`` with ``incremental_probability`` and ``incremental_weight``."""
        prob, weight = self.score(
            label.get("user_id"), label["advertiser_id"], int(label["ts"]), label["credits"]
        )
        return {**label, "incremental_probability": prob, "incremental_weight": weight}

    def expire(self, now_ts: int) -> int:
        """Forget the units whose window closed before ``now_ts``, and users with nothing left
        in the last 7 days; returns how many units went."""
        dropped = 0
        for user_id in list(self.users):
            state = self.users[user_id]
            dropped += exposures.expire_units(state, now_ts, self.window_ms, grace_ms=0)
            recent = state.get("r") or []
            if "x" not in state and (not recent or recent[-1] < now_ts - ACTIVITY_WINDOW_MS):
                del self.users[user_id]
        return dropped
