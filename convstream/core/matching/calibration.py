"""Online calibration: turn a score into a probability that is right on average.

River 0.26 has no calibration module, so this one provides three small learners that are all
fitted on the progressive stream (predict first, then learn the outcome):

- ``PlattScaler``: ``p = sigmoid(a * logit + b)`` fitted by online Newton steps (a 2x2 Laplace
  posterior), so a handful of outcomes already move it and it never forgets its prior entirely.
- ``BinnedCalibrator``: Beta counts per score bin, shrunk toward the raw score and made monotone
  by pool-adjacent-violators when read; it fixes shapes that one sigmoid cannot.
- ``BetaRate``: the posterior mean of a success rate, used for the precision of a deterministic
  identifier kind.

>>> platt = PlattScaler()
>>> for _ in range(400):
...     platt.learn(0.9, True)
...     platt.learn(0.9, False)
>>> round(platt.predict(0.9), 2)
0.5
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


class PlattScaler:
    """Online Platt scaling of a probability, starting at the identity map.

    ``prior_strength`` is the precision of the Gaussian prior on ``(a, b)`` around ``(1, 0)``;
    ``decay`` (< 1) slowly forgets old curvature so that the map follows drift.
    """

    def __init__(self, prior_strength: float = 4.0, decay: float = 0.999):
        self.a, self.b = 1.0, 0.0
        self.decay = decay
        self.prior_strength = prior_strength
        self.h = [[prior_strength, 0.0], [0.0, prior_strength]]
        self.n = 0

    def predict(self, p: float) -> float:
        return sigmoid(self.a * logit(p) + self.b)

    def learn(self, p: float, y: bool, weight: float = 1.0) -> None:
        z = logit(p)
        q = sigmoid(self.a * z + self.b)
        g = (q - float(y)) * weight
        w = max(q * (1.0 - q), 1e-4) * weight
        h = self.h
        floor = self.prior_strength * (1.0 - self.decay)
        h[0][0] = h[0][0] * self.decay + w * z * z + floor
        h[0][1] = h[0][1] * self.decay + w * z
        h[1][0] = h[0][1]
        h[1][1] = h[1][1] * self.decay + w + floor
        det = h[0][0] * h[1][1] - h[0][1] * h[1][0]
        da = (h[1][1] * g * z - h[0][1] * g) / det
        db = (h[0][0] * g - h[1][0] * g * z) / det
        self.a = min(max(self.a - da, 0.05), 20.0)
        self.b = min(max(self.b - db, -20.0), 20.0)
        self.n += 1


class BinnedCalibrator:
    """Histogram calibration with a prior: each bin's rate is shrunk toward the raw score.

    >>> cal = BinnedCalibrator(bins=10, prior_weight=2.0)
    >>> for _ in range(500):
    ...     cal.learn(0.85, False)
    >>> cal.predict(0.85) < 0.05
    True
    """

    def __init__(self, bins: int = 20, prior_weight: float = 5.0, decay: float = 1.0):
        self.bins = bins
        self.prior_weight = prior_weight
        self.decay = decay
        self.pos = [0.0] * bins
        self.tot = [0.0] * bins
        self.n = 0

    def _bin(self, p: float) -> int:
        return min(int(p * self.bins), self.bins - 1)

    def learn(self, p: float, y: bool, weight: float = 1.0) -> None:
        i = self._bin(p)
        if self.decay < 1.0:
            self.pos[i] *= self.decay
            self.tot[i] *= self.decay
        self.pos[i] += weight * float(y)
        self.tot[i] += weight
        self.n += 1

    def _rates(self) -> list[float]:
        rates = []
        for i in range(self.bins):
            centre = (i + 0.5) / self.bins
            prior = self.prior_weight
            rates.append((self.pos[i] + prior * centre) / (self.tot[i] + prior))
        weights = [self.tot[i] + self.prior_weight for i in range(self.bins)]
        return _pool_adjacent_violators(rates, weights)

    def predict(self, p: float) -> float:
        rates = self._rates()
        # Interpolate between bin centres so the map is continuous.
        x = p * self.bins - 0.5
        lo = min(max(int(math.floor(x)), 0), self.bins - 1)
        hi = min(lo + 1, self.bins - 1)
        t = min(max(x - lo, 0.0), 1.0)
        return rates[lo] * (1.0 - t) + rates[hi] * t


def _pool_adjacent_violators(values: list[float], weights: list[float]) -> list[float]:
    """Non-decreasing least-squares fit of ``values``.

    >>> _pool_adjacent_violators([0.1, 0.5, 0.3, 0.9], [1, 1, 1, 1])
    [0.1, 0.4, 0.4, 0.9]
    """
    blocks: list[list[float]] = []
    for v, w in zip(values, weights, strict=True):
        blocks.append([v * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, w2, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w2
            blocks[-1][2] += c
    out: list[float] = []
    for s, w, c in blocks:
        out.extend([round(s / w, 12)] * int(c))
    return out


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
