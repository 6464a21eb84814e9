"""Scoring labels against truth, on hand-made cases with numbers worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstream.core.evaluation import EvalReport, evaluate, latest_labels, load_jsonl


def truth_row(
    n: int, user: str | None, *, linkable: bool = True, lt: str | None = None
) -> dict[str, Any]:
    last_touch = None
    if lt is not None:
        last_touch = {"engagement_id": lt, "engagement_type": "click" if lt[0] == "k" else "view"}
    return {
        "conversion_key": f"adv-1:Purchase:{n}",
        "advertiser_id": "adv-1",
        "event_name": "Purchase",
        "event_id": str(n),
        "ts": 1_767_571_200_000 + n,
        "user_id": user,
        "kind": "stranger" if user is None else "organic",
        "last_touch": last_touch,
        "linkable": linkable and user is not None,
    }


def label(
    n: int | str,
    user: str | None,
    conf: float,
    method: str,
    credits: list[tuple[str, float, int]] = (),
    *,
    revision: int = 0,
) -> dict[str, Any]:
    key = n if isinstance(n, str) else f"adv-1:Purchase:{n}"
    rows = [
        {
            "engagement_id": eid,
            "engagement_type": "click" if eid[0] == "k" else "view",
            "ad_id": "ad",
            "campaign_id": "cmp",
            "engagement_ts": ts,
            "credit": credit,
            "label_weight": conf * credit,
        }
        for eid, credit, ts in credits
    ]
    return {
        "conversion_key": key,
        "user_id": user,
        "match_confidence": conf,
        "match_method": method,
        "credits": rows,
        "label_weight": math.fsum(r["label_weight"] for r in rows),
        "revision": revision,
    }


TRUTH = [
    truth_row(1, "u1", lt="k1"),
    truth_row(2, "u2", lt="v2"),
    truth_row(3, "u3"),
    truth_row(4, "u4", linkable=False, lt="k4"),
    truth_row(5, None),
    truth_row(6, None),
    truth_row(7, "u7", lt="k7"),
]
LABELS = [
    label(1, "u1", 0.9, "click", [("k1", 1.0, 10)], revision=1),
    label(2, "u2", 0.8, "em", [("v2", 0.5, 10), ("vX", 0.5, 20)]),
    label(3, "u9", 0.6, "ipua", [("x", 1.0, 5)]),
    label(4, "u4", 0.3, "ip", [("k4", 1.0, 5)]),
    label(5, "u5", 0.2, "ip", [("z", 1.0, 5)]),
    label(6, None, 0.0, "none"),
    label("other:Lead:99", "u1", 0.7, "em", [("k1", 1.0, 5)]),
    # older revision arriving late: must lose; and a same-revision duplicate of key 3
    label(1, "u8", 0.95, "ip", [("k8", 1.0, 1)], revision=0),
    label(3, "u9", 0.6, "ipua", [("x", 1.0, 5)]),
]


@pytest.fixture
def report() -> EvalReport:
    return evaluate(LABELS, TRUTH)


def test_coverage_and_key_bookkeeping(report):
    assert report.n_truth == 7 and report.n_labels == 7 and report.label_rows == 9
    assert report.coverage == pytest.approx(6 / 7)
    assert report.missing_keys == 1 and report.missing_sample == ["adv-1:Purchase:7"]
    assert report.unexpected_keys == 1 and report.unexpected_sample == ["other:Lead:99"]
    assert report.duplicate_keys == 1


def test_match_precision_recall_and_linkable(report):
    assert (report.n_with_user, report.n_correct) == (5, 3)
    assert report.match_precision == pytest.approx(0.6)
    assert report.match_recall == pytest.approx(3 / 5)
    assert report.linkable_ceiling == pytest.approx(4 / 5)
    assert report.recall_of_linkable == pytest.approx(2 / 4)
    assert report.stranger_false_match_rate == pytest.approx(0.5)


def test_calibration(report):
    # (conf, correct): (.9, T) (.8, T) (.6, F) (.3, T) (.2, F)
    assert report.ece == pytest.approx((0.1 + 0.2 + 0.6 + 0.7 + 0.2) / 5)
    assert report.brier == pytest.approx((0.01 + 0.04 + 0.36 + 0.49 + 0.04) / 5)
    counts = [b["count"] for b in report.reliability]
    assert counts == [0, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    assert report.reliability[6]["accuracy"] == 0.0
    assert report.reliability[9]["mean_confidence"] == pytest.approx(0.9)


def test_attribution_and_label_weight(report):
    # last touches: k1 (right), v2 (top credit is vX: the tie goes to the later one), k4 (right),
    # k7 (no label)
    assert report.n_last_touch == 4
    assert report.attribution_accuracy == pytest.approx(2 / 4)
    assert report.attribution_over_recall == pytest.approx(2 / 3)
    assert report.total_label_weight == pytest.approx(0.9 + 0.8 + 0.6 + 0.3 + 0.2)
    assert report.label_weight_precision == pytest.approx((0.9 + 0.4 + 0.3) / 2.8)
    assert report.label_weight_ratio == pytest.approx(2.8 / 4)


def test_method_breakdown(report):
    m = report.methods
    assert list(m) == ["click", "em", "ip", "ipua", "none"]
    assert (m["ip"]["count"], m["ip"]["with_user"], m["ip"]["correct"]) == (2, 2, 1)
    assert m["ip"]["precision"] == pytest.approx(0.5)
    assert m["ipua"]["precision"] == 0.0 and m["click"]["precision"] == 1.0
    assert m["none"]["precision"] is None and m["none"]["count"] == 1


def test_highest_revision_wins_in_any_order():
    truth = [truth_row(1, "u1", lt="k1")]
    rows = [
        label(1, "u1", 0.9, "click", [("k1", 1.0, 1)], revision=2),
        label(1, "u2", 0.5, "ip", [("k2", 1.0, 1)], revision=1),
        label(1, None, 0.0, "none", revision=0),
    ]
    for order in (rows, rows[::-1], rows[1:] + rows[:1]):
        r = evaluate(order, truth)
        assert r.match_precision == 1.0 and r.attribution_accuracy == 1.0
        assert r.duplicate_keys == 0 and r.n_labels == 1 and r.label_rows == 3
    kept, _, dup = latest_labels([rows[1], {**rows[1], "user_id": "u1"}])
    assert dup == 1 and kept["adv-1:Purchase:1"]["user_id"] == "u1"  # the later copy wins


def test_missing_weights_fall_back_to_confidence_times_credit():
    truth = [truth_row(1, "u1", lt="k1")]
    lab = {
        "conversion_key": "adv-1:Purchase:1",
        "user_id": "u1",
        "match_confidence": 0.5,
        "match_method": "em",
        "credits": [{"engagement_id": "k1", "credit": 0.5}, {"engagement_id": "k0", "credit": 0.5}],
    }
    r = evaluate([lab], truth)
    assert r.total_label_weight == pytest.approx(0.5)
    assert r.label_weight_precision == pytest.approx(0.5)
    assert r.attribution_accuracy == 1.0  # tie without timestamps: first listed


def test_confidence_edges_land_in_the_end_bins():
    truth = [truth_row(1, "u1"), truth_row(2, "u2")]
    labels = [label(1, "u1", 1.0, "click"), label(2, "u9", 0.0, "ip")]
    r = evaluate(labels, truth)
    assert r.reliability[9]["count"] == 1 and r.reliability[0]["count"] == 1
    assert r.ece == 0.0 and r.brier == 0.0


def test_ece_weights_bins_by_count():
    truth = [truth_row(i, "u1") for i in range(4)]
    labels = [label(0, "u1", 0.9, "a"), label(1, "u1", 0.9, "a"), label(2, "u2", 0.9, "a")]
    labels.append(label(3, "u1", 0.1, "a"))
    r = evaluate(labels, truth)
    # bin 9: 3 labels, conf 0.9, accuracy 2/3; bin 1: 1 label, conf 0.1, accuracy 1
    assert r.ece == pytest.approx((3 * abs(2 / 3 - 0.9) + 1 * 0.9) / 4)


def test_label_weight_on_the_right_engagement_but_wrong_user_is_not_precise():
    truth = [truth_row(1, "u1", lt="k1"), truth_row(2, "u2", lt="k2")]
    labels = [
        label(1, "u9", 0.8, "ip", [("k1", 1.0, 1)]),
        label(2, "u2", 0.2, "em", [("k2", 1, 1)]),
    ]
    r = evaluate(labels, truth)
    assert r.label_weight_precision == pytest.approx(0.2 / 1.0)
    assert r.attribution_accuracy == pytest.approx(0.5)
    assert r.label_weight_ratio == pytest.approx(1.0 / 2)


def test_empty_and_table():
    empty = evaluate([], [])
    assert empty.coverage is None and empty.match_precision is None and empty.ece is None
    text = evaluate(LABELS, TRUTH).format_table()
    assert "precision" in text and "0.600" in text and "ECE 0.360" in text
    assert "ipua" in text
    orjson.dumps(evaluate(LABELS, TRUTH).as_dict())  # JSON-able


def test_load_jsonl(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in LABELS) + b"\n")
    assert load_jsonl(path) == LABELS


@st.composite
def labelled_world(draw):
    n = draw(st.integers(1, 12))
    users = st.sampled_from(["u1", "u2", "u3", None])
    truth = [
        truth_row(
            i, draw(users), linkable=draw(st.booleans()), lt=draw(st.sampled_from(["k1", None]))
        )
        for i in range(n)
    ]
    labels = []
    for i in range(n):
        for rev in draw(st.sets(st.integers(0, 3), max_size=3)):
            conf = draw(st.floats(0, 1))
            eid = draw(st.sampled_from(["k1", "k2"]))
            labels.append(label(i, draw(users), conf, "m", [(eid, 1.0, 1)], revision=rev))
    return truth, labels, draw(st.randoms(use_true_random=False))


@settings(max_examples=60, deadline=None)
@given(labelled_world())
def test_properties(world):
    truth, labels, rnd = world
    r = evaluate(labels, truth)
    for name in (
        "coverage",
        "match_precision",
        "match_recall",
        "recall_of_linkable",
        "ece",
        "brier",
        "attribution_accuracy",
        "attribution_over_recall",
        "label_weight_precision",
    ):
        v = getattr(r, name)
        assert v is None or -1e-9 <= v <= 1 + 1e-9, name
    if r.attribution_accuracy is not None and r.match_recall is not None:
        assert r.attribution_accuracy <= r.match_recall * r.n_platform / r.n_last_touch + 1e-9
    shuffled = list(labels)
    rnd.shuffle(shuffled)
    assert evaluate(shuffled, truth).as_dict() == r.as_dict()  # distinct revisions: order-free


def test_the_ceiling_with_the_graphs_reach_is_reported_when_the_truth_has_it():
    truth = [
        {"conversion_key": "a", "user_id": "u1", "linkable": True, "graph_linkable": True},
        {"conversion_key": "b", "user_id": "u2", "linkable": False, "graph_linkable": True},
        {"conversion_key": "c", "user_id": "u3", "linkable": False, "graph_linkable": False},
        {"conversion_key": "d", "user_id": None, "linkable": False, "graph_linkable": False},
    ]
    labels = [
        {"conversion_key": "a", "user_id": "u1", "match_confidence": 0.9},
        {"conversion_key": "b", "user_id": "u9", "match_confidence": 0.6},
        {"conversion_key": "c", "user_id": None, "match_confidence": 0.0},
        {"conversion_key": "d", "user_id": None, "match_confidence": 0.0},
    ]
    report = evaluate(labels, truth)
    assert (report.linkable_ceiling, report.recall_of_linkable) == (1 / 3, 1.0)
    assert report.n_graph_linkable == 2
    assert (report.graph_linkable_ceiling, report.recall_of_graph_linkable) == (2 / 3, 0.5)
    assert "ceiling with graph reach  0.667" in report.format_table()
    old = evaluate(labels, [{k: v for k, v in r.items() if k != "graph_linkable"} for r in truth])
    assert old.n_graph_linkable is None and "graph reach" not in old.format_table()
