"""Label-shift estimation: how much rarer an outcome is in live traffic than in training data.

A classifier trained where the positive rate is ``rho`` is applied to a population where it is
some unknown ``rho'``. If only the class balance changed (the features of each class look the
same), ``rho'`` is the fixed point of EM over the classifier's outputs on *unlabelled* live
examples (Saerens, Latinne & Decaestecker, 2002), and the outputs are corrected by adding
``logit(rho') - logit(rho)`` to their log-odds. The match model uses it to learn, without any
feedback, how often a converter is missing from the candidates because they are not on the
platform at all.

>>> est = LabelShift(window=500, prior_shift=0.0, prior_weight=1)
>>> for i in range(400):  # trained at rho=0.5; live outputs say positives are rare
...     est.observe(0.9 if i % 5 == 0 else 0.1)
>>> est.shift(training_rate=0.5) < -1.0
True
"""

from __future__ import annotations

from collections import deque

from models.matching.calibration import logit

EM_ITERATIONS = 50


def em_prior(probabilities: list[float], training_rate: float, start: float | None = None) -> float:
    """The live positive rate under label shift, by EM (Saerens et al., 2002), from ``start``
    (default: the training rate).

    >>> round(em_prior([0.5, 0.5], 0.5), 3)
    0.5
    """
    rho = min(max(training_rate, 1e-3), 1 - 1e-3)
    live = rho if start is None else min(max(start, 1e-3), 1 - 1e-3)
    for _ in range(EM_ITERATIONS):
        a, b = live / rho, (1.0 - live) / (1.0 - rho)
        new = sum(a * p / (a * p + b * (1.0 - p)) for p in probabilities) / len(probabilities)
        new = min(max(new, 1e-3), 1 - 1e-3)
        if abs(new - live) < 1e-6:
            return new
        live = new
    return live


class LabelShift:
    """A sliding window of live classifier outputs and the log-odds shift they imply.

    With few observations the shift is shrunk toward ``prior_shift`` (``prior_weight`` is the
    number of observations the prior is worth); EM is re-run every ``refresh`` observations.
    """

    def __init__(
        self,
        window: int = 1000,
        prior_shift: float = 0.0,
        prior_weight: float = 30.0,
        refresh: int = 10,
    ) -> None:
        self.outputs: deque[float] = deque(maxlen=window)
        self.prior_shift = prior_shift
        self.prior_weight = prior_weight
        self.refresh = refresh
        self._cached: tuple[float, float] | None = None  # (training_rate, live_rate)
        self._since = 0

    def observe(self, p: float) -> None:
        self.outputs.append(min(max(p, 1e-4), 1 - 1e-4))
        self._since += 1

    def shift(self, training_rate: float) -> float:
        n = len(self.outputs)
        if n == 0:
            return self.prior_shift
        stale = self._cached is None or self._since >= self.refresh
        if stale or abs(self._cached[0] - training_rate) > 0.02:
            start = self._cached[1] if self._cached is not None else None
            live = em_prior(list(self.outputs), training_rate, start)
            self._cached = (training_rate, live)
            self._since = 0
        estimate = logit(self._cached[1]) - logit(training_rate)
        w = n / (n + self.prior_weight)
        return w * estimate + (1.0 - w) * self.prior_shift
