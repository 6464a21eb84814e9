"""Online calibration: turn a score into a probability that is right on average.

River 0.26 has no calibration module, so this one provides the small learners the match model
fits on the progressive stream (predict first, then learn the outcome): ``BetaRate``, the
posterior mean of a success rate (the precision of a deterministic identifier kind);
``LikelihoodRatio``; and ``OnlineLogit``, a logistic model with a Gaussian prior fitted by
online Newton steps.

>>> rate = BetaRate(prior=0.9, weight=10)
>>> for _ in range(90):
...     rate.update(False)
>>> round(rate.mean, 2)
0.09
"""

from __future__ import annotations

import math


def sigmoid(z: float) -> float:
    """Numerically safe logistic function.

    >>> sigmoid(0.0)
    0.5
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def logit(p: float, eps: float = 1e-6) -> float:
    """Inverse of ``sigmoid``, clipped away from 0 and 1.

    >>> round(logit(0.5), 6)
    0.0
    """
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


class BetaRate:
    """Posterior mean of a Bernoulli rate under a ``Beta(prior * weight, (1-prior) * weight)``.

    >>> rate = BetaRate(prior=0.9, weight=10)
    >>> rate.update(False); rate.update(False)
    >>> round(rate.mean, 3)
    0.75
    """

    def __init__(self, prior: float, weight: float = 20.0):
        self.alpha = prior * weight
        self.beta = (1.0 - prior) * weight

    def update(self, success: bool, weight: float = 1.0) -> None:
        if success:
            self.alpha += weight
        else:
            self.beta += weight

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class LikelihoodRatio:
    """Log-odds evidence of a binary clue: ``log P(clue | positive) - log P(clue | negative)``
    (or of its absence), each rate a :class:`BetaRate` around one half worth ``prior``
    observations, so it starts at 0: no evidence either way.

    >>> lr = LikelihoodRatio()
    >>> lr.log_ratio(True), lr.log_ratio(False)
    (0.0, 0.0)
    >>> for _ in range(30):
    ...     lr.update(True, False); lr.update(False, True)
    >>> lr.log_ratio(True) < -2.0 < 2.0 < lr.log_ratio(False)
    True
    """

    def __init__(self, prior: float = 2.0):
        # P(clue | negative), P(clue | positive)
        self.rates = (BetaRate(0.5, prior), BetaRate(0.5, prior))

    def update(self, clue: bool, positive: bool) -> None:
        self.rates[positive].update(clue)

    def log_ratio(self, clue: bool) -> float:
        neg, pos = self.rates[0].mean, self.rates[1].mean
        if clue:
            return math.log(pos) - math.log(neg)
        return math.log1p(-pos) - math.log1p(-neg)


class OnlineLogit:
    """Bayesian online logistic regression (Laplace posterior, one Newton step per example).

    Starts at ``prior_mean`` with covariance ``prior_var * I`` and tightens with each outcome, so
    a prior such as "trust the input logit" holds until the data say otherwise. ``decay`` < 1
    inflates the covariance a little per step so that the fit can follow drift.

    >>> model = OnlineLogit([0.0, 1.0], prior_var=1.0)
    >>> round(model.predict([1.0, 2.0]), 3)
    0.881
    >>> for _ in range(300):
    ...     model.learn([1.0, 2.0], False)
    >>> model.predict([1.0, 2.0]) < 0.05
    True
    """

    def __init__(self, prior_mean: list[float], prior_var: float = 1.0, decay: float = 1.0):
        d = len(prior_mean)
        self.w = [float(v) for v in prior_mean]
        self.cov = [[prior_var if i == j else 0.0 for j in range(d)] for i in range(d)]
        self.decay = decay
        self.n = 0

    def logit(self, x: list[float], offset: float = 0.0) -> float:
        return offset + sum(w * v for w, v in zip(self.w, x, strict=True))

    def predict(self, x: list[float], offset: float = 0.0) -> float:
        return sigmoid(self.logit(x, offset))

    def learn(self, x: list[float], y: bool, weight: float = 1.0, offset: float = 0.0) -> None:
        """One Newton step; ``offset`` is a fixed logit added to the linear term."""
        d = len(self.w)
        if self.decay < 1.0:
            self.cov = [[c / self.decay for c in row] for row in self.cov]
        q = self.predict(x, offset)
        h = max(q * (1.0 - q), 1e-3) * weight
        sx = [sum(self.cov[i][j] * x[j] for j in range(d)) for i in range(d)]
        denom = 1.0 + h * sum(x[i] * sx[i] for i in range(d))
        for i in range(d):
            for j in range(d):
                self.cov[i][j] -= h * sx[i] * sx[j] / denom
        g = (q - float(y)) * weight
        step = [sum(self.cov[i][j] * x[j] for j in range(d)) * g for i in range(d)]
        self.w = [w - s for w, s in zip(self.w, step, strict=True)]
        self.n += 1
