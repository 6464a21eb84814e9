"""MatchModel: self-supervised labelling, cold start, feedback, checkpoints."""

from __future__ import annotations

import copy
import json
import random

import pytest

from convstream.core.identity import DETERMINISTIC_KINDS
from convstream.core.matching.model import MatchDecision, MatchModel

T = 1_767_571_200_000


def _answer(key: str, degree: int, rows: list[list]) -> dict:
    return {"key": key, "kind": key.split(":", 1)[0], "degree": degree, "users": rows}


def _probe(user: str, last_adv: int | None = None, click: bool = False) -> dict:
    rows = (
        [] if last_adv is None else [[last_adv, "click" if click else "view", "e", "a", "c", "d"]]
    )
    return {
        "user_id": user,
        "engagements": rows,
        "last_adv_ts": last_adv,
        "last_click_ts": last_adv if click else None,
        "n_adv": len(rows),
        "n_clicks": int(click and bool(rows)),
    }


def _conversion(em: bool = True) -> tuple[dict, dict, dict]:
    conv = {
        "conversion_key": "a:Purchase:1",
        "advertiser_id": "a",
        "ts": T,
        "sources": ["pixel", "capi"],
        "user_data": {
            "em": "h" if em else None,
            "client_ip_address": "1.2.3.4",
            "client_user_agent": "UA",
        },
    }
    answers = {
        "ip:1.2.3.4": _answer(
            "ip:1.2.3.4",
            3,
            [["u1", 0, T - 60_000, 4], ["u2", 0, T - 120_000, 2], ["u3", 0, T - 86_400_000, 1]],
        ),
        "ipua:1.2.3.4|x": _answer(
            "ipua:1.2.3.4|x", 2, [["u2", 0, T - 120_000, 2], ["u1", 0, T - 60_000, 3]]
        ),
    }
    if em:
        answers["em:h"] = _answer("em:h", 1, [["u1", 0, T - 10**7, 1]])
    probes = {"u1": _probe("u1", T - 3_600_000, click=True), "u2": _probe("u2"), "u3": _probe("u3")}
    return conv, answers, probes


class _Spy:
    def __init__(self, model: MatchModel):
        self.pairs: list[tuple[dict, bool]] = []
        self.conversions: list[tuple[str, str, set]] = []
        learn_pair, learn_conv = model.pair.learn, model.conversion.learn_platform

        def pair(f, y, weight=1.0):
            self.pairs.append((dict(f), y))
            learn_pair(f, y, weight)

        def conversion(x, best, truth, pool):
            self.conversions.append((best, truth, set(pool)))
            learn_conv(x, best, truth, pool)

        model.pair.learn, model.conversion.learn_platform = pair, conversion


def test_deterministic_match_labels_probabilistic_candidates_without_deterministic_features():
    model = MatchModel()
    spy = _Spy(model)
    conv, answers, probes = _conversion(em=True)
    decision = model.decide(conv, answers, probes)
    assert (decision.user_id, decision.method) == ("u1", "deterministic:em")
    model.learn_self_supervised(conv, answers, probes, decision)
    labels = {}
    for f, y in spy.pairs:
        assert all(f[k] == 0.0 for k in (*DETERMINISTIC_KINDS, "det_shared"))
        labels[next(u for u in ("u1", "u2", "u3") if _matches(f, u, answers))] = y
    assert labels == {"u1": True, "u2": False, "u3": False}
    assert spy.conversions and spy.conversions[0][1] == "u1"
    assert spy.conversions[0][2] == {"u1", "u2", "u3"}


def _matches(f: dict, user: str, answers: dict) -> bool:
    """Identify a pair's user from its features (rank on the ip answer)."""
    rank = [r[0] for r in answers["ip:1.2.3.4"]["users"]].index(user)
    return f["ip_rank"] == float(rank)


def test_probabilistic_decision_does_not_learn_pairs():
    model = MatchModel()
    spy = _Spy(model)
    conv, answers, probes = _conversion(em=False)
    decision = model.decide(conv, answers, probes)
    model.learn_self_supervised(conv, answers, probes, decision)
    assert spy.pairs == [] and spy.conversions == []
    assert len(model.conversion.label_shift["plain"].outputs) == 1


def test_cold_start_prefers_same_ip_and_ua_and_is_conservative():
    model = MatchModel()
    conv, answers, probes = _conversion(em=False)
    decision = model.decide(conv, answers, probes)
    assert decision.method in ("model", "none")
    best = decision.snapshot["u"]
    assert best == "u1"  # same ip+ua, most recent, clicked the advertiser's ad
    assert decision.snapshot["p"] < 0.95
    assert any("ip+ua" in reason for reason in decision.explanation)
    json.dumps(decision.snapshot)  # JSON-able
    # A carrier-grade NAT address alone is not enough to name anybody.
    cgnat = {"ip:9.9.9.9": _answer("ip:9.9.9.9", 400, [["u5", 0, T - 10**6, 1]])}
    conv2 = dict(conv, user_data={"client_ip_address": "9.9.9.9"})
    assert model.decide(conv2, cgnat, {"u5": _probe("u5")}).user_id is None


def test_threshold_decides_between_user_and_none():
    conv, answers, probes = _conversion(em=False)
    high = MatchModel(threshold=0.999).decide(conv, answers, probes)
    low = MatchModel(threshold=0.01).decide(conv, answers, probes)
    assert high.user_id is None and high.method == "none" and high.confidence == 0.0
    assert low.user_id == "u1" and low.method == "model" and low.confidence > 0.01


def test_feedback_that_the_converter_is_nobody_lowers_confidence():
    model = MatchModel()
    conv, answers, probes = _conversion(em=False)
    before = model.decide(conv, answers, probes)
    for _ in range(40):
        d = model.decide(conv, answers, probes)
        model.learn_feedback(d.snapshot, None)
    after = model.decide(conv, answers, probes)
    assert after.snapshot["p"] < before.snapshot["p"] - 0.2
    stats = model.stats()
    assert stats["n_feedback"] == 40
    assert {"auc", "log_loss", "n_learned", "ece"} <= set(stats)


def test_deterministic_confidence_learns_from_feedback():
    model = MatchModel()
    conv, answers, probes = _conversion(em=True)
    base = model.decide(conv, answers, probes).confidence
    for _ in range(20):
        model.learn_feedback(model.decide(conv, answers, probes).snapshot, "u2")
    assert model.decide(conv, answers, probes).confidence < base - 0.3


def _random_case(rng: random.Random) -> tuple[dict, dict, dict, str | None]:
    conv, answers, probes = _conversion(em=rng.random() < 0.5)
    answers = copy.deepcopy(answers)
    for row in answers["ip:1.2.3.4"]["users"]:
        row[2] = T - rng.randrange(1, 10**8)
    answers["ip:1.2.3.4"]["degree"] = rng.randrange(3, 50)
    truth = rng.choice(["u1", "u1", "u2", None])
    return conv, answers, probes, truth


def test_dumps_loads_round_trip_gives_identical_predictions():
    rng = random.Random(5)
    model = MatchModel()
    for _ in range(60):
        conv, answers, probes, truth = _random_case(rng)
        d = model.decide(conv, answers, probes)
        model.learn_self_supervised(conv, answers, probes, d)
        model.learn_feedback(d.snapshot, truth)
    clone = MatchModel.loads(model.dumps())
    for _ in range(30):
        conv, answers, probes, truth = _random_case(rng)
        a, b = model.decide(conv, answers, probes), clone.decide(conv, answers, probes)
        assert a == b
        for m in (model, clone):
            m.learn_self_supervised(conv, answers, probes, a)
            m.learn_feedback(a.snapshot, truth)
    assert model.stats() == clone.stats()
    again = MatchModel.loads(clone.dumps())
    conv, answers, probes, _ = _random_case(rng)
    assert again.decide(conv, answers, probes) == model.decide(conv, answers, probes)
    with pytest.raises(TypeError):
        MatchModel.loads(__import__("pickle").dumps({"not": "a model"}))


def test_decision_is_a_plain_record():
    d = MatchDecision("u1", 0.9, "model", ["x"], {"m": "model"})
    assert (d.user_id, d.confidence, d.method, d.explanation) == ("u1", 0.9, "model", ["x"])


def test_a_replica_learning_anothers_examples_over_the_wire_ends_up_with_its_model():
    """Pooled learning: the examples one replica makes teach another replica, after a trip
    through JSON (cs-learn), what the maker learned from the answers themselves."""
    import orjson

    rng = random.Random(11)
    maker, learner = MatchModel(), MatchModel()
    kinds = set()
    for _ in range(80):
        conv, answers, probes, truth = _random_case(rng)
        d = maker.decide(conv, answers, probes)
        examples = [
            maker.self_supervised_example(conv, answers, probes, d),
            maker.feedback_example(d.snapshot, truth),
        ]
        maker.learn_self_supervised(conv, answers, probes, d)
        maker.learn_feedback(d.snapshot, truth)
        for ex in filter(None, examples):
            kinds.add((ex["t"], "c" in ex, "x" in ex))
            learner.learn_example(orjson.loads(orjson.dumps(ex)))
    # Both kinds of example, with and without labelled candidates, were exchanged.
    assert {("fb", False, False), ("ss", True, False), ("ss", False, True)} <= kinds
    assert learner.pair.n == maker.pair.n > 0
    assert learner.n_feedback == maker.n_feedback
    assert learner.det.cells.keys() == maker.det.cells.keys()
    for _ in range(30):
        conv, answers, probes, _ = _random_case(rng)
        a, b = maker.decide(conv, answers, probes), learner.decide(conv, answers, probes)
        assert (a.user_id, a.method) == (b.user_id, b.method)
        # Feature vectors cross the wire rounded to 4 decimals.
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)


def _stranger_case(own: bool) -> tuple[dict, dict, dict]:
    """A conversion whose email matched nobody, from the address and agent of u1, who has (or
    has not) an email of their own on the platform."""
    conv, answers, probes = _conversion(em=True)
    answers = copy.deepcopy(answers)
    answers["em:h"]["users"] = []
    probes = copy.deepcopy(probes)
    probes["u1"]["own"] = ["em"] if own else []
    return conv, answers, probes


def test_a_candidate_with_their_own_email_learns_to_look_like_a_housemate():
    """Feedback says: when the chosen user has an email of their own, the converter (whose
    email matched nobody) was someone else; when not, it was them."""
    model = MatchModel(threshold=0.0)
    for _ in range(40):
        for own in (True, False):
            decision = model.decide(*_stranger_case(own))
            assert decision.snapshot["cf"] == int(own)
            model.learn_feedback(decision.snapshot, None if own else "u1")
    with_own = model.decide(*_stranger_case(own=True))
    without = model.decide(*_stranger_case(own=False))
    assert with_own.confidence < without.confidence - 0.3
    assert "candidate has an email or phone of their own" in with_own.explanation
    assert model.stats()["own_conflict"] < -1.0


def test_the_own_email_clue_applies_only_to_conversions_with_an_email_or_phone():
    conv, answers, probes = _conversion(em=False)
    probes = copy.deepcopy(probes)
    probes["u1"]["own"] = ["em"]
    decision = MatchModel(threshold=0.0).decide(conv, answers, probes)
    assert decision.method == "model" and "cf" not in decision.snapshot


def test_click_matches_whose_email_matched_nobody_teach_the_own_email_ratio():
    """Without any feedback: users found by a click id, when the order's email matched nobody,
    seldom have an email of their own, so a best candidate who has one counts against."""
    model = MatchModel()
    for _ in range(60):
        conv, answers, probes = _stranger_case(own=False)
        answers["click:c"] = _answer("click:c", 1, [["u1", 0, T - 600_000, 1]])
        decision = model.decide(conv, answers, probes)
        assert decision.method == "deterministic:click" and decision.confidence >= 0.9
        example = model.self_supervised_example(conv, answers, probes, decision)
        assert example["own"] == []
        model.learn_example(example)
    assert model.n_feedback == 0
    assert model.stats()["own_conflict"] < -1.0
    # An email that matched the user is not the clue's case: nothing to count.
    conv, answers, probes = _conversion(em=True)
    answers["click:c"] = _answer("click:c", 1, [["u1", 0, T - 600_000, 1]])
    decision = model.decide(conv, answers, probes)
    assert "own" not in model.self_supervised_example(conv, answers, probes, decision)


def test_examples_count_unmatched_emails_for_the_stranger_bound():
    model = MatchModel()
    clicked = _answer("click:c", 1, [["u1", 0, T - 600_000, 1]])
    cases = {}
    for name, (conv, answers, probes) in {
        "click, email matched nobody": _stranger_case(own=False),
        "click, email matched": _conversion(em=True),
        "email matched": _conversion(em=True),
        "no email": _conversion(em=False),
    }.items():
        if name.startswith("click"):
            answers = {**answers, "click:c": clicked}
        decision = model.decide(conv, answers, probes)
        example = model.self_supervised_example(conv, answers, probes, decision) or {}
        cases[name] = (example.get("ue"), example.get("found"))
    assert cases == {
        "click, email matched nobody": (1, 1),
        "click, email matched": (0, 1),
        "email matched": (0, None),  # found by the email itself: not a count of q
        "no email": (None, None),
    }
    # Over the wire, a learner counts what the examples say.
    learner = MatchModel()
    for _ in range(200):
        conv, answers, probes = _stranger_case(own=False)
        answers = {**answers, "click:c": clicked}
        decision = model.decide(conv, answers, probes)
        learner.learn_example(model.self_supervised_example(conv, answers, probes, decision))
    bound = learner.conversion.stranger_bound
    assert bound.unmatched.mean > 0.9 and bound.platform_unmatched.mean > 0.9
