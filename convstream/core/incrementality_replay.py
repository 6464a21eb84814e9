"""Incremental probabilities over a replay and its labels, in event time: the estimator of
:mod:`convstream.core.incrementality` (holdout contrast), or the same features and learner
trained on the truth's incremental probability instead (the oracle bound of the evaluation).

Each attributed label is scored before it is learned from, as the engine scores a label before
its conversion teaches the model.

>>> T = 1_767_571_200_000
>>> lines = [{"topic": "impressions", "value": {"event_id": "i1", "ts": T, "user_id": "u1",
...           "advertiser_id": "a", "campaign_id": "c", "ad_id": "ad"}}]
>>> labels = [{"conversion_key": "k", "advertiser_id": "a", "ts": T + 5, "user_id": "u1",
...            "revision": 0, "credits": [{"campaign_id": "c", "credit": 1.0,
...            "label_weight": 1.0, "engagement_ts": T}]}]
>>> replay_scores(lines, labels, truth={"k": 0.5})  # not ready before its first example
{'k': None}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from convstream.core.attribution import AttributionConfig
from convstream.core.evaluation import latest_labels
from convstream.core.incrementality import Estimator, Features, Incrementality
from convstream.core.lift_replay import Exposure, exposures
from convstream.core.logit import Logit


class TruthTrained:
    """The estimator's learner and features trained on the truth: P(incremental | x) of an
    attributed conversion, each label one example weighted p positive and 1 - p negative."""

    def __init__(self, *, l2: float = 10.0, refit_every: int = 20) -> None:
        self.model = Logit(l2=l2, refit_every=refit_every)

    def learn_truth(self, x: Features, p: float, weight: float = 1.0) -> None:
        self.model.add(x, positive=weight * p, negative=weight * (1.0 - p))

    def probability(self, x: Features) -> float | None:
        return self.model.predict(x) if self.model.examples else None


def replay_scores(
    replay_lines: Iterable[Mapping[str, Any]],
    labels: Iterable[Mapping[str, Any]],
    *,
    truth: Mapping[str, float] | None = None,
    config: AttributionConfig | None = None,
    estimator: Estimator | None = None,
) -> dict[str, float | None]:
    """Each attributed label's incremental probability (highest revision per key): from the
    holdout contrast, or with ``truth`` (conversion key -> true incremental probability) from
    the truth-trained oracle."""
    kept, _, _ = latest_labels(labels)
    inc = Incrementality(estimator, config=config)
    oracle = TruthTrained() if truth is not None else None
    events: list[tuple[int, int, Exposure | Mapping[str, Any]]] = [
        (e.ts, 0, e) for e in exposures(replay_lines)
    ]
    events += [(int(x["ts"]), 1, x) for x in kept.values() if x.get("user_id") is not None]
    events.sort(key=lambda item: (item[0], item[1]))
    out: dict[str, float | None] = {}
    for ts, _, event in events:
        if isinstance(event, Exposure):
            inc.exposure(
                event.user_id, event.advertiser_id, event.campaign_id, ts, holdout=event.holdout
            )
            continue
        user, adv, credits = event["user_id"], event["advertiser_id"], event.get("credits") or []
        if oracle is None:
            if credits:
                out[event["conversion_key"]] = inc.score(user, adv, ts, credits)[0]
            inc.learn(user, adv, ts)
            continue
        if not credits:
            continue
        assert truth is not None
        total = math.fsum(c["credit"] for c in credits) or 1.0
        xs = [(c["credit"] / total, inc.unit_features(user, adv, ts, c)) for c in credits]
        probs = [oracle.probability(x) for _, x in xs]
        known = [(share, p) for (share, _), p in zip(xs, probs, strict=True) if p is not None]
        out[event["conversion_key"]] = math.fsum(s * p for s, p in known) if known else None
        for share, x in xs:
            oracle.learn_truth(x, truth.get(event["conversion_key"], 0.0), share)
    return out
