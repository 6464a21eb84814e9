"""``python -m research.match_split --shape hard --seed 1``: where the model path's confidence is
off.

A probabilistic decision's confidence is the product of two factors (``conversion.py``):
P(the converter is among the candidates) and P(the best candidate is the converter | among).
ECE over all labels hides which factor is off and where, because deterministic matches are most
of the labels. This runs a shape (a generator profile or a ``research.match_shapes`` shape) through
the offline engine, keeps each conversion's last probabilistic decision with both factors as the
model read them then, and sets them against the truth, by context ("plain": no deterministic
identifier; "unmatched": one that matched nobody) and by whether the decision became a label
(confidence at or above the threshold) or "none". Feedback reaches only a sample of these
(``feedback_rate``, 10 % by default), and that is all the model ever learns about strangers
beyond the counts; the ``labelled`` rows are where ECE is measured. ``--bins`` adds every
decision by its confidence, labelled or not, and how often it was right: below the 0.5
threshold, what recall the threshold leaves.

>>> rows = [Row("plain", True, 0.9, 0.8, True, True), Row("plain", True, 0.7, 0.9, False, False)]
>>> summarize(rows)[("plain", True)]
{'decisions': 2, 'among': 0.8, 'among_actual': 0.5, 'pick': 0.8, 'pick_actual': 1.0, 'n_among': 1}
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from convstream.core.engine import run_offline
from convstream.core.evaluation import reliability
from convstream.core.matching.model import MatchDecision
from convstream.synth.generate import PROFILES, config_from_args, generate
from research.match_bound import Decision, RecordingMatchModel, split_values
from research.match_shapes import SHAPES


@dataclass(frozen=True)
class Row:
    """One conversion's last probabilistic decision, with its two factors and the truth."""

    ctx: str
    labelled: bool
    among: float
    pick: float
    among_actual: bool  # the converter was among the candidates
    pick_actual: bool  # the best candidate was the converter


class FactorRecordingModel(RecordingMatchModel):
    """``research.match_bound``'s recording model that also keeps, per conversion, the two factors
    of each probabilistic decision as the model read them then."""

    def __init__(self, log: dict[str, Decision], factors: dict[str, tuple[float, float]]) -> None:
        super().__init__(log)
        self.factors = factors

    def decide(self, conv: dict[str, Any], answers: dict, probes: dict) -> MatchDecision:
        decision = super().decide(conv, answers, probes)
        snap = decision.snapshot
        if "x" in snap:
            conflict = None if snap.get("cf") is None else bool(snap["cf"])
            factors = self.conversion.factors(snap["x"], snap["ctx"], conflict)
            self.factors[conv["conversion_key"]] = factors
        return decision


def split_rows(shape: str, seed: int, **size: Any) -> list[Row]:
    """The rows of ``shape`` (a profile or a ``SHAPES`` name) with ``seed``; ``size``
    overrides the generator's (``users``, ``days``)."""
    profile, overrides = SHAPES.get(shape, (shape, {}))
    lines, truth = generate(config_from_args(profile, seed=seed, **overrides, **size))
    log: dict[str, Decision] = {}
    factors: dict[str, tuple[float, float]] = {}
    run_offline(lines, lambda: FactorRecordingModel(log, factors))
    users = {row["conversion_key"]: row["user_id"] for row in truth}
    rows = []
    for key, decision in log.items():
        snap = decision.snapshot
        if "x" not in snap or key not in users:
            continue  # the last decision was deterministic or had no candidate
        user, pool = users[key], {u for u, _ in snap["c"]}
        among, pick = factors[key]
        labelled = decision.user_id is not None
        rows.append(Row(snap["ctx"], labelled, among, pick, user in pool, snap["u"] == user))
    return rows


def summarize(rows: list[Row]) -> dict[tuple[str, bool], dict[str, Any]]:
    """Per (context, labelled): mean predicted and actual P(among), and the same for P(pick)
    over the decisions whose converter was among the candidates."""
    groups: dict[tuple[str, bool], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.ctx, row.labelled)].append(row)
    out = {}
    for group, members in sorted(groups.items()):
        among = [r for r in members if r.among_actual]
        n, k = len(members), len(among)
        out[group] = {
            "decisions": n,
            "among": round(sum(r.among for r in members) / n, 3),
            "among_actual": round(k / n, 3),
            "pick": round(sum(r.pick for r in among) / k, 3) if k else None,
            "pick_actual": round(sum(r.pick_actual for r in among) / k, 3) if k else None,
            "n_among": k,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m research.match_split", description=__doc__.split("\n>>>")[0]
    )
    names = [*PROFILES, *SHAPES]
    parser.add_argument("--shape", action="append", help=f"repeatable: {', '.join(names)}")
    parser.add_argument("--seed", action="append", help="generator seed(s) (default: 1)")
    parser.add_argument(
        "--bins", action="store_true", help="also every decision by confidence, labelled or not"
    )
    args = parser.parse_args()
    shapes = split_values(args.shape, ["default"])
    unknown = [s for s in shapes if s not in names]
    if unknown:
        parser.error(f"unknown shape(s): {', '.join(unknown)}")
    seeds = [int(s) for s in split_values(args.seed, ["1"])]
    print(
        "| shape | seed | context | decisions | P(among) predicted / actual "
        "| P(pick) predicted / actual (of among) |"
    )
    print("|---|---:|---|---:|---|---|")
    binned: list[str] = []
    for seed in seeds:
        for shape in shapes:
            rows = split_rows(shape, seed)
            pairs = [(r.among * r.pick, r.pick_actual) for r in rows] if args.bins else []
            for b in reliability(pairs):
                if b["count"]:
                    binned.append(
                        f"| {shape} | {seed} | {b['lo']:.1f} | {b['count']} "
                        f"| {b['mean_confidence']:.3f} | {b['accuracy']:.3f} |"
                    )
            for (ctx, labelled), s in summarize(rows).items():
                where = f"{ctx}, {'labelled' if labelled else 'none'}"
                pick = "n/a" if s["pick"] is None else f"{s['pick']:.3f} / {s['pick_actual']:.3f}"
                print(
                    f"| {shape} | {seed} | {where} | {s['decisions']} "
                    f"| {s['among']:.3f} / {s['among_actual']:.3f} | {pick} ({s['n_among']}) |",
                    flush=True,
                )
    if binned:
        print("\n| shape | seed | confidence from | decisions | mean confidence | right |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(binned))


if __name__ == "__main__":
    main()
