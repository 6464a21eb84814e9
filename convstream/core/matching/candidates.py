"""Which users are worth probing for a conversion: deterministic ones, then the likeliest others.

A cheap prior ranks probabilistic candidates from the lookup answers alone (same IP and user
agent beats same IP; a recent, frequent sighting on a low-degree address beats an old one on a
carrier NAT), so the probe fan-out stays bounded however many users share an address.

>>> answers = {"ip:9": {"key": "ip:9", "kind": "ip", "degree": 3,
...                     "users": [["u1", 0, 900, 1], ["u2", 0, 800, 9], ["u3", 0, 10, 1]]},
...            "em:h": {"key": "em:h", "kind": "em", "degree": 1, "users": [["u9", 0, 5, 1]]}}
>>> select_candidates({"ts": 1_000}, answers, max_candidates=2)
['u9', 'u2', 'u1']
"""

from __future__ import annotations

import math
from typing import Any

from convstream.core.identity import DETERMINISTIC_KINDS, KIND_RANK, PROBABILISTIC_KINDS

#: Deterministic users beyond this many (a device shared by a whole family) are not probed.
MAX_DETERMINISTIC = 8


def deterministic_users(answers: dict[str, dict[str, Any]]) -> list[str]:
    """Users on deterministic answers, strongest kind first, then most recent first.

    >>> deterministic_users({"dev:d": {"kind": "dev", "users": [["a", 0, 5, 1]]},
    ...                      "click:c": {"kind": "click", "users": [["b", 0, 1, 1]]}})
    ['b', 'a']
    """
    ordered = sorted(
        (a for a in answers.values() if a["kind"] in DETERMINISTIC_KINDS),
        key=lambda a: KIND_RANK[a["kind"]],
    )
    out: dict[str, None] = {}
    for ans in ordered:
        for row in ans["users"]:
            out.setdefault(row[0], None)
    return list(out)[:MAX_DETERMINISTIC]


def prior_scores(conv: dict[str, Any], answers: dict[str, dict[str, Any]]) -> dict[str, float]:
    """A cheap log-odds-like prior for every probabilistic candidate (answers only)."""
    ts = conv["ts"]
    scores: dict[str, float] = {}
    for ans in answers.values():
        if ans["kind"] not in PROBABILISTIC_KINDS:
            continue
        bonus = 2.0 if ans["kind"] == "ipua" else 0.0
        deg = math.log(max(ans["degree"], 1))
        for user, _first, last, count in ans["users"]:
            hours = max(ts - last, 0) / 3_600_000
            s = bonus - deg - 0.5 * math.log1p(hours) + 0.3 * math.log1p(count)
            scores[user] = max(scores.get(user, -math.inf), s)
    return scores


def select_candidates(
    conv: dict[str, Any], answers: dict[str, dict[str, Any]], max_candidates: int = 12
) -> list[str]:
    """Deterministic users (bounded by ``MAX_DETERMINISTIC``), then the ``max_candidates``
    probabilistic users with the best prior (ties broken by user id, so the order is stable).
    """
    det = deterministic_users(answers)
    seen = set(det)
    prior = prior_scores(conv, answers)
    ranked = sorted((u for u in prior if u not in seen), key=lambda u: (-prior[u], u))
    return det + ranked[:max_candidates]
