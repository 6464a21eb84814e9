"""Progressive validation: every example is scored before it is learned, so metrics are honest.

``Progress`` keeps River's online ROC AUC and log loss over the pair predictions, and
``RollingECE`` the expected calibration error of the final confidences over a sliding window.

>>> progress = Progress()
>>> for p, y in [(0.9, True), (0.2, False), (0.7, True), (0.4, False)]:
...     progress.update(p, y)
>>> progress.summary()["auc"], progress.summary()["n"]
(1.0, 4)
"""

from __future__ import annotations

from collections import deque

from river import metrics


class Progress:
    """Online AUC and log loss of probabilities scored before learning."""

    def __init__(self) -> None:
        self.auc = metrics.ROCAUC(n_thresholds=50)
        self.log_loss = metrics.LogLoss()
        self.n = 0

    def update(self, p: float, y: bool) -> None:
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        self.auc.update(bool(y), {True: p, False: 1.0 - p})
        self.log_loss.update(bool(y), {True: p, False: 1.0 - p})
        self.n += 1

    def summary(self) -> dict[str, float | int]:
        return {
            "auc": round(float(self.auc.get()), 4),
            "log_loss": round(float(self.log_loss.get()), 4),
            "n": self.n,
        }


class RollingECE:
    """Expected calibration error over the last ``window`` (confidence, outcome) pairs.

    >>> ece = RollingECE(window=100, bins=10)
    >>> for i in range(100):
    ...     ece.update(0.75, i % 4 != 0)
    >>> ece.get()
    0.0
    >>> ece.update(0.95, False)
    >>> round(ece.get(), 4)
    0.017
    """

    def __init__(self, window: int = 2000, bins: int = 10) -> None:
        self.window = window
        self.bins = bins
        self.items: deque[tuple[float, bool]] = deque(maxlen=window)

    def update(self, p: float, y: bool) -> None:
        self.items.append((p, bool(y)))

    def get(self) -> float:
        n = len(self.items)
        if not n:
            return 0.0
        conf = [0.0] * self.bins
        hits = [0.0] * self.bins
        for p, y in self.items:
            b = min(int(p * self.bins), self.bins - 1)
            conf[b] += p
            hits[b] += y
        return sum(abs(c - h) for c, h in zip(conf, hits, strict=True)) / n

    def __len__(self) -> int:
        return len(self.items)
