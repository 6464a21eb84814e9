"""Campaign lift estimates against the generator's campaign truth, and the lift table.

Per campaign: the error of the lift estimate, whether its 95 % interval covers the true lift
(and the incremental interval the true incremental conversions); over campaigns: coverage among
campaigns with an interval, and the share of zero-lift campaigns flagged not significant.

>>> from convstream.core.lift import Arm, CampaignState, estimate
>>> e = estimate("c", CampaignState("a", Arm(100, 20.0, 20.0), Arm(100, 10.0, 10.0)))
>>> score = score_lift([e], [{"campaign_id": "c", "true_lift": 0.5, "true_incremental": 8.0,
...                           "zero_lift": False}])
>>> score.coverage, score.rows[0].lift_error, score.zero_lift_not_significant
(1.0, 0.5, None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from convstream.core.lift import LiftEstimate


@dataclass(frozen=True, slots=True)
class CampaignScore:
    """One campaign's estimate beside its truth."""

    estimate: LiftEstimate
    true_lift: float | None
    true_incremental: float | None
    zero_lift: bool
    lift_error: float | None  # estimate - truth
    covered: bool | None  # None: no interval, or no true lift
    incremental_covered: bool | None


@dataclass(frozen=True, slots=True)
class LiftScore:
    """Every campaign's score and the figures over campaigns (None: no campaign to judge)."""

    rows: list[CampaignScore]
    campaigns: int
    with_interval: int  # campaigns with a lift interval and a true lift
    coverage: float | None
    incremental_coverage: float | None
    zero_lift_campaigns: int
    zero_lift_not_significant: float | None
    significant: int
    mean_abs_lift_error: float | None
    missing: list[str]  # campaigns of the truth the estimates do not have

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _within(low: float | None, high: float | None, value: float | None) -> bool | None:
    if low is None or high is None or value is None:
        return None
    return low <= value <= high


def score_lift(
    estimates: Iterable[LiftEstimate], campaign_truth: Iterable[Mapping[str, Any]]
) -> LiftScore:
    """Score ``estimates`` against the campaign truth rows (``<truth>.campaigns.jsonl``)."""
    truth = {row["campaign_id"]: row for row in campaign_truth}
    rows: list[CampaignScore] = []
    for e in estimates:
        t = truth.get(e.campaign_id)
        if t is None:
            continue
        true_lift, true_inc = t.get("true_lift"), t.get("true_incremental")
        error = e.lift - true_lift if e.lift is not None and true_lift is not None else None
        rows.append(
            CampaignScore(
                estimate=e,
                true_lift=true_lift,
                true_incremental=true_inc,
                zero_lift=bool(t.get("zero_lift")),
                lift_error=error,
                covered=_within(e.lift_low, e.lift_high, true_lift),
                incremental_covered=_within(e.incremental_low, e.incremental_high, true_inc),
            )
        )
    judged = [r for r in rows if r.covered is not None]
    judged_inc = [r for r in rows if r.incremental_covered is not None]
    zero = [r for r in rows if r.zero_lift]
    errors = [abs(r.lift_error) for r in rows if r.lift_error is not None]
    seen = {r.estimate.campaign_id for r in rows}
    return LiftScore(
        rows=rows,
        campaigns=len(rows),
        with_interval=len(judged),
        coverage=_ratio(sum(bool(r.covered) for r in judged), len(judged)),
        incremental_coverage=_ratio(
            sum(bool(r.incremental_covered) for r in judged_inc), len(judged_inc)
        ),
        zero_lift_campaigns=len(zero),
        zero_lift_not_significant=_ratio(sum(not r.estimate.significant for r in zero), len(zero)),
        significant=sum(r.estimate.significant for r in rows),
        mean_abs_lift_error=math.fsum(errors) / len(errors) if errors else None,
        missing=sorted(c for c in truth if c not in seen),
    )


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _interval(low: float | None, high: float | None, digits: int = 2) -> str:
    if low is None or high is None:
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def format_lift_table(estimates: Iterable[LiftEstimate], score: LiftScore | None = None) -> str:
    """One line per campaign, as ``convstream quality`` prints; with ``score``, the truth too.

    >>> from convstream.core.lift import Arm, CampaignState, estimate
    >>> e = estimate("c", CampaignState("a", Arm(100, 20.0, 20.0), Arm(100, 10.0, 10.0)))
    >>> print(format_lift_table([e]).splitlines()[1])  # doctest: +NORMALIZE_WHITESPACE
    c  a  100  100  20  10  0.200  0.100  10.0  [0.15, 19.85]  1.000  [-0.02, 3.07]  yes
    """
    by_campaign = {r.estimate.campaign_id: r for r in score.rows} if score else {}
    head = (
        f"{'campaign':<12} {'advertiser':<10} {'exp.users':>9} {'hold.users':>10} "
        f"{'exp.conv':>8} {'hold.conv':>9} {'exp.rate':>8} {'hold.rate':>9} "
        f"{'incremental':>11} {'95% CI':>16} {'lift':>7} {'95% CI':>16} {'signif.':>7}"
    )
    if score is not None:
        head += f" {'true lift':>9} {'covered':>7}"
    lines = [head]
    for e in estimates:
        line = (
            f"{e.campaign_id:<12} {e.advertiser_id:<10} {e.exposed_users:>9} "
            f"{e.holdout_users:>10} {e.exposed_conversions:>8g} {e.holdout_conversions:>9g} "
            f"{_num(e.exposed_rate):>8} {_num(e.holdout_rate):>9} "
            f"{_num(e.incremental, 1):>11} {_interval(e.incremental_low, e.incremental_high):>16} "
            f"{_num(e.lift):>7} {_interval(e.lift_low, e.lift_high):>16} "
            f"{'yes' if e.significant else 'no':>7}"
        )
        row = by_campaign.get(e.campaign_id)
        if row is not None:
            covered = "-" if row.covered is None else ("yes" if row.covered else "NO")
            zero = " (zero lift)" if row.zero_lift else ""
            line += f" {_num(row.true_lift):>9} {covered:>7}{zero}"
        lines.append(line)
    return "\n".join(lines)


def format_summary(score: LiftScore) -> str:
    """The figures over campaigns, in two lines.

    >>> print(format_summary(score_lift([], [])))
    lift vs truth: 0 campaigns, 0 with an interval: coverage of true lift -, of true incremental -
      zero-lift campaigns 0, flagged not significant -; significant 0; mean |lift error| -
    """
    return (
        f"lift vs truth: {score.campaigns} campaigns, {score.with_interval} with an interval: "
        f"coverage of true lift {_num(score.coverage)}, "
        f"of true incremental {_num(score.incremental_coverage)}\n"
        f"  zero-lift campaigns {score.zero_lift_campaigns}, flagged not significant "
        f"{_num(score.zero_lift_not_significant)}; significant {score.significant}; "
        f"mean |lift error| {_num(score.mean_abs_lift_error)}"
    )
