"""Rule baselines: fixed priority and fixed confidences."""

from __future__ import annotations

import pytest

from convstream.core.matching.baseline import RULE_CONFIDENCE, DeterministicOnly, RuleBaseline

T = 1_000_000
ORDER = ["click", "em", "ph", "dev", "ext", "ipua", "ip"]


def _answers(kinds: list[str]) -> dict:
    out = {}
    for kind in kinds:
        out[f"{kind}:k"] = {
            "key": f"{kind}:k",
            "kind": kind,
            "degree": 2,
            # the most recent user of each kind is named after the kind
            "users": [[f"u-{kind}", 0, T - 10, 1], [f"old-{kind}", 0, T - 99, 5]],
        }
    return out


@pytest.mark.parametrize("i", range(len(ORDER)))
def test_rule_priority_and_confidence(i):
    present = ORDER[i:]
    d = RuleBaseline().decide({"ts": T}, _answers(present), {})
    kind = ORDER[i]
    assert d.user_id == f"u-{kind}"
    assert d.confidence == RULE_CONFIDENCE[kind]
    assert d.method == ("model" if kind in ("ipua", "ip") else f"deterministic:{kind}")


def test_rule_confidences_are_ordered():
    assert [RULE_CONFIDENCE[k] for k in ORDER] == sorted(RULE_CONFIDENCE.values(), reverse=True)
    assert (RULE_CONFIDENCE["click"], RULE_CONFIDENCE["ipua"], RULE_CONFIDENCE["ip"]) == (
        1.0,
        0.6,
        0.3,
    )


def test_deterministic_only_ignores_ip_and_user_agent():
    assert DeterministicOnly().decide({"ts": T}, _answers(["ipua", "ip"]), {}).user_id is None
    assert DeterministicOnly().decide({"ts": T}, _answers(["dev", "ip"]), {}).user_id == "u-dev"


def test_empty_answers_and_learning_hooks():
    base = RuleBaseline()
    empty = {"ip:k": {"key": "ip:k", "kind": "ip", "degree": 0, "users": []}}
    d = base.decide({"ts": T}, empty, {})
    assert (d.user_id, d.method, d.confidence) == (None, "none", 0.0)
    base.learn_self_supervised({}, {}, {}, d)
    base.learn_feedback(d.snapshot, "u1")
    assert RuleBaseline.loads(base.dumps()).decide({"ts": T}, _answers(["ip"]), {}).user_id
