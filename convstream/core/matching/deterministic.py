"""Deterministic matches: pick the user behind click / em / ph / dev / ext and rate the pick.

The pick prefers the user backed by the most (and strongest) deterministic identifiers; a
shared key (a family tablet's device id) counts for less. The confidence is a posterior mean per
*cell*: the kinds that back the user ("em", "em+ph"), or "<kind>:contested" when the key is
shared or other users hold other deterministic identifiers. It is learned from delayed feedback
and, more weakly, from agreement between identifiers that co-occur.

>>> answers = {"em:h": {"kind": "em", "degree": 1, "users": [["u1", 0, 5, 2]]},
...            "ph:h": {"kind": "ph", "degree": 1, "users": [["u1", 0, 4, 1]]}}
>>> pick = pick_deterministic(answers)
>>> pick.user_id, pick.kind, pick.cell
('u1', 'em', 'em+ph')
>>> DeterministicRates().confidence(pick.cell) >= 0.99
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from convstream.core.identity import DETERMINISTIC_KINDS, KIND_RANK
from convstream.core.matching.calibration import BetaRate

#: Prior precision of each kind alone, before any feedback: (mean, pseudo-count).
KIND_PRIORS: dict[str, tuple[float, float]] = {
    "click": (0.99, 20.0),
    "em": (0.97, 10.0),
    "ph": (0.96, 10.0),
    "dev": (0.93, 10.0),
    "ext": (0.95, 10.0),
}
#: Agreeing kinds: the prior mean is computed (noisy-OR); this is only its weight.
AGREE_PRIOR = (None, 20.0)
CONTESTED_PRIOR = (0.6, 5.0)
#: Weight of one co-occurrence agreement relative to one feedback outcome.
AGREEMENT_WEIGHT = 0.5


@dataclass(frozen=True)
class DeterministicPick:
    user_id: str
    kind: str  # the strongest kind backing the user
    kinds: tuple[str, ...]  # all deterministic kinds backing the user
    cell: str
    rivals: int  # other users on the deterministic answers


def _support(answers: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """user -> {kind: 1 / degree} over deterministic answers."""
    support: dict[str, dict[str, float]] = {}
    for ans in answers.values():
        if ans["kind"] not in DETERMINISTIC_KINDS:
            continue
        for row in ans["users"]:
            share = 1.0 / max(ans["degree"], len(ans["users"]), 1)
            support.setdefault(row[0], {})[ans["kind"]] = share
    return support


def pick_deterministic(
    answers: dict[str, dict[str, Any]], tiebreak: dict[str, float] | None = None
) -> DeterministicPick | None:
    """The deterministic pick, or None when no deterministic answer has a user.

    ``tiebreak`` (e.g. the pair model's scores) orders users with equal support.
    """
    support = _support(answers)
    if not support:
        return None
    tiebreak = tiebreak or {}

    def strength(user: str) -> tuple[float, float]:
        kinds = support[user]
        votes = sum(
            math.log(KIND_PRIORS[k][0] / (1 - KIND_PRIORS[k][0])) * s for k, s in kinds.items()
        )
        return votes, tiebreak.get(user, 0.0)

    best = max(sorted(support), key=strength)
    kinds = tuple(sorted(support[best], key=KIND_RANK.__getitem__))
    shared = any(s < 1.0 for s in support[best].values())
    rivals = len(support) - 1
    cell = f"{kinds[0]}:contested" if rivals or shared else "+".join(kinds)
    return DeterministicPick(best, kinds[0], kinds, cell, rivals)


def kind_tops(answers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The most recent user of each deterministic kind present in ``answers``."""
    tops: dict[str, str] = {}
    for ans in answers.values():
        if ans["kind"] in DETERMINISTIC_KINDS and ans["users"]:
            tops[ans["kind"]] = ans["users"][0][0]
    return tops


class DeterministicRates:
    """Posterior precision of deterministic picks, per cell.

    A single kind has a Beta posterior fed by feedback and co-occurrence agreement. Kinds that
    agree on one user ("em+ph") start from the noisy-OR of their single-kind precisions (their
    errors taken as independent) worth ``AGREE_PRIOR[1]`` outcomes, and feedback refines it.
    """

    def __init__(self) -> None:
        self.cells: dict[str, BetaRate] = {}
        self.outcomes: dict[str, list[float]] = {}  # compound cell -> [correct, wrong]

    def _kind(self, kind: str) -> BetaRate:
        if kind not in self.cells:
            self.cells[kind] = BetaRate(*KIND_PRIORS.get(kind, (0.9, 10.0)))
        return self.cells[kind]

    def confidence(self, cell: str) -> float:
        if ":" not in cell and "+" not in cell:
            return self._kind(cell).mean
        if cell.endswith(":contested"):
            prior, weight = CONTESTED_PRIOR
        else:
            wrong = math.prod(1.0 - self._kind(k).mean for k in cell.split("+"))
            prior, weight = 1.0 - wrong, AGREE_PRIOR[1]
        good, bad = self.outcomes.get(cell, (0.0, 0.0))
        return (prior * weight + good) / (weight + good + bad)

    def feedback(self, cell: str, correct: bool) -> None:
        if ":" not in cell and "+" not in cell:
            self._kind(cell).update(correct)
            return
        counts = self.outcomes.setdefault(cell, [0.0, 0.0])
        counts[0 if correct else 1] += 1.0

    def agreement(self, tops: dict[str, str]) -> None:
        """When kinds co-occur, each kind alone is right when it names the others' user
        (``tops``: :func:`kind_tops` of a conversion's answers)."""
        for kind, user in tops.items():
            others = {u for k, u in tops.items() if k != kind}
            if len(others) == 1:
                self._kind(kind).update(user in others, AGREEMENT_WEIGHT)
