"""The pair scorer: P(candidate is the converter | probabilistic pair features), learned online.

A River pipeline (``StandardScaler | LogisticRegression``) over the pair features plus a few
interactions. It starts cold, so its logit is blended with a hand-set prior that encodes the
rule-baseline ordering (same IP and user agent > same IP; recent, low-degree, engaged with the
advertiser) until enough pairs have been learned. Every pair is scored before it is learned
(progressive validation).

>>> scorer = PairScorer()
>>> near = {"ipua": 1.0, "ip": 1.0, "ip_inv": 1.0, "ip_age": 6.0, "adv": 1.0, "adv_age": 9.0}
>>> far = {"ip": 1.0, "ip_inv": 0.01, "ip_logdeg": 4.6, "ip_age": 13.0, "adv_age": 14.8}
>>> scorer.predict(near) > 0.5 > scorer.predict(far)
True
"""

from __future__ import annotations

from river import compose, linear_model, optim, preprocessing

from convstream.core.matching.calibration import logit, sigmoid
from convstream.core.matching.features import LONG_AGO, Features
from convstream.core.matching.progressive import Progress

#: Hand-set prior log-odds weights (features absent from the dict weigh nothing).
PRIOR_WEIGHTS: dict[str, float] = {
    "ipua": 2.5,
    "ip_inv": 1.0,
    "ip_logdeg": -0.3,
    "ip_age": -0.3,
    "adv": 1.0,
    "adv_age": -0.1,
    "adv_click": 0.5,
}
PRIOR_BIAS = -2.0


def _with_interactions(f: Features) -> Features:
    x = dict(f)
    adv = f.get("adv", 0.0)
    x["adv_x_ipua"] = adv * f.get("ipua", 0.0)
    x["adv_x_ip_inv"] = adv * f.get("ip_inv", 0.0)
    x["adv_recency"] = adv * (LONG_AGO - f.get("adv_age", LONG_AGO))
    x["ip_recency"] = f.get("ip", 0.0) * (LONG_AGO - f.get("ip_age", LONG_AGO))
    x["ipua_recency"] = f.get("ipua", 0.0) * (LONG_AGO - f.get("ipua_age", LONG_AGO))
    x["ip_top"] = f.get("ip", 0.0) * float(f.get("ip_rank", 0.0) == 0.0)
    x["ip_only_x_inv"] = f.get("ip_only", 0.0) * f.get("ip_inv", 0.0)
    x["ip_only_recency"] = f.get("ip_only", 0.0) * x["ip_recency"]
    x["ipua_x_inv"] = f.get("ipua", 0.0) * f.get("ipua_inv", 0.0)
    # Same address and browser family, other exact user agent (an update, most often).
    x["ipfam_only"] = f.get("ip_only", 0.0) * f.get("ipfam", 0.0)
    x["ipfam_only_x_inv"] = f.get("ip_only", 0.0) * f.get("ipfam_inv", 0.0)
    x["prior"] = prior_logit(f)
    return x


def prior_logit(f: Features) -> float:
    """The cold-start log-odds (the ``ip_age`` term is centred on about an hour)."""
    z = PRIOR_BIAS
    for name, w in PRIOR_WEIGHTS.items():
        value = f.get(name, 0.0)
        if name == "ip_age":
            value = (value - 8.0) if f.get("ip") else 0.0
        elif name == "adv_age":
            value = (value - 12.0) if f.get("adv") else 0.0
        z += w * value
    return z


class PairScorer:
    """Online logistic pair model with a prior blend: weight on the learned logit n/(n+warmup)."""

    def __init__(self, warmup: int = 300, lr: float = 0.03, l2: float = 1e-4) -> None:
        self.warmup = warmup
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2, intercept_lr=lr),
        )
        self.progress = Progress()
        self.n = 0

    def logit(self, f: Features) -> float:
        z0 = prior_logit(f)
        if self.n == 0:
            return z0
        p = self.model.predict_proba_one(_with_interactions(f)).get(True, 0.5)
        w = self.n / (self.n + self.warmup)
        return w * logit(p) + (1.0 - w) * z0

    def predict(self, f: Features) -> float:
        return sigmoid(self.logit(f))

    def learn(self, f: Features, y: bool, weight: float = 1.0) -> None:
        """Score first (progressive validation), then learn."""
        self.progress.update(self.predict(f), y)
        self.model.learn_one(_with_interactions(f), bool(y), w=weight)
        self.n += 1
