"""Rule baselines with the match model's interface, to run side by side with it.

``RuleBaseline``: the first identifier kind with a user wins, in the order click > em > ph >
dev > ext > (ip, user agent) > ip, taking the most recently seen user, at a fixed confidence.
``DeterministicOnly``: the same without the probabilistic kinds.

>>> answers = {"ip:1": {"key": "ip:1", "kind": "ip", "degree": 2,
...                     "users": [["u2", 0, 90, 1], ["u1", 0, 80, 4]]},
...            "ph:h": {"key": "ph:h", "kind": "ph", "degree": 1, "users": [["u1", 0, 5, 1]]}}
>>> d = RuleBaseline().decide({"ts": 100}, answers, {})
>>> d.user_id, d.method, d.confidence
('u1', 'deterministic:ph', 0.95)
>>> DeterministicOnly().decide({"ts": 100}, {"ip:1": answers["ip:1"]}, {}).method
'none'
"""

from __future__ import annotations

import pickle
from typing import Any

from convstream.core.identity import KIND_RANK
from convstream.core.matching.model import MatchDecision

RULE_CONFIDENCE: dict[str, float] = {
    "click": 1.0,
    "em": 0.95,
    "ph": 0.95,
    "dev": 0.9,
    "ext": 0.9,
    "ipua": 0.6,
    "ip": 0.3,
}


def _method(kind: str) -> str:
    return "model" if kind in ("ipua", "ip") else f"deterministic:{kind}"


class RuleBaseline:
    """Fixed-priority rules; learns nothing (the learning hooks are no-ops)."""

    kinds: tuple[str, ...] = ("click", "em", "ph", "dev", "ext", "ipua", "ip")

    def decide(self, conv: dict[str, Any], answers: dict, probes: dict) -> MatchDecision:
        usable = [a for a in answers.values() if a["kind"] in self.kinds and a["users"]]
        if not usable:
            return MatchDecision(None, 0.0, "none", ["no candidate"], {"m": "none"})
        ans = min(usable, key=lambda a: KIND_RANK[a["kind"]])
        user = ans["users"][0][0]
        kind = ans["kind"]
        conf = RULE_CONFIDENCE[kind]
        reasons = [f"rule: most recent user on {kind} (degree {ans['degree']})"]
        return MatchDecision(user, conf, _method(kind), reasons, {"m": kind, "u": user})

    def learn_self_supervised(self, conv: Any, answers: Any, probes: Any, decision: Any) -> None:
        return None

    def learn_feedback(self, snapshot: Any, true_user_id: str | None) -> None:
        return None

    def self_supervised_example(
        self, conv: Any, answers: Any, probes: Any, decision: Any
    ) -> dict[str, Any] | None:
        return None

    @staticmethod
    def feedback_example(snapshot: Any, true_user_id: str | None) -> dict[str, Any] | None:
        return None

    def learn_example(self, example: dict[str, Any]) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}

    def dumps(self) -> bytes:
        return pickle.dumps(self)

    @classmethod
    def loads(cls, data: bytes) -> Any:
        return pickle.loads(data)


class DeterministicOnly(RuleBaseline):
    """Deterministic identifiers only: no match without click, em, ph, dev or ext."""

    kinds = ("click", "em", "ph", "dev", "ext")
