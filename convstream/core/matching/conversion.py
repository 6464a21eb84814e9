"""Conversion-level confidence: P(the best probabilistic candidate is the converter).

From the pair scores of one conversion's candidates it builds a few conversion-level features
(the best one's share under a one-or-nobody model, the margin to the second, the candidate
count, the best one's identifier kind and ad engagement) and returns

    P(converter among the candidates | x) * P(best is the converter | among, x)

Both factors are Bayesian online logistic models learned from platform converters (the
self-supervised examples and feedback that names a user). A converter who is not on the
platform looks, to these features, like a platform converter absent from the candidates, so
going from platform converters to all converters only shifts the first factor's prior odds: a
label shift, estimated by EM from the unlabelled live conversions (``label_shift.py``), plus a
small residual learned from delayed feedback. One clue is kept apart: a conversion whose email
or phone matched nobody, when the best candidate has an email or phone of their own on the
platform, is more often a housemate's on the candidate's device. It cannot be a pair feature,
because in most self-supervised examples the conversion's email is the matched user's own. Its
likelihood ratio is added to the first factor's log-odds (naive Bayes) and counted from the
self-supervised examples whose email and phone matched nobody (a click id or device id found
the user) and from feedback, which alone brings converters who are not on the platform.

Where an email or phone matched nobody, the label shift is also counted rather than inferred
(``StrangerBound``): from how often emails and phones match nobody, on all conversions and on
those of platform converters a click id found. That count misses strangers rather than invents
them, so the EM estimate is never allowed to be less sceptical than it. EM reads a young
classifier's outputs as "little shift", and most in traffic where strangers are the majority.

>>> scorer = ConversionScorer()
>>> best, margin, x = conversion_features({"u1": 3.0, "u2": -1.0}, {"u1": {}, "u2": {}})
>>> best, round(margin, 2)
('u1', 0.92)
>>> 0.5 < scorer.confidence(x, "plain") < 1.0
True
"""

from __future__ import annotations

import math

from convstream.core.matching.calibration import BetaRate, LikelihoodRatio, OnlineLogit, logit
from convstream.core.matching.features import LONG_AGO, Features
from convstream.core.matching.label_shift import LabelShift, StrangerBound
from convstream.core.matching.progressive import Progress

#: Prior log-odds shift from platform converters to all converters, per context (deterministic
#: ids absent: "plain"; present but matching nobody: "unmatched"), used until the label-shift
#: estimate has seen enough live conversions.
SHIFT_PRIORS = {"plain": -0.5, "unmatched": -1.2}
#: Feedback residual on top of the label shift, one log-odds offset per cell: the context, and
#: whether the best candidate shares only the address, not the user agent. The ip-only cells
#: start at -2: a housemate who is not on the platform converts from the address of the one user
#: seen there, which breaks the label shift's assumption (that such converters look like
#: platform converters with no candidate). At -1, ip-only labels were right less than half the
#: time on every traffic shape measured, the generator's defaults included (BENCHMARKS.md).
#: Each cell learns only from its own feedback: with one shared ip-only weight, feedback from
#: the "unmatched" context (mostly strangers) moved the "plain" one too, and the model
#: over-trusted ip-only matches where strangers are common.
RESIDUAL_FEATURES = ("plain", "plain_ip_only", "unmatched", "unmatched_ip_only")
RESIDUAL_PRIOR = [0.0, -2.0, 0.0, -2.0]
#: Prior variance of each offset: the label shift is trusted until feedback says otherwise (a
#: standard deviation of 0.45 log-odds; 0.5 let a few dozen feedback records overshoot).
RESIDUAL_PRIOR_VAR = 0.2
CONVERSION_FEATURES = (
    "bias",
    "logit_share",
    "logit_any",
    "logit_pick",
    "margin",
    "log_n",
    "ipua",
    "adv",
    "ip_logdeg",
    "ip_only",
    "ip_recency",
)


def _bounded_logit(p: float, bound: float = 6.0) -> float:
    """A log-odds feature kept in a range where one weight cannot swing the output."""
    return min(max(logit(p), -bound), bound)


def _unit(name: str) -> list[float]:
    """Prior weights: 1 on one conversion feature, 0 elsewhere (start from the pair scores)."""
    return [float(n == name) for n in CONVERSION_FEATURES]


def conversion_features(
    logits: dict[str, float], feats: dict[str, Features]
) -> tuple[str, float, list[float]]:
    """``(best user, margin, x)`` from the candidates' pair log-odds (at least one)."""
    ranked = sorted(logits, key=lambda u: -logits[u])
    top = logits[ranked[0]]
    odds = [math.exp(logits[u] - top) for u in ranked]
    total, nobody = sum(odds), math.exp(-top)
    share = odds[0] / (nobody + total)
    margin = share - (odds[1] / (nobody + total) if len(odds) > 1 else 0.0)
    f = feats[ranked[0]]
    x = [
        1.0,
        _bounded_logit(share),
        _bounded_logit(total / (nobody + total)),
        _bounded_logit(odds[0] / total),
        margin,
        math.log1p(len(ranked)),
        f.get("ipua", 0.0),
        f.get("adv", 0.0),
        f.get("ip_logdeg", 0.0) / 5.0,
        f.get("ip_only", 0.0),
        f.get("ip", 0.0) * (LONG_AGO - f.get("ip_age", LONG_AGO)) / LONG_AGO,
    ]
    return ranked[0], margin, x


def _round3(v: float) -> float:
    return round(v, 3)


def _residual_x(x: list[float], ctx: str) -> list[float]:
    """One-hot cell of ``RESIDUAL_FEATURES``.

    >>> _residual_x([0.0] * len(CONVERSION_FEATURES), "unmatched")
    [0.0, 0.0, 0.0, 1.0]
    """
    ip_only = 1.0 - x[CONVERSION_FEATURES.index("ipua")]
    plain = float(ctx == "plain")
    return [
        plain * (1 - ip_only),
        plain * ip_only,
        (1 - plain) * (1 - ip_only),
        (1 - plain) * ip_only,
    ]


#: Checkpoints before 2026-11-26 kept one additive residual over (plain, unmatched, ip_only);
#: row i gives cell i of ``RESIDUAL_FEATURES`` in those terms, so the migrated offsets are
#: exactly the old ones.
_ADDITIVE_TO_CELLS = ((1, 0, 0), (1, 0, 1), (0, 1, 0), (0, 1, 1))


class ConversionScorer:
    """The two conversion-level factors, the label shift and the feedback residual."""

    def __init__(self) -> None:
        self.present = OnlineLogit(_unit("logit_any"), prior_var=0.5)
        self.pick = OnlineLogit(_unit("logit_pick"), prior_var=0.5)
        self.label_shift = {ctx: LabelShift(prior_shift=m) for ctx, m in SHIFT_PRIORS.items()}
        self.among_rate = BetaRate(0.75, 10.0)
        self.residual = OnlineLogit(RESIDUAL_PRIOR, prior_var=RESIDUAL_PRIOR_VAR)
        self.own_conflict = LikelihoodRatio()
        self.stranger_bound = StrangerBound()
        self.progress = Progress()

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a checkpoint; one from before the residual cells keeps its offsets exactly,
        with each cell's variance but not their correlations, so the cells learn apart."""
        self.__dict__.update(state)
        if "own_conflict" not in state:
            self.own_conflict = LikelihoodRatio()
        if "stranger_bound" not in state:
            self.stranger_bound = StrangerBound()
        residual = self.residual
        if len(residual.w) == len(_ADDITIVE_TO_CELLS[0]):
            w, cov = residual.w, residual.cov
            residual.w = [
                sum(r * v for r, v in zip(row, w, strict=True)) for row in _ADDITIVE_TO_CELLS
            ]
            variances = [
                sum(row[k] * cov[k][m] * row[m] for k in range(3) for m in range(3))
                for row in _ADDITIVE_TO_CELLS
            ]
            residual.cov = [
                [v if i == j else 0.0 for j in range(4)] for i, v in enumerate(variances)
            ]

    def _among_logit(self, x: list[float], ctx: str, conflict: bool | None = None) -> float:
        """Log-odds that the converter, whoever it is, is among the candidates. ``conflict``:
        whether the best candidate has an email or phone of their own, for a conversion whose
        email or phone matched nobody; None where that does not apply."""
        shift = self.label_shift[ctx].shift(self.among_rate.mean)
        if ctx == "unmatched":
            shift = min(shift, self.stranger_bound.shift(self.among_rate.mean))
        evidence = 0.0 if conflict is None else self.own_conflict.log_ratio(conflict)
        return self.present.logit(x) + shift + evidence + self.residual.logit(_residual_x(x, ctx))

    def factors(
        self, x: list[float], ctx: str, conflict: bool | None = None
    ) -> tuple[float, float]:
        """``(P(converter among the candidates | x), P(best is the converter | among, x))``."""
        among = 1.0 / (1.0 + math.exp(-self._among_logit(x, ctx, conflict)))
        return among, self.pick.predict(x)

    def confidence(self, x: list[float], ctx: str, conflict: bool | None = None) -> float:
        among, pick = self.factors(x, ctx, conflict)
        return among * pick

    def observe(self, x: list[float], ctx: str) -> None:
        """An unlabelled live conversion: input to the label-shift estimate."""
        self.label_shift[ctx].observe(self.present.predict(x))

    def learn_platform(self, x: list[float], best: str, truth: str, pool: set[str]) -> None:
        """A platform converter's conversion (self-supervised or feedback naming a user)."""
        among = truth in pool
        self.among_rate.update(among)
        self.progress.update(self.present.predict(x), among)
        self.present.learn(x, among)
        if among:
            self.pick.learn(x, best == truth)

    def learn_feedback(
        self, x: list[float], ctx: str, among: bool, conflict: bool | None = None
    ) -> None:
        """Feedback on any converter: was the converter among the candidates? ``conflict`` is
        None where it does not apply (the conversion carried no email or phone that matched
        nobody)."""
        if conflict is not None:
            self.own_conflict.update(conflict, among)
        cell = _residual_x(x, ctx)
        offset = self._among_logit(x, ctx, conflict) - self.residual.logit(cell)
        self.residual.learn(cell, among, offset=offset)

    def stats(self) -> dict[str, object]:
        # peek, not shift: reading the model must not change it (a scrape would move labels).
        shifts = {c: est.peek(self.among_rate.mean) for c, est in self.label_shift.items()}
        return {
            "present_auc": self.progress.summary()["auc"],
            "shift": {c: round(v, 3) for c, v in shifts.items()},
            "stranger_bound": round(self.stranger_bound.shift(self.among_rate.mean), 3),
            "residual": dict(zip(RESIDUAL_FEATURES, map(_round3, self.residual.w), strict=True)),
            "own_conflict": round(self.own_conflict.log_ratio(True), 3),
        }
