"""Labels' ``incremental_probability`` against the generator's causal truth: Qini, calibration,
and how much of the incremental truth the label weights capture.

The truth gives each conversion t, the probability that the ads caused it (its
``incremental_probability``: the lift share of an exposed user's ad-driven conversion, else 0);
its sum over the truth is the expected number of incremental conversions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from convstream.core.evaluation import latest_labels

#: Bins of the expected calibration error, equal width on [0, 1].
ECE_BINS = 10


@dataclass(frozen=True, slots=True)
class Qini:
    """A ranking's Qini coefficient ``q``, the perfect ranking's ``q_perfect``, their ratio
    ``normalized`` (Radcliffe's Q), and the curve (fraction targeted, share of T captured) of
    the ranking and of the perfect one."""

    n: int
    total: float
    q: float | None
    q_perfect: float | None
    normalized: float | None
    curve: list[tuple[float, float]] = field(default_factory=list)
    perfect_curve: list[tuple[float, float]] = field(default_factory=list)


def _gains(pairs: list[tuple[float, float]]) -> tuple[float, list[float]]:
    """Sum over k = 1..n of G(k) (tied scores as one block, their gain spread evenly), and G at
    the end of each block."""
    pairs = sorted(pairs, key=lambda p: -p[0])
    area, g, ends = 0.0, 0.0, []
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        m, s = j - i, math.fsum(t for _, t in pairs[i:j])
        area += m * g + s * (m + 1) / 2
        for step in range(1, m + 1):
            ends.append(g + s * step / m)
        g += s
        i = j
    return area, ends


def qini(scores: Iterable[float], truths: Iterable[float], *, points: int = 100) -> Qini:
    """Radcliffe's Qini coefficient (Radcliffe 2007, "Using control groups to target on
    predicted lift"), with the counterfactual known per unit.

    Rank the n units by score, highest first. G(k) is the incremental conversions among the top
    k: Radcliffe estimates it as the treated responders minus the control responders scaled to
    the treated count; here each unit's truth t (the probability that the ads caused its
    conversion) is known, so G(k) is the sum of t over the top k. The Qini curve is
    Q(k) = G(k) - k T / n, what targeting the top k gains over targeting k at random
    (T = G(n)), and the coefficient is the area between the gain curve and the random line as
    a share of T: q = (1/n) sum over k = 1..n of Q(k) / T. Units with equal scores form one
    block whose gain is spread evenly over it (the mean over their orders). q is 0 for a
    random ranking and largest, q_perfect, for the ranking by t itself; ``normalized`` is
    q / q_perfect (1: perfect). None where undefined (no unit, T = 0).

    >>> r = qini([0.9, 0.5, 0.1, 0.0], [1.0, 0.0, 1.0, 0.0])
    >>> r.q, r.q_perfect, r.normalized
    (0.125, 0.25, 0.5)
    >>> qini([0.5, 0.5], [1.0, 0.0]).q  # a tie is a coin toss
    0.0
    >>> qini([0.1, 0.9], [1.0, 0.0]).normalized  # upside down
    -1.0
    """
    pairs = list(zip(scores, truths, strict=True))
    n, total = len(pairs), math.fsum(t for _, t in pairs)
    if n == 0 or total <= 0:
        return Qini(n, total, None, None, None)
    random_area = total * (n + 1) / 2
    area, ends = _gains(pairs)
    best, best_ends = _gains([(t, t) for _, t in pairs])
    q = (area - random_area) / (n * total)
    q_perfect = (best - random_area) / (n * total)
    normalized = q / q_perfect if q_perfect > 0 else None
    return Qini(
        n,
        total,
        q,
        q_perfect,
        normalized,
        _curve(ends, total, points),
        _curve(best_ends, total, points),
    )


def _curve(ends: list[float], total: float, points: int) -> list[tuple[float, float]]:
    """About ``points`` points of (fraction targeted, share of the total gained)."""
    n = len(ends)
    step = max(1, n // points)
    curve = [(0.0, 0.0)] + [((k + 1) / n, ends[k] / total) for k in range(step - 1, n, step)]
    if curve[-1][0] < 1.0:
        curve.append((1.0, 1.0))
    return curve


def ece(
    predictions: Iterable[float], truths: Iterable[float], *, bins: int = ECE_BINS
) -> float | None:
    """Expected calibration error: over equal-width bins of the prediction, the mean absolute
    gap between mean prediction and mean truth, weighted by the bin's share of units.

    >>> round(ece([0.1, 0.1, 0.9, 0.9], [0.0, 0.2, 1.0, 0.6]), 3)
    0.05
    """
    sums: dict[int, list[float]] = {}
    n = 0
    for p, t in zip(predictions, truths, strict=True):
        b = sums.setdefault(min(bins - 1, int(p * bins)), [0.0, 0.0, 0.0])
        b[0] += 1
        b[1] += p
        b[2] += t
        n += 1
    if n == 0:
        return None
    return math.fsum(abs(b[1] - b[2]) for b in sums.values()) / n


@dataclass(frozen=True, slots=True)
class IncrementalityScore:
    """Labels' incremental probabilities and weights against the truth (module docstring)."""

    labels: int  # highest revisions
    attributed: int  # with a credit
    scored: int  # attributed, with an incremental_probability
    unscored: int  # attributed, probability null (the estimator was not ready)
    qini: Qini
    oracle_qini: Qini | None  # the same estimator trained on the truth, same labels
    qini_ratio: float | None  # q / oracle q
    ece: float | None
    oracle_ece: float | None
    true_incremental: float  # sum of the truth's incremental_probability
    true_incremental_attributed: float  # the same over the attributed labels' conversions
    incremental_weight: float  # sum over labels (null as 0)
    label_weight: float
    incremental_weight_ratio: float | None  # incremental_weight / true_incremental
    label_weight_ratio: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_incrementality(
    labels: Iterable[Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]],
    oracle: Mapping[str, float | None] | None = None,
) -> IncrementalityScore:
    """Score the highest revision of each label; ``oracle`` maps conversion keys to the
    truth-trained estimator's probabilities (:func:`convstream.core.incrementality_replay.
    replay_scores` with ``truth``). Qini and ECE are over the attributed labels that have a
    probability (and, for the ratio, an oracle one too: both rank the same labels).

    >>> truth = [{"conversion_key": "a", "incremental_probability": 0.5},
    ...          {"conversion_key": "b", "incremental_probability": 0.0}]
    >>> labels = [{"conversion_key": "a", "credits": [{}], "label_weight": 1.0,
    ...            "incremental_probability": 0.4, "incremental_weight": 0.4},
    ...           {"conversion_key": "b", "credits": [{}], "label_weight": 1.0,
    ...            "incremental_probability": 0.1, "incremental_weight": 0.1}]
    >>> s = score_incrementality(labels, truth)
    >>> s.qini.normalized, round(s.ece, 3), s.incremental_weight_ratio, s.label_weight_ratio
    (1.0, 0.1, 1.0, 4.0)
    """
    kept, _, _ = latest_labels(labels)
    t = {row["conversion_key"]: float(row.get("incremental_probability") or 0.0) for row in truth}
    attributed = [x for x in kept.values() if x.get("credits")]
    scored = [x for x in attributed if x.get("incremental_probability") is not None]
    both = [x for x in scored if oracle is None or oracle.get(x["conversion_key"]) is not None]
    keys = [x["conversion_key"] for x in both]
    ours = [float(x["incremental_probability"]) for x in both]
    truths = [t.get(k, 0.0) for k in keys]
    ours_qini = qini(ours, truths)
    oracle_qini = oracle_ece = ratio = None
    if oracle is not None:
        theirs = [float(oracle[k] or 0.0) for k in keys]
        oracle_qini = qini(theirs, truths)
        oracle_ece = ece(theirs, truths)
        if ours_qini.q is not None and oracle_qini.q:
            ratio = ours_qini.q / oracle_qini.q
    true_total = math.fsum(t.values())
    inc_weight = math.fsum(float(x.get("incremental_weight") or 0.0) for x in kept.values())
    lab_weight = math.fsum(float(x.get("label_weight") or 0.0) for x in kept.values())
    return IncrementalityScore(
        labels=len(kept),
        attributed=len(attributed),
        scored=len(scored),
        unscored=len(attributed) - len(scored),
        qini=ours_qini,
        oracle_qini=oracle_qini,
        qini_ratio=ratio,
        ece=ece(ours, truths),
        oracle_ece=oracle_ece,
        true_incremental=true_total,
        true_incremental_attributed=math.fsum(t.get(x["conversion_key"], 0.0) for x in attributed),
        incremental_weight=inc_weight,
        label_weight=lab_weight,
        incremental_weight_ratio=inc_weight / true_total if true_total > 0 else None,
        label_weight_ratio=lab_weight / true_total if true_total > 0 else None,
    )


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_incrementality(s: IncrementalityScore) -> str:
    """The figures in four lines.

    >>> print(format_incrementality(score_incrementality([], [])).splitlines()[0])
    incremental_probability: 0 attributed labels, 0 scored (0 null: estimator not ready)
    """
    o = s.oracle_qini
    return (
        f"incremental_probability: {s.attributed} attributed labels, {s.scored} scored "
        f"({s.unscored} null: estimator not ready)\n"
        f"  Qini q {_num(s.qini.q)} (normalized {_num(s.qini.normalized)}); oracle (same "
        f"estimator trained on the truth) q {_num(o.q if o else None)} (normalized "
        f"{_num(o.normalized if o else None)}); ours / oracle {_num(s.qini_ratio)}\n"
        f"  ECE {_num(s.ece)} (oracle {_num(s.oracle_ece)})\n"
        f"  true incremental conversions {s.true_incremental:.1f} "
        f"({s.true_incremental_attributed:.1f} of them attributed): "
        f"summed incremental_weight {s.incremental_weight:.1f} "
        f"(x{_num(s.incremental_weight_ratio)}), summed label_weight {s.label_weight:.1f} "
        f"(x{_num(s.label_weight_ratio)})"
    )
