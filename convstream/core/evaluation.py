"""Score emitted labels against ground truth: coverage, matching, calibration, attribution.

Pure: labels and truth rows are plain dicts (labels as on the ``labels`` topic, truth as written
by ``convstream/synth/generate.py``). Only the highest revision of each label key counts.

>>> truth = [
...     {"conversion_key": "a:Purchase:1", "user_id": "u1", "linkable": True,
...      "last_touch": {"engagement_id": "k1", "engagement_type": "click"}},
...     {"conversion_key": "a:Purchase:2", "user_id": None, "linkable": False, "last_touch": None},
... ]
>>> labels = [
...     {"conversion_key": "a:Purchase:1", "user_id": "u9", "match_confidence": 0.4,
...      "match_method": "ip", "credits": [], "label_weight": 0.0, "revision": 0},
...     {"conversion_key": "a:Purchase:1", "user_id": "u1", "match_confidence": 0.9,
...      "match_method": "click", "label_weight": 0.9, "revision": 1,
...      "credits": [{"engagement_id": "k1", "credit": 1.0, "label_weight": 0.9}]},
... ]
>>> report = evaluate(labels, truth)
>>> report.coverage, report.match_precision, report.match_recall, report.attribution_accuracy
(0.5, 1.0, 1.0, 1.0)
>>> round(report.ece, 3), round(report.label_weight_precision, 3)
(0.1, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

ConversionKey = str
Label = Mapping[str, Any]
TruthRow = Mapping[str, Any]

N_BINS = 10
_SAMPLE = 10


@dataclass(frozen=True)
class EvalReport:
    """Everything :func:`evaluate` measures; ratios are None when their denominator is 0."""

    n_truth: int
    n_labels: int  # distinct label keys, after keeping the highest revision
    label_rows: int
    coverage: float | None
    missing_keys: int
    unexpected_keys: int
    duplicate_keys: int
    # Matching (labels judged against truth; unexpected keys are not judged).
    n_platform: int  # truth conversions whose converter is a platform user
    n_linkable: int
    n_strangers: int
    n_with_user: int  # judged labels that name a user
    n_correct: int  # ... and name the true converter
    match_precision: float | None
    match_recall: float | None
    linkable_ceiling: float | None
    recall_of_linkable: float | None
    # The same with the identity graph's reach (truth rows with ``graph_linkable``; None when
    # the truth file predates it).
    n_graph_linkable: int | None
    graph_linkable_ceiling: float | None
    recall_of_graph_linkable: float | None
    stranger_false_match_rate: float | None
    # Calibration of match_confidence on judged labels that name a user.
    ece: float | None
    brier: float | None
    reliability: list[dict[str, Any]]
    # Attribution.
    n_last_touch: int  # truth conversions with a true last touch
    attribution_accuracy: float | None
    attribution_over_recall: float | None
    total_label_weight: float
    label_weight_precision: float | None
    label_weight_ratio: float | None
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_sample: list[str] = field(default_factory=list)
    unexpected_sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field.

        >>> evaluate([], []).as_dict()["coverage"] is None
        True
        """
        return asdict(self)

    def _graph_lines(self) -> list[str]:
        """The linkable ceiling and recall with the identity graph's reach (issue 24), when the
        truth file gives it."""
        if self.n_graph_linkable is None:
            return []
        return [
            f"  ceiling with graph reach  {_f(self.graph_linkable_ceiling)}"
            f"   ({self.n_graph_linkable} linkable through the identity graph)",
            f"  recall of graph-linkable  {_f(self.recall_of_graph_linkable)}",
        ]

    def format_table(self) -> str:
        """A readable multi-line text table of the report.

        >>> print(evaluate([], []).format_table().splitlines()[0])
        labels vs truth: 0 truth conversions, 0 labelled keys (0 rows)
        """
        out = [
            f"labels vs truth: {self.n_truth} truth conversions, {self.n_labels} labelled keys "
            f"({self.label_rows} rows)",
            f"  coverage {_f(self.coverage)}   missing {self.missing_keys}   "
            f"unexpected {self.unexpected_keys}   duplicate keys {self.duplicate_keys}",
            "matching",
            f"  precision                 {_f(self.match_precision)}"
            f"   ({self.n_correct}/{self.n_with_user} labels with a user)",
            f"  recall                    {_f(self.match_recall)}"
            f"   (of {self.n_platform} platform conversions)",
            f"  linkable ceiling          {_f(self.linkable_ceiling)}"
            f"   ({self.n_linkable} linkable)",
            f"  recall of linkable        {_f(self.recall_of_linkable)}",
            *self._graph_lines(),
            f"  stranger false matches    {_f(self.stranger_false_match_rate)}"
            f"   (of {self.n_strangers} strangers)",
            "calibration (labels with a user)",
            f"  ECE {_f(self.ece)}   Brier {_f(self.brier)}",
            "  bin        count   mean conf   accuracy",
        ]
        for b in self.reliability:
            if b["count"]:
                conf, acc = _f(b["mean_confidence"]), _f(b["accuracy"])
                out.append(f"  {b['lo']:.1f}-{b['hi']:.1f}  {b['count']:>7}   {conf:>9}   {acc:>8}")
        out += [
            "attribution",
            f"  last-touch accuracy       {_f(self.attribution_accuracy)}"
            f"   (of {self.n_last_touch} with a true last touch)",
            f"  accuracy / match recall   {_f(self.attribution_over_recall)}",
            f"  label-weight precision    {_f(self.label_weight_precision)}",
            f"  label weight / last touch {_f(self.label_weight_ratio)}"
            f"   (total {self.total_label_weight:.1f})",
            "match methods",
            "  method                count  with user  precision",
        ]
        for method, m in self.methods.items():
            out.append(
                f"  {method:<20} {m['count']:>6}  {m['with_user']:>9}  {_f(m['precision']):>9}"
            )
        return "\n".join(out)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def latest_labels(labels: Iterable[Label]) -> tuple[dict[ConversionKey, Label], int, int]:
    """(highest revision per key, rows read, keys with two rows of the same revision).

    Among rows of the same revision the later one wins (a re-emission of the same label).

    >>> rows = [{"conversion_key": "k", "revision": 1, "user_id": "a"},
    ...         {"conversion_key": "k", "revision": 0, "user_id": "b"},
    ...         {"conversion_key": "j", "revision": 0}, {"conversion_key": "j", "revision": 0}]
    >>> kept, n, dup = latest_labels(rows)
    >>> kept["k"]["user_id"], n, dup
    ('a', 4, 1)
    """
    kept: dict[ConversionKey, Label] = {}
    revisions: dict[ConversionKey, set[int]] = {}
    duplicated: set[ConversionKey] = set()
    rows = 0
    for label in labels:
        rows += 1
        key = label["conversion_key"]
        rev = int(label.get("revision") or 0)
        seen = revisions.setdefault(key, set())
        if rev in seen:
            duplicated.add(key)
        seen.add(rev)
        if key not in kept or rev >= int(kept[key].get("revision") or 0):
            kept[key] = label
    return kept, rows, len(duplicated)


def top_credit(label: Label) -> Mapping[str, Any] | None:
    """The credit with the most credit; ties go to the latest engagement, then list order.

    >>> top_credit({"credits": [{"engagement_id": "a", "credit": 0.5, "engagement_ts": 1},
    ...                         {"engagement_id": "b", "credit": 0.5, "engagement_ts": 2}]})
    {'engagement_id': 'b', 'credit': 0.5, 'engagement_ts': 2}
    >>> top_credit({"credits": []}) is None
    True
    """
    credits = label.get("credits") or []
    if not credits:
        return None
    return max(credits, key=lambda c: (c.get("credit") or 0.0, c.get("engagement_ts") or 0))


def _credit_weight(label: Label, credit: Mapping[str, Any]) -> float:
    weight = credit.get("label_weight")
    if weight is None:
        weight = float(label.get("match_confidence") or 0.0) * float(credit.get("credit") or 0.0)
    return float(weight)


def label_weight(label: Label) -> float:
    """The label's total weight: its ``label_weight``, else the sum over its credits.

    >>> label_weight({"credits": [{"credit": 0.5, "label_weight": 0.2}, {"credit": 0.5}],
    ...               "match_confidence": 0.4})
    0.4
    """
    weight = label.get("label_weight")
    if weight is not None:
        return float(weight)
    return math.fsum(_credit_weight(label, c) for c in label.get("credits") or [])


def reliability(pairs: Iterable[tuple[float, bool]], n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Equal-width bins of (confidence, correct): count, mean confidence, observed accuracy.

    >>> [b["count"] for b in reliability([(0.05, False), (0.95, True), (1.0, True)], n_bins=2)]
    [1, 2]
    """
    counts = [0] * n_bins
    conf_sums = [0.0] * n_bins
    hits = [0] * n_bins
    for conf, correct in pairs:
        c = min(1.0, max(0.0, conf))
        b = min(int(c * n_bins), n_bins - 1)
        counts[b] += 1
        conf_sums[b] += c
        hits[b] += bool(correct)
    return [
        {
            "bin": b,
            "lo": b / n_bins,
            "hi": (b + 1) / n_bins,
            "count": counts[b],
            "mean_confidence": _ratio(conf_sums[b], counts[b]),
            "accuracy": _ratio(hits[b], counts[b]),
        }
        for b in range(n_bins)
    ]


def expected_calibration_error(bins: list[dict[str, Any]]) -> float | None:
    """Count-weighted mean of |accuracy - mean confidence| over the bins.

    >>> expected_calibration_error(reliability([(0.9, True), (0.9, False)]))
    0.4
    """
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    gap = math.fsum(
        b["count"] * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"]
    )
    return round(gap / total, 12)


def evaluate(labels: Iterable[Label], truth: Iterable[TruthRow]) -> EvalReport:
    """Score ``labels`` (several revisions allowed) against ``truth`` rows.

    >>> t = [{"conversion_key": "k", "user_id": "u", "linkable": True, "last_touch": None}]
    >>> evaluate([{"conversion_key": "k", "user_id": "u", "match_confidence": 1.0}], t).brier
    0.0
    """
    truth_by_key: dict[ConversionKey, TruthRow] = {row["conversion_key"]: row for row in truth}
    kept, rows, duplicate_keys = latest_labels(labels)
    missing = sorted(k for k in truth_by_key if k not in kept)
    unexpected = sorted(k for k in kept if k not in truth_by_key)

    n_platform = n_linkable = n_strangers = n_graph = correct_graph = 0
    graph_known = False
    correct_platform = correct_linkable = stranger_matched = 0
    n_with_user = n_correct = 0
    pairs: list[tuple[float, bool]] = []
    n_last_touch = lt_user_right = lt_correct = 0
    total_weight = good_weight = 0.0
    methods: dict[str, dict[str, Any]] = {}

    for key, row in truth_by_key.items():
        true_user = row.get("user_id")
        label = kept.get(key)
        user = label.get("user_id") if label is not None else None
        right = user is not None and user == true_user
        if true_user is None:
            n_strangers += 1
            stranger_matched += user is not None
        else:
            n_platform += 1
            correct_platform += right
            if row.get("linkable"):
                n_linkable += 1
                correct_linkable += right
            if "graph_linkable" in row:
                graph_known = True
                if row["graph_linkable"]:
                    n_graph += 1
                    correct_graph += right
        last_touch = row.get("last_touch")
        if last_touch is not None and true_user is not None:
            n_last_touch += 1
            if right:
                lt_user_right += 1
                top = top_credit(label) if label is not None else None
                lt_correct += (
                    top is not None and top.get("engagement_id") == (last_touch["engagement_id"])
                )
        if label is None:
            continue
        method = str(label.get("match_method") or "unknown")
        m = methods.setdefault(method, {"count": 0, "with_user": 0, "correct": 0})
        m["count"] += 1
        weight = label_weight(label)
        total_weight += weight
        if user is None:
            continue
        n_with_user += 1
        n_correct += right
        m["with_user"] += 1
        m["correct"] += right
        pairs.append((float(label.get("match_confidence") or 0.0), right))
        if right and last_touch is not None:
            good_weight += math.fsum(
                _credit_weight(label, c)
                for c in label.get("credits") or []
                if c.get("engagement_id") == last_touch["engagement_id"]
            )

    for m in methods.values():
        m["precision"] = _ratio(m["correct"], m["with_user"])
    bins = reliability(pairs)
    brier = _ratio(math.fsum((min(1.0, max(0.0, c)) - ok) ** 2 for c, ok in pairs), len(pairs))
    attribution_accuracy = _ratio(lt_correct, n_last_touch)
    return EvalReport(
        n_truth=len(truth_by_key),
        n_labels=len(kept),
        label_rows=rows,
        coverage=_ratio(len(truth_by_key) - len(missing), len(truth_by_key)),
        missing_keys=len(missing),
        unexpected_keys=len(unexpected),
        duplicate_keys=duplicate_keys,
        n_platform=n_platform,
        n_linkable=n_linkable,
        n_strangers=n_strangers,
        n_with_user=n_with_user,
        n_correct=n_correct,
        match_precision=_ratio(n_correct, n_with_user),
        match_recall=_ratio(correct_platform, n_platform),
        linkable_ceiling=_ratio(n_linkable, n_platform),
        recall_of_linkable=_ratio(correct_linkable, n_linkable),
        n_graph_linkable=n_graph if graph_known else None,
        graph_linkable_ceiling=_ratio(n_graph, n_platform) if graph_known else None,
        recall_of_graph_linkable=_ratio(correct_graph, n_graph) if graph_known else None,
        stranger_false_match_rate=_ratio(stranger_matched, n_strangers),
        ece=expected_calibration_error(bins),
        brier=brier,
        reliability=bins,
        n_last_touch=n_last_touch,
        attribution_accuracy=attribution_accuracy,
        attribution_over_recall=_ratio(lt_correct, lt_user_right),
        total_label_weight=total_weight,
        label_weight_precision=_ratio(good_weight, total_weight),
        label_weight_ratio=_ratio(total_weight, n_last_touch),
        methods=dict(sorted(methods.items())),
        missing_sample=missing[:_SAMPLE],
        unexpected_sample=unexpected[:_SAMPLE],
    )


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file (blank lines skipped).

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "x.jsonl")
    ...     _ = open(p, "wb").write(b'{"a": 1}\\n\\n{"a": 2}\\n')
    ...     load_jsonl(p)
    [{'a': 1}, {'a': 2}]
    """
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]
