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

from convstream.core.matching.calibration import logit

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

    def peek(self, training_rate: float) -> float:
        """The shift :meth:`shift` last gave, for reporting: it re-runs no EM, because a
        refresh at a moment that depends on who asks (a metrics scrape) would change the next
        decisions' warm start and so the labels.

        >>> est = LabelShift(prior_shift=0.5)
        >>> est.observe(0.9); est.peek(0.5) == 0.5, est._cached is None
        (True, True)
        """
        n = len(self.outputs)
        if n == 0 or self._cached is None:
            return self.prior_shift
        estimate = logit(self._cached[1]) - logit(self._cached[0])
        w = n / (n + self.prior_weight)
        return w * estimate + (1.0 - w) * self.prior_shift

    def shift(self, training_rate: float) -> float:
        n = len(self.outputs)
        if n == 0:
            return self.prior_shift
        cached = self._cached
        if cached is None or self._since >= self.refresh or abs(cached[0] - training_rate) > 0.02:
            start = cached[1] if cached is not None else None
            cached = self._cached = (
                training_rate,
                em_prior(list(self.outputs), training_rate, start),
            )
            self._since = 0
        estimate = logit(cached[1]) - logit(training_rate)
        w = n / (n + self.prior_weight)
        return w * estimate + (1.0 - w) * self.prior_shift


class WindowRate:
    """The share of True among the last ``window`` outcomes, shrunk toward ``prior`` (worth
    ``weight`` outcomes) while there are few.

    >>> rate = WindowRate(0.5, weight=2.0, window=4)
    >>> for outcome in (True, True, True, True, False, False):
    ...     rate.update(outcome)
    >>> rate.mean  # (0.5 * 2 + 2) / (2 + 4): the first two outcomes left the window
    0.5
    """

    def __init__(self, prior: float, weight: float = 20.0, window: int = 2000) -> None:
        self.prior = prior
        self.weight = weight
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.hits = 0

    def update(self, outcome: bool) -> None:
        if len(self.outcomes) == self.outcomes.maxlen:
            self.hits -= self.outcomes[0]
        self.outcomes.append(bool(outcome))
        self.hits += bool(outcome)

    @property
    def mean(self) -> float:
        return (self.prior * self.weight + self.hits) / (self.weight + len(self.outcomes))


class StrangerBound:
    """A label shift for conversions whose email and phone matched nobody, counted instead of
    inferred from a classifier, used as a floor under the EM estimate's scepticism.

    Of the conversions that carry an email or phone, a share ``u`` matched nobody: every
    converter who is not on the platform (a share ``s``) and the platform converters the
    platform does not know by that email or phone (a share ``q`` of them), so
    ``u = s + (1 - s) q``. ``q`` is counted on platform converters that a click id, device id
    or external id found; then ``s = (u - q) / (1 - q)``, and of the unmatched conversions a share
    ``sigma = s / u`` are strangers. With ``rho`` the share of those found converters who were
    among their address candidates, the live rate of "the converter is among the candidates"
    in this context is ``(1 - sigma) rho``.

    It misses strangers, not invents them: orders found by a click id carry an email the
    platform does not know more often than other platform orders (eight traffic shapes, seed
    1: ``q`` .57-.67 against .46-.56 over all platform orders), so ``s`` comes out low. Where
    the EM estimate is less sceptical still, it is wrong. That happens while the classifier EM
    reads is young (its outputs say "little shift"), worst when strangers are most of the
    traffic; by the end of those runs EM was the more sceptical of the two on all eight.

    >>> bound = StrangerBound(window=10_000)
    >>> for i in range(10_000):  # half the orders are strangers'; q = 0.3, rho = 0.8
    ...     bound.observe(i % 2 == 0 or (i // 2) % 10 < 3)
    ...     bound.learn_platform(unmatched=i % 10 < 3, among=(i // 10) % 5 < 4)
    >>> sigma = 0.5 / (0.5 + 0.5 * 0.3)
    >>> round(bound.shift(0.8), 2), round(logit((1 - sigma) * 0.8) - logit(0.8), 2)
    (-2.87, -2.87)
    """

    def __init__(self, window: int = 2000) -> None:
        self.unmatched = WindowRate(0.4, window=window)  # u
        self.platform_unmatched = WindowRate(0.4, window=window)  # q
        self.platform_among = WindowRate(0.75, weight=10.0, window=window)  # rho

    def observe(self, unmatched: bool) -> None:
        """Any conversion carrying an email or phone: did all of them match nobody?"""
        self.unmatched.update(unmatched)

    def learn_platform(self, unmatched: bool, among: bool) -> None:
        """A platform converter a click id, device id or external id found, whose conversion
        carried an email or phone: did they match nobody, and (if so) was the converter among
        the address candidates?"""
        self.platform_unmatched.update(unmatched)
        if unmatched:
            self.platform_among.update(among)

    def shift(self, training_rate: float) -> float:
        u, q = self.unmatched.mean, self.platform_unmatched.mean
        strangers = min(max((u - q) / (1.0 - q), 0.0), 0.98 * u)
        live = (1.0 - strangers / u) * self.platform_among.mean
        return logit(live) - logit(training_rate)
