"""``convstream lift``: each campaign's lift over a replay, from its ghosts and its labels; with
the truth, the labels' incremental probabilities scored too (beside the truth-trained oracle)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from convstream.core.incrementality_evaluation import format_incrementality
from convstream.core.lift import LiftEstimate
from convstream.core.lift_evaluation import LiftScore, format_lift_table, format_summary, score_lift
from convstream.core.lift_replay import (
    conversions_from_labels,
    conversions_from_truth,
    exposures,
    track,
)
from convstream.stream.errors import UserError
from convstream.stream.evaluate_cli import has_incremental, incrementality_of
from convstream.stream.inputs import read_campaigns, read_labels, read_replay, read_truth
from convstream.synth.generate import campaign_truth_path

Row = dict[str, Any]


def lift_of(
    replay: list[Row], labels: list[Row], campaigns: list[Row] | None
) -> tuple[list[LiftEstimate], LiftScore | None]:
    """Estimates from the replay's exposures and the labels' users; scored when ``campaigns``."""
    estimates = track(exposures(replay), conversions_from_labels(labels)).estimates()
    return estimates, score_lift(estimates, campaigns) if campaigns is not None else None


def lift_problems(estimates: list[LiftEstimate], score: LiftScore | None) -> list[str]:
    """Why the figures should not be trusted: no holdout at all, or a foreign truth.

    >>> lift_problems([], None)[0][:44]
    'no campaign of the replay has a held-out use'
    """
    out = []
    if not any(e.holdout_users for e in estimates):
        out.append(
            "no campaign of the replay has a held-out user (no impression with holdout: true), "
            "so there is no lift to measure"
        )
    if score is not None and score.missing:
        sample = ", ".join(score.missing[:3])
        out.append(
            f"{len(score.missing)} campaigns of the truth are not in the replay (e.g. {sample}): "
            "do the replay and the truth belong together?"
        )
    return out


def run_lift(args: argparse.Namespace) -> int:
    replay = read_replay(args.replay)
    truth = read_truth(args.truth) if args.truth else None
    campaigns = None
    if args.campaigns or truth is not None:
        campaigns = read_campaigns(args.campaigns or campaign_truth_path(args.truth))
    incremental = None
    if args.oracle:
        if truth is None:
            raise UserError("--oracle takes the converters from the truth: give --truth too")
        source = "truth converters (oracle)"
        converted = conversions_from_truth(truth)
        estimates = track(exposures(replay), converted).estimates()
        score = score_lift(estimates, campaigns) if campaigns is not None else None
    else:
        if args.labels:
            labels, source = read_labels(args.labels), f"labels of {Path(args.labels).name}"
        else:
            from convstream.core.engine import run_offline
            from convstream.core.matching.model import MatchModel

            labels, source = (
                run_offline(replay, MatchModel, partitions=args.partitions),
                ("offline labels"),
            )
        estimates, score = lift_of(replay, labels, campaigns)
        if truth is not None and has_incremental(labels):
            incremental = incrementality_of(labels, truth, replay)[0]
    if args.json:
        out: dict[str, Any] = {"converters": source, "campaigns": [e.as_dict() for e in estimates]}
        if score is not None:
            out["score"] = score.as_dict()
        if incremental is not None:
            out["incrementality"] = incremental.as_dict()
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"lift per campaign, intent to treat; converters from the {source}")
        print(format_lift_table(estimates, score))
        if score is not None:
            print()
            print(format_summary(score))
        if incremental is not None:
            print()
            print(format_incrementality(incremental))
    warnings = lift_problems(estimates, score)
    for warning in warnings:
        print(f"convstream lift: warning: {warning}", file=sys.stderr)
    return 1 if warnings else 0
