"""``convstream evaluate``: the worker's labels against truth, beside offline rule baselines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from convstream.core.evaluation import evaluate, load_jsonl

COLUMNS = (
    ("coverage", "coverage"),
    ("precision", "match precision"),
    ("recall", "match recall"),
    ("linkable_ceiling", "linkable ceiling"),
    ("recall_of_linkable", "recall / linkable"),
    ("ece", "ECE (matched)"),
    ("brier", "Brier (matched)"),
    ("attribution_accuracy", "attribution accuracy"),
    ("attribution_over_recall", "attribution / recall"),
    ("label_weight_precision", "label-weight precision"),
    ("duplicate_keys", "duplicate keys"),
)


def side_by_side(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    width = max(len(title) for _, title in COLUMNS) + 2
    lines = ["".ljust(width) + "".join(n.rjust(16) for n in names)]
    for key, title in COLUMNS:
        cells = []
        for n in names:
            value = reports[n].get(key)
            cells.append(_fmt(value).rjust(16))
        lines.append(title.ljust(width) + "".join(cells))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def run_evaluate(args: argparse.Namespace) -> int:
    labels = load_jsonl(args.labels)
    truth = load_jsonl(args.truth)
    report = evaluate(labels, truth)
    reports = {"worker": report.as_dict()}
    if args.report:
        from convstream.stream.report import render_report

        print(f"wrote {render_report(labels, truth, args.report)}", file=sys.stderr)
    if args.replay:
        from convstream.core.engine import run_offline
        from convstream.core.matching.baseline import DeterministicOnly, RuleBaseline
        from convstream.core.matching.model import MatchModel

        replay = load_jsonl(args.replay)
        for name, factory in (
            ("model offline", MatchModel),
            ("rule baseline", RuleBaseline),
            ("deterministic", DeterministicOnly),
        ):
            offline = run_offline(replay, factory, partitions=args.partitions)
            reports[name] = evaluate(offline, truth).as_dict()
    if args.json:
        print(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(report.format_table())
    if len(reports) > 1:
        print()
        print(side_by_side(reports))
    return 0
