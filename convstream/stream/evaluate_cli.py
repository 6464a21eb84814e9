"""``convstream evaluate``: the worker's labels against truth, beside offline rule baselines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from convstream.core.evaluation import evaluate
from convstream.core.incrementality_evaluation import (
    IncrementalityScore,
    format_incrementality,
    score_incrementality,
)
from convstream.core.lift import LiftEstimate
from convstream.core.lift_evaluation import LiftScore, format_lift_table, format_summary
from convstream.stream.inputs import read_campaigns, read_labels, read_replay, read_truth
from convstream.stream.report import glossary_text
from convstream.synth.generate import campaign_truth_path

#: Rows of the side-by-side table: a key of ``EvalReport.as_dict()`` and its title.
COLUMNS = (
    ("coverage", "coverage"),
    ("match_precision", "match precision"),
    ("match_recall", "match recall"),
    ("linkable_ceiling", "linkable ceiling"),
    ("recall_of_linkable", "recall / linkable"),
    ("stranger_false_match_rate", "stranger false matches"),
    ("ece", "ECE (matched)"),
    ("brier", "Brier (matched)"),
    ("attribution_accuracy", "attribution accuracy"),
    ("attribution_over_recall", "attribution / recall"),
    ("label_weight_precision", "label-weight precision"),
    ("duplicate_keys", "duplicate keys"),
)

#: What the figures of the table mean, for people who did not write the evaluator.
GLOSSARY = glossary_text()


def side_by_side(reports: dict[str, dict[str, Any]]) -> str:
    """One column per report, one row per :data:`COLUMNS` entry; ``-`` where a ratio is None.

    >>> print(side_by_side({"a": {"coverage": 1.0, "match_precision": 0.5}}).splitlines()[2])
    match precision                   0.5000
    """
    names = list(reports)
    width = max(len(title) for _, title in COLUMNS) + 2
    lines = ["".ljust(width) + "".join(n.rjust(16) for n in names)]
    for key, title in COLUMNS:
        cells = [_fmt(reports[n].get(key)).rjust(16) for n in names]
        lines.append(title.ljust(width) + "".join(cells))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def problems(report: dict[str, Any], *, min_coverage: float, source: str = "labels") -> list[str]:
    """Why a report's figures should not be trusted: too few labels, or foreign keys.

    >>> problems({"n_truth": 10, "n_labels": 10, "coverage": 1.0, "unexpected_keys": 0,
    ...           "missing_keys": 0, "unexpected_sample": []}, min_coverage=0.99)
    []
    >>> problems({"n_truth": 10, "n_labels": 3, "coverage": 0.0, "unexpected_keys": 3,
    ...           "missing_keys": 10, "unexpected_sample": ["x"]}, min_coverage=0.99)[0][:60]
    'the labels and the truth do not belong together: none of the'
    """
    out = []
    n_truth, n_labels = report["n_truth"], report["n_labels"]
    unexpected = report["unexpected_keys"]
    matched = n_labels - unexpected
    if n_labels == 0:
        out.append(
            f"no {source} at all for the {n_truth} truth conversions: was the worker running, "
            "and were the labels read after it caught up (`convstream labels --wait`)?"
        )
        return out
    if matched == 0:
        sample = ", ".join(report["unexpected_sample"][:1])
        out.append(
            f"the {source} and the truth do not belong together: none of the {n_labels} "
            f"labelled keys is in the truth file (e.g. {sample}); were they made from another "
            "replay, seed or profile?"
        )
        return out
    if unexpected:
        sample = ", ".join(report["unexpected_sample"][:3])
        out.append(
            f"{unexpected} of the {n_labels} labelled keys are not in the truth file "
            f"(e.g. {sample}): {source} of another replay mixed in?"
        )
    coverage = report["coverage"] or 0.0
    if coverage < min_coverage:
        labelled = n_truth - report["missing_keys"]
        out.append(
            f"coverage {coverage:.3f} is under {min_coverage:.2f}: {labelled} "
            f"of {n_truth} truth conversions have a label, so the other figures describe a "
            "part; the worker may not have caught up (`convstream labels --wait`)"
        )
    return out


def _lift(
    replay: list[dict[str, Any]], labels: list[dict[str, Any]], truth_path: str
) -> tuple[list[LiftEstimate], LiftScore] | None:
    """The labels' campaign lift scored against the campaign truth beside the truth file;
    None when there is none (a truth file from before holdouts)."""
    from convstream.stream.lift_cli import lift_of

    path = campaign_truth_path(truth_path)
    if not path.exists():
        return None
    estimates, score = lift_of(replay, labels, read_campaigns(path))
    assert score is not None
    return estimates, score


def has_incremental(labels: list[dict[str, Any]]) -> bool:
    """Whether labels carry ``incremental_probability`` (the worker's do not yet).

    >>> has_incremental([{"incremental_probability": None}]), has_incremental([{}])
    (True, False)
    """
    return any("incremental_probability" in label for label in labels)


def incrementality_of(
    labels: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    replay: list[dict[str, Any]] | None,
) -> tuple[IncrementalityScore, dict[str, float | None] | None]:
    """The labels' incremental probabilities against the truth; with the replay, beside the
    same estimator trained on the truth (the oracle, whose probabilities come second)."""
    oracle = None
    if replay is not None:
        from convstream.core.incrementality_replay import replay_scores

        true_p = {
            t["conversion_key"]: float(t.get("incremental_probability") or 0.0) for t in truth
        }
        oracle = replay_scores(replay, labels, truth=true_p)
    return score_incrementality(labels, truth, oracle), oracle


def run_evaluate(args: argparse.Namespace) -> int:
    labels = read_labels(args.labels)
    truth = read_truth(args.truth)
    report = evaluate(labels, truth)
    reports = {"worker": report.as_dict()}
    lift: tuple[list[LiftEstimate], LiftScore] | None = None
    replay: list[dict[str, Any]] | None = None
    # Which labels' incremental fields are scored: the worker's when they have them, else
    # the offline model's (from --replay).
    incremental_source, incremental_labels = "labels", labels
    warnings = problems(reports["worker"], min_coverage=args.min_coverage)
    if args.replay:
        from convstream.core.engine import run_offline
        from convstream.core.matching.baseline import DeterministicOnly, RuleBaseline
        from convstream.core.matching.model import MatchModel

        replay = read_replay(args.replay)
        for name, factory in (
            ("model offline", MatchModel),
            ("rule baseline", RuleBaseline),
            ("deterministic", DeterministicOnly),
        ):
            offline = run_offline(replay, factory, partitions=args.partitions)
            reports[name] = evaluate(offline, truth).as_dict()
            if name == "model offline" and not has_incremental(labels):
                incremental_source, incremental_labels = "offline labels", offline
        for problem in problems(
            reports["model offline"], min_coverage=args.min_coverage, source="offline labels"
        ):
            warnings.append(f"--replay {args.replay}: {problem}")
        lift = _lift(replay, labels, args.truth)
    incremental = oracle = None
    if has_incremental(incremental_labels):
        incremental, oracle = incrementality_of(incremental_labels, truth, replay)
    if args.report:
        from convstream.stream.report import render_report

        # The worker's labels' charts; the Qini chart of whichever labels have the fields.
        page = render_report(labels, truth, args.report, incremental_labels, oracle)
        print(f"wrote {page}", file=sys.stderr)
    if args.json:
        out: dict[str, Any] = dict(reports)
        if lift is not None:
            out["lift"] = lift[1].as_dict()
        if incremental is not None:
            out["incrementality"] = {"source": incremental_source, **incremental.as_dict()}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.format_table())
        if len(reports) > 1:
            print()
            print(side_by_side(reports))
        if lift is not None:
            print()
            print("campaign lift from the labels' converters and the replay's ghost impressions")
            print(format_lift_table(*lift))
            print(format_summary(lift[1]))
        if incremental is not None:
            print()
            print(f"incrementality of the {incremental_source}")
            print(format_incrementality(incremental))
        if args.explain:
            print()
            print(GLOSSARY)
    for warning in warnings:
        print(f"convstream evaluate: warning: {warning}", file=sys.stderr)
    return 1 if warnings else 0
