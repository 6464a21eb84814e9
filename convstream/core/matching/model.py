"""The match model: which platform user (if any) made a conversion, with a calibrated confidence.

Two paths. A deterministic identifier (click, em, ph, dev, ext) picks its user and the
confidence is the Beta posterior of that cell (``deterministic.py``). Otherwise the pair scorer
(``pair.py``) rates every probabilistic candidate and the conversion scorer
(``conversion.py``) turns the scores into P(the best candidate is the converter), corrected for
converters who are not on the platform. Both learn online from self-supervised examples
(conversions with a deterministic match, re-scored with their deterministic answers hidden) and
from delayed feedback.

"none" is chosen below ``threshold`` (default 0.5). A label with confidence p adds p * p
expected correct weight and p * (1 - p) wrong weight, so emitting it helps exactly when p > 0.5.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

from convstream.core.engagements import OWN_KINDS
from convstream.core.identity import DETERMINISTIC_KINDS, PROBABILISTIC_KINDS
from convstream.core.matching.candidates import select_candidates
from convstream.core.matching.conversion import ConversionScorer, conversion_features
from convstream.core.matching.deterministic import DeterministicRates, kind_tops, pick_deterministic
from convstream.core.matching.explain import deterministic_reasons, probabilistic_reasons
from convstream.core.matching.features import Features, candidate_features, from_vector, to_vector
from convstream.core.matching.pair import PairScorer
from convstream.core.matching.progressive import RollingECE

UserId = str


@dataclass
class MatchDecision:
    """Who converted (None: nobody on the platform is likely enough) and why.

    ``snapshot`` is a compact JSON-able record of what was decided from (the candidates' feature
    vectors, the conversion-level features, the deterministic cell), so that delayed feedback
    can be learned without the lookup answers.
    """

    user_id: UserId | None
    confidence: float
    method: str
    explanation: list[str]
    snapshot: dict[str, Any] = field(default_factory=dict)


@dataclass
class _View:
    """The probabilistic candidates of one conversion, scored."""

    feats: dict[UserId, Features]
    logits: dict[UserId, float]
    best: UserId | None = None
    margin: float = 0.0
    x: list[float] = field(default_factory=list)


def _own_conflict(answers: dict[str, dict[str, Any]], probe: dict[str, Any] | None) -> bool | None:
    """For a conversion whose email or phone matched nobody: does the candidate have an email
    or phone of their own on the platform (then the converter is more likely someone else on
    their device)? None when the conversion carried neither.

    >>> _own_conflict({"em:h": {"kind": "em"}}, {"own": ["em"]})
    True
    >>> _own_conflict({"em:h": {"kind": "em"}}, {"own": ["ph"]}), _own_conflict({}, {"own": ["em"]})
    (False, None)
    """
    asked = {a["kind"] for a in answers.values()} & set(OWN_KINDS)
    if not asked:
        return None
    return bool(asked & set((probe or {}).get("own") or ()))


def _unmatched_own(answers: dict[str, dict[str, Any]]) -> bool | None:
    """Whether the conversion's email and phone all matched nobody; None if it carried neither.

    >>> _unmatched_own({"em:h": {"kind": "em", "users": []}, "click:c": {"kind": "click"}})
    True
    >>> _unmatched_own({"em:h": {"kind": "em", "users": [["u1", 0, 5, 1]]}}), _unmatched_own({})
    (False, None)
    """
    asked = [a for a in answers.values() if a["kind"] in OWN_KINDS]
    return not any(a["users"] for a in asked) if asked else None


def _context(answers: dict[str, dict[str, Any]]) -> str:
    """Deterministic identifiers that matched nobody are evidence of a non-platform converter."""
    asked = any(a["kind"] in DETERMINISTIC_KINDS for a in answers.values())
    return "unmatched" if asked else "plain"


class MatchModel:
    """One replica per conversions partition; see the module docstring.

    >>> model = MatchModel()
    >>> answers = {"ip:1.2.3.4": {"key": "ip:1.2.3.4", "kind": "ip", "degree": 1,
    ...                           "users": [["u1", 0, 9_000_000, 3]]},
    ...            "ipua:1.2.3.4|x": {"key": "ipua:1.2.3.4|x", "kind": "ipua", "degree": 1,
    ...                               "users": [["u1", 0, 9_000_000, 3]]}}
    >>> conv = {"ts": 9_060_000, "sources": ["pixel"], "user_data": {
    ...         "client_ip_address": "1.2.3.4", "client_user_agent": "UA"}}
    >>> decision = model.decide(conv, answers, {})
    >>> decision.user_id, decision.method, 0.5 < decision.confidence < 1.0
    ('u1', 'model', True)
    >>> MatchModel.loads(model.dumps()).decide(conv, answers, {}) == decision
    True
    """

    def __init__(
        self, *, threshold: float = 0.5, max_candidates: int = 12, ss_min_confidence: float = 0.9
    ) -> None:
        self.threshold = threshold
        self.max_candidates = max_candidates
        self.ss_min_confidence = ss_min_confidence
        self.pair = PairScorer()
        self.conversion = ConversionScorer()
        self.det = DeterministicRates()
        self.ece = RollingECE(window=2000)
        self.n_feedback = 0

    def _view(self, conv: dict[str, Any], answers: dict, probes: dict) -> _View:
        """Score the probabilistic candidates as if no deterministic identifier were known."""
        prob = {k: a for k, a in answers.items() if a["kind"] in PROBABILISTIC_KINDS}
        users = select_candidates(conv, prob, self.max_candidates)
        feats = candidate_features(conv, prob, probes, users=users)
        view = _View(feats, {u: self.pair.logit(f) for u, f in feats.items()})
        if view.logits:
            view.best, view.margin, view.x = conversion_features(view.logits, feats)
        return view

    def decide(self, conv: dict[str, Any], answers: dict, probes: dict) -> MatchDecision:
        """The user behind ``conv`` (or None), with a calibrated confidence and a snapshot."""
        view = self._view(conv, answers, probes)
        pick = pick_deterministic(answers, tiebreak=view.logits)
        if pick is not None:
            conf = self.det.confidence(pick.cell)
            method = f"deterministic:{pick.kind}"
            snap = {"m": method, "cell": pick.cell, "u": pick.user_id, "p": round(conf, 6)}
            reasons = deterministic_reasons(pick.kinds, pick.cell, pick.rivals)
            return self._emit(pick.user_id, conf, method, reasons, snap)
        ctx = _context(answers)
        if view.best is None:
            snap = {"m": "none", "u": None, "ctx": ctx}
            return MatchDecision(None, 0.0, "none", ["no candidate"], snap)
        # Any email or phone of the conversion matched nobody here, or there would be a pick.
        conflict = _own_conflict(answers, probes.get(view.best))
        conf = self.conversion.confidence(view.x, ctx, conflict)
        snap = {
            "m": "model",
            "u": view.best,
            "ctx": ctx,
            "x": [round(v, 5) for v in view.x],
            "p": round(conf, 6),
            "c": [[u, to_vector(f)] for u, f in view.feats.items()],
        }
        if conflict is not None:
            snap["cf"] = int(conflict)
        reasons = probabilistic_reasons(view.feats[view.best], len(view.feats), view.margin)
        if ctx == "unmatched":
            reasons.append("deterministic ids matched nobody")
        if conflict:
            reasons.append("candidate has an email or phone of their own")
        return self._emit(view.best, conf, "model", reasons, snap)

    def _emit(
        self, user: UserId, conf: float, method: str, reasons: list[str], snap: dict
    ) -> MatchDecision:
        if conf < self.threshold:
            snap = {**snap, "m": f"none:{method}"}
            reasons = [f"best candidate {conf:.2f} < threshold {self.threshold:.2f}", *reasons]
            return MatchDecision(None, 0.0, "none", reasons, snap)
        return MatchDecision(user, conf, method, reasons, snap)

    def learn_self_supervised(
        self, conv: dict[str, Any], answers: dict, probes: dict, decision: MatchDecision
    ) -> None:
        """After ``decide``: learn from the decision (see :meth:`self_supervised_example`)."""
        example = self.self_supervised_example(conv, answers, probes, decision)
        if example is not None:
            self.learn_example(example)

    def self_supervised_example(
        self, conv: dict[str, Any], answers: dict, probes: dict, decision: MatchDecision
    ) -> dict[str, Any] | None:
        """What this decision teaches, as a JSON-able example that needs no answers, so that
        every replica can learn it (:meth:`learn_example`); None when it teaches nothing.

        A confident deterministic match is re-scored with the deterministic answers hidden:
        each probabilistic candidate's features (``c``), labelled by whether it is the matched
        user (``truth``). If the conversion's email and phone matched nobody, ``own`` lists the
        candidates with an email or phone of their own: how often the best of them has one
        when the converter is among them is one side of the own-email ratio, learned here from
        every such match instead of from feedback alone. A deterministic match also rates its
        identifier kinds against each other (``tops``). A probabilistic decision only feeds the
        unlabelled label-shift estimate (``x``, ``ctx``). Every conversion with an email or
        phone says whether they all matched nobody (``ue``); ``found`` marks a confident match
        by a click id, device id or external id: the two counts of ``StrangerBound``.
        """
        snap = decision.snapshot
        example: dict[str, Any] = {"t": "ss"}
        if "x" in snap:
            example["x"], example["ctx"] = snap["x"], snap["ctx"]
        unmatched = _unmatched_own(answers)
        if unmatched is not None:
            example["ue"] = int(unmatched)
        if decision.method.startswith("deterministic"):
            example["tops"] = kind_tops(answers)
            if decision.confidence >= self.ss_min_confidence:
                prob = {k: a for k, a in answers.items() if a["kind"] in PROBABILISTIC_KINDS}
                users = select_candidates(conv, prob, self.max_candidates)
                feats = candidate_features(conv, prob, probes, users=users)
                example["truth"] = decision.user_id
                example["c"] = [[user, to_vector(f)] for user, f in feats.items()]
                if unmatched:
                    example["own"] = [u for u in feats if _own_conflict(answers, probes.get(u))]
                if "ue" in example and decision.method.split(":")[1] not in OWN_KINDS:
                    example["found"] = 1  # a platform converter found without email or phone
        return example if len(example) > 1 else None

    @staticmethod
    def feedback_example(snapshot: dict[str, Any], true_user_id: UserId | None) -> dict[str, Any]:
        """Delayed truth for a decision, as an example for :meth:`learn_example`."""
        return {"t": "fb", "snap": snapshot, "u": true_user_id}

    def learn_example(self, example: dict[str, Any]) -> None:
        """Learn one example from :meth:`self_supervised_example` or :meth:`feedback_example`,
        whichever replica made it."""
        if example["t"] == "fb":
            self.learn_feedback(example["snap"], example["u"])
            return
        if "x" in example:
            self.conversion.observe(example["x"], example["ctx"])
        if "ue" in example:
            self.conversion.stranger_bound.observe(bool(example["ue"]))
        if "tops" in example:
            self.det.agreement(example["tops"])
        if "c" not in example:
            return
        truth = example["truth"]
        feats = {user: from_vector(vector) for user, vector in example["c"]}
        if feats:
            logits = {user: self.pair.logit(f) for user, f in feats.items()}
            best, _, x = conversion_features(logits, feats)
            self.conversion.learn_platform(x, best, truth, set(feats))
            if "own" in example:
                self.conversion.own_conflict.update(best in example["own"], truth in feats)
        if "found" in example:
            self.conversion.stranger_bound.learn_platform(bool(example["ue"]), truth in feats)
        for user, f in feats.items():
            self.pair.learn(f, user == truth)

    def learn_feedback(self, snapshot: dict[str, Any], true_user_id: UserId | None) -> None:
        """Delayed truth for a decision (``true_user_id`` None: not a platform user)."""
        if not snapshot:
            return
        self.n_feedback += 1
        method, chosen = snapshot["m"], snapshot.get("u")
        correct = chosen is not None and chosen == true_user_id
        if method.startswith("deterministic") or method == "model":
            self.ece.update(snapshot["p"], correct)
        if "cell" in snapshot:
            self.det.feedback(snapshot["cell"], correct)
            return
        if chosen is None:
            return
        x, pool = snapshot["x"], {user for user, _ in snapshot["c"]}
        conflict = None if snapshot.get("cf") is None else bool(snapshot["cf"])
        self.conversion.learn_feedback(x, snapshot["ctx"], true_user_id in pool, conflict)
        if true_user_id is not None:
            self.conversion.learn_platform(x, chosen, true_user_id, pool)
        for user, vector in snapshot["c"]:
            self.pair.learn(from_vector(vector), user == true_user_id)

    def stats(self) -> dict[str, Any]:
        """Progressive pair AUC and log loss, pairs learned, sliding-window ECE on feedback."""
        pair = self.pair.progress.summary()
        return {
            "auc": pair["auc"],
            "log_loss": pair["log_loss"],
            "n_learned": self.pair.n,
            "n_feedback": self.n_feedback,
            "ece": round(self.ece.get(), 4),
            "ece_n": len(self.ece),
            **self.conversion.stats(),
        }

    def dumps(self) -> bytes:
        """A checkpoint (pickle); ``loads`` restores a model that decides identically."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(data: bytes) -> MatchModel:
        model = pickle.loads(data)
        if not isinstance(model, MatchModel):
            raise TypeError("not a MatchModel checkpoint")
        return model
