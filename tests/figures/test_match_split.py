"""``research.match_split``: the two factors it reports are the ones the labels were decided by."""

from __future__ import annotations

import pytest

from convstream.core.engine import run_offline
from convstream.synth.generate import config_from_args, generate
from research.match_split import FactorRecordingModel, split_rows, summarize


def test_the_factors_multiply_to_each_labels_confidence():
    lines, _ = generate(config_from_args("strangers", seed=3, users=1500, days=7))
    log: dict = {}
    factors: dict = {}
    labels = run_offline(lines, lambda: FactorRecordingModel(log, factors))
    last = {label["conversion_key"]: label for label in labels}
    model = [label for label in last.values() if label["match_method"] == "model"]
    assert len(model) > 50, len(model)
    for label in model:
        key = label["conversion_key"]
        labelled, best = log[key].user_id is not None, log[key].snapshot["u"]
        among, pick = factors[key]
        assert labelled and best == label["user_id"]
        # The snapshot keeps the conversion features to 5 decimals.
        assert among * pick == pytest.approx(label["match_confidence"], abs=1e-3)
    unlabelled = {k for k, d in log.items() if "x" in d.snapshot and d.user_id is None}
    assert unlabelled and all(last[k]["user_id"] is None for k in unlabelled)


def test_the_truth_is_consistent():
    rows = split_rows("strangers", seed=3, users=1500, days=7)
    # The best candidate can be the converter only if the converter was a candidate, and
    # strangers (never among) are in this traffic.
    assert all(r.among_actual for r in rows if r.pick_actual)
    assert any(not r.among_actual for r in rows)
    assert sum(s["decisions"] for s in summarize(rows).values()) == len(rows)
