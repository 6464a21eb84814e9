"""Online calibration: a deliberately miscalibrated stream gets calibrated."""

from __future__ import annotations

import random

import pytest

from convstream.core.matching.calibration import BetaRate, OnlineLogit, logit, sigmoid
from convstream.core.matching.label_shift import LabelShift, em_prior
from convstream.core.matching.progressive import RollingECE


def _ece(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    ece = RollingECE(window=len(pairs), bins=bins)
    for p, y in pairs:
        ece.update(p, y)
    return ece.get()


def _stream(n: int, seed: int, truth):
    """(raw score, outcome) where the outcome's real probability is ``truth(raw score)``."""
    rng = random.Random(seed)
    for _ in range(n):
        p = sigmoid(rng.gauss(0.0, 2.0))
        yield p, rng.random() < truth(p)


@pytest.mark.parametrize(
    "truth",
    [
        lambda p: sigmoid(0.4 * logit(p) - 1.0),  # overconfident and biased
        lambda p: sigmoid(2.5 * logit(p) + 0.5),  # underconfident
    ],
)
def test_online_logit_on_the_score_calibrates_a_miscalibrated_stream(truth):
    """Platt scaling, as the match model's residual does it: an OnlineLogit on [1, logit]."""
    cal = OnlineLogit([0.0, 1.0], prior_var=1.0)
    raw, calibrated = [], []
    for i, (p, y) in enumerate(_stream(30_000, seed=7, truth=truth)):
        x = [1.0, logit(p)]
        if i >= 15_000:  # progressive: score before learning, judge the second half
            raw.append((p, y))
            calibrated.append((cal.predict(x), y))
        cal.learn(x, y)
    assert _ece(raw) > 0.08
    assert _ece(calibrated) < 0.02


def test_online_logit_learns_an_offset_model():
    rng = random.Random(3)
    model = OnlineLogit([0.0, 0.0], prior_var=1.0)
    for _ in range(5_000):
        x1 = rng.gauss(0, 1)
        offset = rng.gauss(0, 1)
        y = rng.random() < sigmoid(offset - 1.0 + 2.0 * x1)
        model.learn([1.0, x1], y, offset=offset)
    assert model.w == pytest.approx([-1.0, 2.0], abs=0.15)


def test_beta_rate_moves_from_its_prior():
    rate = BetaRate(0.9, weight=10)
    for _ in range(90):
        rate.update(True)
    rate.update(False, weight=10)
    assert rate.mean == pytest.approx(0.9, abs=1e-9)


def test_label_shift_recovers_the_live_prior():
    """A calibrated classifier trained at rho=0.6 applied where positives are only 20%."""
    rng = random.Random(11)
    rho, live = 0.6, 0.2
    outputs = []
    for _ in range(5_000):
        y = rng.random() < live
        z = rng.gauss(1.0 if y else -1.0, 1.0)
        # Posterior at the training prior for two unit Gaussians at +-1: logit = 2z + logit(rho).
        outputs.append(sigmoid(2.0 * z + logit(rho)))
    assert em_prior(outputs, rho) == pytest.approx(live, abs=0.03)
    est = LabelShift(window=5_000, prior_shift=0.0, prior_weight=1)
    for p in outputs:
        est.observe(p)
    assert est.shift(rho) == pytest.approx(logit(live) - logit(rho), abs=0.2)
