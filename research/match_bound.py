"""``python -m research.match_bound --profile heavy-sharing --seed 1``: what bounds match recall.

Is the match model's recall of linkable conversions limited by its online learner, or by the
information in its candidate features? For each generator profile and seed this generates a
replay, runs :class:`MatchModel` offline (a recording subclass keeps its last decision per
conversion, with the snapshot of candidate feature vectors it decided from) and compares it with
an oracle that is given the answer key:

1. MatchModel precision / recall / recall of linkable, from
:func:`convstream.core.evaluation.evaluate`,
   and the same from our own join of decisions and truth (they must agree within 0.005).
2. Over linkable conversions decided on the probabilistic path: the share whose true user is
   not among the candidates, the share MatchModel ranks first, and the ceiling of recall of
   linkable if that path always picked the true user when it is a candidate (deterministic
   decisions kept as they are).
3. MatchModel's own confidence threshold swept: best recall of linkable at precision >= 0.92 and
   at >= 0.95.
4. The oracle: a gradient-boosted tree classifier (numpy, logistic loss) trained on ground truth
   over the same per-candidate features plus relative ones (margin to the best other candidate
   and rank, per feature), 2-fold cross-fitted by conversion key and repeated ``--repeats``
   times with fresh folds; its confidence is its probability of its top candidate. Its best
   recall of linkable at precision >= 0.92 and >= 0.95 (mean [min-max] over repeats), and the
   share of linkable probabilistic-path conversions whose true user it ranks first.

If the supervised oracle barely beats MatchModel's swept threshold, a better learner on these
features would not help much: the bound is the information, the candidates that are never there
(2.) and the ones the features cannot tell apart.

``--history`` tests whether more information about the same candidates would help: the oracle
also gets each candidate's whole platform history before the conversion, read from the replay
(:class:`History`: how active they were over 30 days, which share of it was on the conversion's
address, with its user agent, or both; whether they ever used that user agent; how long ago
they were last seen anywhere and whether that was on this address; how long ago they were last
seen elsewhere; distinct addresses over 7 days; this advertiser's ads in the last day). The
worker keeps none of that per candidate. Everything runs in one process; nothing is
written. Profiles default to heavy-sharing, hard and default; ``--profile`` and ``--seed`` take
several values (repeated or comma-separated). About 15 s per profile and seed on one core.

>>> curve = [MatchScores(0.90, 0.70, 0.85, 0.0), MatchScores(0.93, 0.65, 0.80, 0.2),
...          MatchScores(0.96, 0.50, 0.70, 0.5)]
>>> best_at_precision(curve, 0.92).threshold, best_at_precision(curve, 0.99)
(0.2, None)
"""

from __future__ import annotations

import argparse
import bisect
import functools
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from convstream.core.dedupe import conversion_key
from convstream.core.engine import run_offline
from convstream.core.evaluation import EvalReport, evaluate
from convstream.core.matching.features import LONG_AGO, PAIR_FEATURES, log_age
from convstream.core.matching.model import MatchDecision, MatchModel
from convstream.core.units import DAY_MS
from convstream.synth.generate import ReplayLine, config_from_args, generate

ConversionKey = str
UserId = str
TruthRow = Mapping[str, Any]
Snapshot = dict[str, Any]

DEFAULT_PROFILES = ("heavy-sharing", "hard", "default")
PRECISIONS = (0.92, 0.95)
JOIN_TOLERANCE = 0.005
FOLD_SEED_BASE = 1000

#: Pair features that get relative versions (margin to the best other candidate, rank).
RELATIVE_FEATURES = (
    "ipua",
    "ip_inv",
    "ipua_inv",
    "ip_age",
    "ipua_age",
    "adv_age",
    "adv_n",
    "ip_cnt",
    "ipua_cnt",
    "ip_share",
    "ip_tenure",
    "click_age",
    "ip_rank",
)
LOWER_IS_BETTER = frozenset({"ip_age", "ipua_age", "adv_age", "click_age", "ip_rank"})
_PAIR_INDEX = {name: i for i, name in enumerate(PAIR_FEATURES)}


# --- recording MatchModel ------------------------------------------------------------------------


class Decision(NamedTuple):
    """MatchModel's decision for one conversion, as returned by ``decide``."""

    user_id: UserId | None
    confidence: float
    method: str
    snapshot: Snapshot


class RecordingMatchModel(MatchModel):
    """A MatchModel that writes its latest decision per conversion key into ``log``."""

    def __init__(self, log: dict[ConversionKey, Decision], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log

    def decide(self, conv: dict[str, Any], answers: dict, probes: dict) -> MatchDecision:
        decision = super().decide(conv, answers, probes)
        self.log[conv["conversion_key"]] = Decision(
            decision.user_id, decision.confidence, decision.method, decision.snapshot
        )
        return decision


@dataclass
class Run:
    """One offline MatchModel run: truth, the last decision per key, and ``evaluate``'s report."""

    profile: str
    seed: int
    truth: dict[ConversionKey, TruthRow]
    last: dict[ConversionKey, Decision]
    report: EvalReport
    seconds: float
    history: History | None = None

    @functools.cached_property
    def prob_keys(self) -> list[ConversionKey]:
        """Judged keys last decided on the probabilistic path (whether or not above threshold)."""
        return sorted(k for k, d in self.last.items() if "c" in d.snapshot and k in self.truth)

    @property
    def decided_users(self) -> dict[ConversionKey, UserId | None]:
        return {k: d.user_id for k, d in self.last.items()}


def record(
    profile: str, seed: int, *, top_k: int = 8, max_candidates: int = 12, history: bool = False
) -> Run:
    """Generate a replay of ``profile``/``seed`` and run a recording MatchModel over it, with
    ``top_k`` users per lookup answer and ``max_candidates`` probed and scored (the worker's
    defaults); ``history`` keeps the users' sightings for the oracle."""
    started = time.monotonic()
    lines, truth = generate(config_from_args(profile, seed=seed))
    last: dict[ConversionKey, Decision] = {}
    matcher = functools.partial(RecordingMatchModel, last, max_candidates=max_candidates)
    labels = run_offline(lines, matcher, top_k=top_k, max_candidates=max_candidates)
    report = evaluate(labels, truth)
    truth_by_key = {row["conversion_key"]: row for row in truth}
    return Run(
        profile,
        seed,
        truth_by_key,
        last,
        report,
        time.monotonic() - started,
        History(lines) if history else None,
    )


class History:
    """Every platform user's sightings in a replay, and each conversion's address, user agent,
    advertiser and time, for the oracle's ``--history`` columns (all from before the conversion).

    >>> lines = [
    ...     {"topic": "impressions", "value": {"user_id": "u1", "ts": 1_000, "ip": "10.0.0.1",
    ...      "user_agent": "UA", "advertiser_id": "a1"}},
    ...     {"topic": "identity", "value": {"user_id": "u1", "ts": 2_000, "ip": "10.0.0.2",
    ...      "user_agent": "UA"}},
    ...     {"topic": "conversions", "value": {"advertiser_id": "a1", "event_name": "Purchase",
    ...      "event_id": "o1", "ts": 3_000, "user_data": {"client_ip_address": "10.0.0.1",
    ...      "client_user_agent": "UA"}}}]
    >>> cols = History(lines).columns("a1:Purchase:o1", ["u1", "u2"])
    >>> [round(v, 2) for v in cols[0].tolist()]  # u1: seen at 1 s on the address, 2 s elsewhere
    [1.1, 0.5, 1.0, 0.5, 1.0, 0.69, 0.0, 0.69, 2.0, 1.0]
    >>> cols[1].tolist() == [0.0] * 5 + [LONG_AGO, 0.0, LONG_AGO, 0.0, 0.0]  # u2: never seen
    True
    """

    def __init__(self, lines: Sequence[ReplayLine]) -> None:
        sightings: dict[UserId, list[tuple[int, str | None, str | None, str | None]]]
        sightings = defaultdict(list)
        self.conversions: dict[ConversionKey, dict[str, Any]] = {}
        for line in lines:
            value = line["value"]
            if line["topic"] in ("impressions", "clicks", "identity"):
                sightings[value["user_id"]].append(
                    (
                        value["ts"],
                        value.get("ip"),
                        value.get("user_agent"),
                        value.get("advertiser_id"),
                    )
                )
            elif line["topic"] == "conversions":
                key = conversion_key(value["advertiser_id"], value["event_name"], value["event_id"])
                ud = value.get("user_data") or {}
                conv = self.conversions.setdefault(
                    key, {"ts": value["ts"], "adv": value["advertiser_id"], "ip": None, "ua": None}
                )
                conv["ip"] = conv["ip"] or ud.get("client_ip_address")
                conv["ua"] = conv["ua"] or ud.get("client_user_agent")
        self.sightings = {
            user: sorted(rows, key=lambda r: r[0]) for user, rows in sightings.items()
        }
        self.times = {user: [r[0] for r in rows] for user, rows in self.sightings.items()}

    def columns(self, key: ConversionKey, users: Sequence[UserId]) -> np.ndarray:
        """One row of the ten history columns per candidate of conversion ``key``."""
        conv = self.conversions[key]
        return np.array([self._row(conv, user) for user in users], dtype=float)

    def _row(self, conv: dict[str, Any], user: UserId) -> list[float]:
        ts, ip, ua = conv["ts"], conv["ip"], conv["ua"]
        rows, times = self.sightings.get(user, []), self.times.get(user, [])
        end = bisect.bisect_left(times, ts)
        month = rows[bisect.bisect_left(times, ts - 30 * DAY_MS) : end]
        n = max(len(month), 1)
        on_ip = sum(1 for r in month if ip and r[1] == ip)
        with_ua = sum(1 for r in month if ua and r[2] == ua)
        both = sum(1 for r in month if ip and ua and r[1] == ip and r[2] == ua)
        last = rows[end - 1] if end else None
        elsewhere = next((r for r in reversed(rows[max(end - 50, 0) : end]) if r[1] != ip), None)
        week = rows[bisect.bisect_left(times, ts - 7 * DAY_MS) : end]
        day = rows[bisect.bisect_left(times, ts - DAY_MS) : end]
        return [
            math.log1p(len(month)),
            on_ip / n,
            with_ua / n,
            both / n,
            float(bool(ua) and any(r[2] == ua for r in rows[:end])),
            log_age(ts, last[0] if last else None),
            float(last is not None and bool(ip) and last[1] == ip),
            log_age(ts, elsewhere[0] if elsewhere else None),
            float(len({r[1] for r in week})),
            float(sum(1 for r in day if r[3] == conv["adv"])),
        ]


# --- scoring decisions against truth -------------------------------------------------------------


class MatchScores(NamedTuple):
    """Precision, recall and recall of linkable of a set of decisions (at a threshold)."""

    precision: float
    recall: float
    recall_of_linkable: float
    threshold: float = 0.0


@dataclass
class Tally:
    """Counts behind :class:`MatchScores`, with the definitions of ``evaluate``."""

    n_with_user: int = 0
    n_correct: int = 0
    n_platform: int = 0
    correct_platform: int = 0
    n_linkable: int = 0
    correct_linkable: int = 0

    def scores(self, threshold: float = 0.0) -> MatchScores:
        return MatchScores(
            self.n_correct / max(self.n_with_user, 1),
            self.correct_platform / max(self.n_platform, 1),
            self.correct_linkable / max(self.n_linkable, 1),
            threshold,
        )


def tally(
    user_of: Mapping[ConversionKey, UserId | None], truth: Mapping[ConversionKey, TruthRow]
) -> Tally:
    """Count decisions (key -> user or None) against every truth row.

    >>> truth = {"a": {"user_id": "u", "linkable": True}, "b": {"user_id": None}}
    >>> tally({"a": "u", "b": "v"}, truth).scores()
    MatchScores(precision=0.5, recall=1.0, recall_of_linkable=1.0, threshold=0.0)
    """
    out = Tally()
    for key, row in truth.items():
        true_user, user = row["user_id"], user_of.get(key)
        right = user is not None and user == true_user
        if true_user is not None:
            out.n_platform += 1
            out.correct_platform += right
            if row["linkable"]:
                out.n_linkable += 1
                out.correct_linkable += right
        if user is not None:
            out.n_with_user += 1
            out.n_correct += right
    return out


def check_join(run: Run) -> MatchScores:
    """Our join of last decisions and truth; raises if it does not reproduce ``evaluate``."""
    own = tally(run.decided_users, run.truth).scores()
    report = run.report
    pairs = {
        "precision": (own.precision, report.match_precision),
        "recall": (own.recall, report.match_recall),
        "recall of linkable": (own.recall_of_linkable, report.recall_of_linkable),
    }
    for name, (ours, theirs) in pairs.items():
        if theirs is None or abs(ours - theirs) > JOIN_TOLERANCE:
            raise RuntimeError(
                f"{run.profile} seed {run.seed}: the {name} of the last decide() per key "
                f"({ours:.4f}) does not reproduce evaluate() ({theirs}); the recording no longer "
                "matches the labels, so nothing below would describe MatchModel"
            )
    return own


def sweep(
    fixed: Mapping[ConversionKey, UserId | None],
    picks: Mapping[ConversionKey, tuple[UserId, float]],
    truth: Mapping[ConversionKey, TruthRow],
) -> list[MatchScores]:
    """Scores with ``picks`` (key -> (user, confidence)) kept when confidence >= a threshold.

    Decisions of keys outside ``picks`` are taken from ``fixed``. The thresholds are 0 and
    every distinct confidence (rounded to 6 places), ascending.

    >>> truth = {"a": {"user_id": "u", "linkable": True}, "b": {"user_id": "v", "linkable": True}}
    >>> [s.precision for s in sweep({}, {"a": ("u", 0.9), "b": ("w", 0.4)}, truth)]
    [0.5, 0.5, 1.0]
    """
    base = tally({k: u for k, u in fixed.items() if k not in picks}, truth)
    keys = list(picks)
    conf = np.array([picks[k][1] for k in keys], dtype=float)
    right = np.array([picks[k][0] == truth[k]["user_id"] for k in keys], dtype=float)
    linkable = np.array([bool(truth[k]["linkable"]) for k in keys], dtype=float)
    thresholds = np.array([0.0, *sorted({round(c, 6) for c in conf})])
    kept = (conf[None, :] >= thresholds[:, None]).astype(float)
    with_user = base.n_with_user + kept.sum(axis=1)
    correct = base.n_correct + kept @ right
    # a right pick names the true user, so it is a platform conversion
    correct_platform = base.correct_platform + kept @ right
    correct_linkable = base.correct_linkable + kept @ (right * linkable)
    return [
        MatchScores(
            float(correct[i] / max(with_user[i], 1)),
            float(correct_platform[i]) / max(base.n_platform, 1),
            float(correct_linkable[i]) / max(base.n_linkable, 1),
            float(thr),
        )
        for i, thr in enumerate(thresholds)
    ]


def best_at_precision(curve: Sequence[MatchScores], min_precision: float) -> MatchScores | None:
    """The point of highest recall of linkable with precision >= ``min_precision`` (first wins).

    >>> curve = [MatchScores(0.95, 0.5, 0.7, 0.5), MatchScores(0.99, 0.5, 0.7, 0.6)]
    >>> best_at_precision(curve, 0.9).threshold
    0.5
    """
    ok = [point for point in curve if point.precision >= min_precision]
    return max(ok, key=lambda point: point.recall_of_linkable) if ok else None


# --- diagnostics of the probabilistic path -------------------------------------------------------


@dataclass(frozen=True)
class PathDiagnostics:
    """Linkable conversions decided on the probabilistic path, and what they allow."""

    n_prob: int
    n_linkable_prob: int
    not_candidate: float  # share whose true user is not among the candidates
    model_first: float  # share whose true user MatchModel ranks first
    ceiling: float  # recall of linkable with a perfect probabilistic path


def diagnose(run: Run) -> PathDiagnostics:
    """Where the true users of linkable probabilistic-path conversions stand."""
    truth = run.truth
    linkable_prob = [k for k in run.prob_keys if truth[k]["linkable"]]
    absent = first = 0
    for key in linkable_prob:
        snap, true_user = run.last[key].snapshot, truth[key]["user_id"]
        if true_user not in {user for user, _ in snap["c"]}:
            absent += 1
        else:
            first += snap["u"] == true_user
    deterministic_right = sum(
        1
        for key, d in run.last.items()
        if key in truth
        and truth[key]["linkable"]
        and (
            d.method.startswith("deterministic")
            or d.snapshot.get("m", "").startswith("none:deterministic")
        )
        and d.user_id == truth[key]["user_id"]
    )
    n = max(len(linkable_prob), 1)
    n_linkable = run.report.n_linkable
    return PathDiagnostics(
        n_prob=len(run.prob_keys),
        n_linkable_prob=len(linkable_prob),
        not_candidate=absent / n,
        model_first=first / n,
        ceiling=(deterministic_right + len(linkable_prob) - absent) / max(n_linkable, 1),
    )


# --- oracle features -----------------------------------------------------------------------------


def relative_features(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Per candidate: (its value minus the best other candidate's, how many beat it).

    Values are sign-flipped first when lower is better; a lone candidate is compared with
    ``-2 * LONG_AGO``.

    >>> relative_features(np.array([3.0, 1.0, 2.0]), lower_is_better=False).tolist()
    [[1.0, 0.0], [-2.0, 2.0], [-1.0, 1.0]]
    >>> relative_features(np.array([3.0, 1.0]), lower_is_better=True).tolist()
    [[-2.0, 1.0], [2.0, 0.0]]
    """
    signed = -values if lower_is_better else values
    if len(signed) > 1:
        top, second = np.sort(signed)[::-1][:2]
        best_other = np.where(signed == top, second, top)
    else:
        best_other = np.full(len(signed), -LONG_AGO * 2)
    rank = (signed[None, :] > signed[:, None]).sum(axis=1).astype(float)
    return np.column_stack([signed - best_other, rank])


def candidate_rows(
    snapshot: Snapshot, true_user: UserId | None
) -> tuple[list[UserId], np.ndarray, np.ndarray]:
    """(candidates, feature matrix, 1 for the true user) of a probabilistic-path snapshot.

    Columns: the pair features, the conversion features, "deterministic ids matched nobody",
    the number of candidates, the relative features and the number of identical-vector twins.
    """
    users = [user for user, _ in snapshot["c"]]
    pair = np.array([vector for _, vector in snapshot["c"]], dtype=float)
    n = len(users)
    columns = [
        pair,
        np.tile(snapshot["x"], (n, 1)),
        np.full((n, 1), float(snapshot["ctx"] == "unmatched")),
        np.full((n, 1), float(n)),
    ]
    for name in RELATIVE_FEATURES:
        columns.append(relative_features(pair[:, _PAIR_INDEX[name]], name in LOWER_IS_BETTER))
    twins = [np.all(pair == pair[i], axis=1).sum() - 1 for i in range(n)]
    columns.append(np.array(twins, dtype=float)[:, None])
    target = np.array([float(user == true_user) for user in users])
    return users, np.hstack(columns), target


# --- a small gradient-boosted tree classifier ----------------------------------------------------


class Split(NamedTuple):
    """An inner node: rows with ``bin <= threshold_bin`` on ``feature`` go ``left``."""

    feature: int
    threshold_bin: int
    left: int
    right: int


Node = Split | float  # a leaf is its value


class GBDT:
    """Histogram gradient-boosted trees, logistic loss, numpy only.

    Quantile bins per feature, depth-limited trees grown on a row subsample, split gain of
    second-order boosting with L2 ``lam`` and a minimum hessian per child.

    >>> rows = np.array([[0.0], [1.0], [2.0], [3.0]] * 10)
    >>> model = GBDT(rounds=20, min_hess=1.0).fit(rows, (rows[:, 0] > 1.5).astype(float))
    >>> (model.predict_proba(np.array([[0.0], [3.0]])) > 0.5).tolist()
    [False, True]
    """

    def __init__(
        self,
        *,
        rounds: int = 200,
        depth: int = 3,
        learning_rate: float = 0.1,
        bins: int = 32,
        min_hess: float = 5.0,
        lam: float = 1.0,
        subsample: float = 0.8,
        seed: int = 0,
    ) -> None:
        self.rounds = rounds
        self.depth = depth
        self.learning_rate = learning_rate
        self.bins = bins
        self.min_hess = min_hess
        self.lam = lam
        self.subsample = subsample
        self.rng = np.random.default_rng(seed)
        self.edges: list[np.ndarray] = []
        self.trees: list[list[Node]] = []
        self.base = 0.0

    def _bin(self, features: np.ndarray) -> np.ndarray:
        binned = np.empty(features.shape, dtype=np.int32)
        for j, edges in enumerate(self.edges):
            binned[:, j] = np.searchsorted(edges, features[:, j], side="right")
        return binned

    def fit(self, features: np.ndarray, target: np.ndarray) -> GBDT:
        """Fit on rows ``features`` and 0/1 ``target``."""
        quantiles = np.linspace(0, 1, self.bins + 1)[1:-1]
        self.edges = [np.unique(np.quantile(col, quantiles)) for col in features.T]
        binned = self._bin(features)
        prior = np.clip(target.mean(), 1e-4, 1 - 1e-4)
        self.base = float(np.log(prior / (1 - prior)))
        logit = np.full(len(target), self.base)
        self.trees = []
        for _ in range(self.rounds):
            prob = 1 / (1 + np.exp(-logit))
            grad, hess = prob - target, prob * (1 - prob)
            rows = np.flatnonzero(self.rng.random(len(target)) < self.subsample)
            tree: list[Node] = []
            self._grow(tree, binned, grad, hess, rows, 0)
            self.trees.append(tree)
            logit += self.learning_rate * self._apply(tree, binned)
        return self

    def _grow(
        self,
        tree: list[Node],
        binned: np.ndarray,
        grad: np.ndarray,
        hess: np.ndarray,
        rows: np.ndarray,
        depth: int,
    ) -> int:
        """Append the subtree over ``rows`` to ``tree``; return the index of its root."""
        g_sum, h_sum = grad[rows].sum(), hess[rows].sum()
        node = len(tree)
        tree.append(0.0)
        if depth < self.depth and h_sum >= 2 * self.min_hess:
            n_features, n_bins = binned.shape[1], self.bins + 1
            flat = (binned[rows] + np.arange(n_features) * n_bins).ravel()
            size = n_features * n_bins
            g_hist = np.bincount(flat, np.repeat(grad[rows], n_features), minlength=size)
            h_hist = np.bincount(flat, np.repeat(hess[rows], n_features), minlength=size)
            g_left = g_hist.reshape(n_features, n_bins).cumsum(axis=1)[:, :-1]
            h_left = h_hist.reshape(n_features, n_bins).cumsum(axis=1)[:, :-1]
            g_right, h_right = g_sum - g_left, h_sum - h_left
            gain = (
                g_left**2 / (h_left + self.lam)
                + g_right**2 / (h_right + self.lam)
                - g_sum**2 / (h_sum + self.lam)
            )
            gain[(h_left < self.min_hess) | (h_right < self.min_hess)] = -np.inf
            feature, threshold_bin = np.unravel_index(np.argmax(gain), gain.shape)
            if np.isfinite(gain[feature, threshold_bin]) and gain[feature, threshold_bin] > 1e-9:
                goes_left = binned[rows, feature] <= threshold_bin
                left = self._grow(tree, binned, grad, hess, rows[goes_left], depth + 1)
                right = self._grow(tree, binned, grad, hess, rows[~goes_left], depth + 1)
                tree[node] = Split(int(feature), int(threshold_bin), left, right)
                return node
        tree[node] = float(-g_sum / (h_sum + self.lam))
        return node

    @staticmethod
    def _apply(tree: list[Node], binned: np.ndarray) -> np.ndarray:
        """Each row's leaf value."""
        out = np.empty(len(binned))
        stack = [(0, np.arange(len(binned)))]
        while stack:
            node, rows = stack.pop()
            split = tree[node]
            if not isinstance(split, Split):
                out[rows] = split
                continue
            goes_left = binned[rows, split.feature] <= split.threshold_bin
            stack += [(split.left, rows[goes_left]), (split.right, rows[~goes_left])]
        return out

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """P(target = 1) per row."""
        binned = self._bin(features)
        logit = np.full(len(features), self.base)
        for tree in self.trees:
            logit += self.learning_rate * self._apply(tree, binned)
        return 1 / (1 + np.exp(-logit))


# --- the cross-fitted oracle ---------------------------------------------------------------------


class OracleRepeat(NamedTuple):
    """One repeat of the cross-fitted oracle."""

    best: dict[float, MatchScores | None]  # min precision -> best point of the sweep
    true_user_first: float  # share of linkable prob-path conversions whose top is the true user


def oracle_picks(
    rows: Mapping[ConversionKey, tuple[list[UserId], np.ndarray, np.ndarray]],
    repeat: int,
    *,
    rounds: int,
    depth: int,
) -> dict[ConversionKey, tuple[UserId, float]]:
    """Top candidate and its probability per key, from a GBDT fitted on the other fold."""
    keys = list(rows)
    rng = np.random.default_rng(FOLD_SEED_BASE + repeat)
    fold = dict(zip(keys, rng.integers(0, 2, len(keys)).tolist(), strict=True))
    picks: dict[ConversionKey, tuple[UserId, float]] = {}
    for held_out in (0, 1):
        train = [k for k in keys if fold[k] != held_out]
        test = [k for k in keys if fold[k] == held_out]
        model = GBDT(rounds=rounds, depth=depth, seed=repeat).fit(
            np.vstack([rows[k][1] for k in train]), np.concatenate([rows[k][2] for k in train])
        )
        prob = np.clip(model.predict_proba(np.vstack([rows[k][1] for k in test])), 1e-6, 1 - 1e-6)
        start = 0
        for key in test:
            users = rows[key][0]
            mine = prob[start : start + len(users)]
            start += len(users)
            top = int(np.argmax(mine))
            picks[key] = (users[top], float(mine[top]))
    return picks


def run_oracle(run: Run, repeats: int, *, rounds: int, depth: int) -> list[OracleRepeat]:
    """Cross-fit the oracle ``repeats`` times and sweep its confidence each time."""
    truth = run.truth
    prob_keys = run.prob_keys
    rows = {k: candidate_rows(run.last[k].snapshot, truth[k]["user_id"]) for k in prob_keys}
    if run.history is not None:
        history = run.history
        rows = {k: (u, np.hstack([x, history.columns(k, u)]), y) for k, (u, x, y) in rows.items()}
    linkable_prob = [k for k in prob_keys if truth[k]["linkable"]]
    out = []
    for repeat in range(repeats):
        picks = oracle_picks(rows, repeat, rounds=rounds, depth=depth)
        curve = sweep(run.decided_users, picks, truth)
        first = sum(picks[k][0] == truth[k]["user_id"] for k in linkable_prob)
        out.append(
            OracleRepeat(
                {p: best_at_precision(curve, p) for p in PRECISIONS},
                first / max(len(linkable_prob), 1),
            )
        )
    return out


# --- report --------------------------------------------------------------------------------------


@dataclass
class Result:
    """Everything printed for one profile and seed."""

    run: Run
    diagnostics: PathDiagnostics
    model_best: dict[float, MatchScores | None]
    oracle: list[OracleRepeat]
    oracle_seconds: float


def _rol(point: MatchScores | None) -> str:
    return "n/a" if point is None else f"{point.recall_of_linkable:.3f}"


def _spread(values: Sequence[float]) -> str:
    """Mean [min-max], or n/a.

    >>> _spread([0.8, 0.7, 0.9])
    '0.800 [0.700-0.900]'
    """
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def _oracle_rol(result: Result, min_precision: float) -> str:
    points = [r.best[min_precision] for r in result.oracle]
    if any(p is None for p in points):
        return "n/a"
    return _spread([p.recall_of_linkable for p in points if p is not None])


def block(result: Result) -> list[str]:
    """The readable block printed when a profile/seed is done."""
    run, diag, report = result.run, result.diagnostics, result.run.report
    swept = ", ".join(
        f"{_rol(result.model_best[p])} at P>={p:.2f}"
        + ("" if result.model_best[p] is None else f" (thr {result.model_best[p].threshold:.3f})")
        for p in PRECISIONS
    )
    oracle = ", ".join(f"{_oracle_rol(result, p)} at P>={p:.2f}" for p in PRECISIONS)
    first = np.mean([r.true_user_first for r in result.oracle]) if result.oracle else float("nan")
    return [
        f"== {run.profile} seed {run.seed}: {report.n_linkable:,} linkable; {diag.n_prob:,} "
        f"probabilistic-path conversions, {diag.n_linkable_prob:,} of them linkable "
        f"(MatchModel run {run.seconds:.0f} s, oracle {result.oracle_seconds:.0f} s)",
        f"MatchModel: precision {report.match_precision:.4f}, recall {report.match_recall:.4f}, "
        f"recall of linkable {report.recall_of_linkable:.4f} (evaluate(); own join agrees)",
        f"linkable probabilistic path: true user not a candidate {diag.not_candidate:.3f}; "
        f"MatchModel ranks it first {diag.model_first:.3f}; recall-of-linkable ceiling "
        f"{diag.ceiling:.3f}",
        f"MatchModel threshold swept: recall of linkable {swept}",
        f"oracle GBDT ({len(result.oracle)} repeats): recall of linkable {oracle}; "
        f"true user ranked first {first:.3f}",
    ]


TABLE_HEADER = [
    "| profile | seed | P | R | RoL | true user not a candidate | MatchModel ranks true user first "
    "| RoL ceiling | MatchModel swept RoL @P>=.92 | @P>=.95 | oracle RoL @P>=.92 | @P>=.95 "
    "| oracle ranks true user first |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def table_row(result: Result) -> str:
    """One markdown row of the summary table."""
    run, diag, report = result.run, result.diagnostics, result.run.report
    first = np.mean([r.true_user_first for r in result.oracle]) if result.oracle else float("nan")
    cells = [
        run.profile,
        str(run.seed),
        f"{report.match_precision:.4f}",
        f"{report.match_recall:.4f}",
        f"{report.recall_of_linkable:.4f}",
        f"{diag.not_candidate:.3f}",
        f"{diag.model_first:.3f}",
        f"{diag.ceiling:.3f}",
        *(_rol(result.model_best[p]) for p in PRECISIONS),
        *(_oracle_rol(result, p) for p in PRECISIONS),
        f"{first:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


def analyse(
    profile: str, seed: int, repeats: int, *, rounds: int, depth: int, **options: Any
) -> Result:
    """Run MatchModel on one profile/seed, check the join, and bound it (``options``: the
    ``top_k``, ``max_candidates`` and ``history`` of :func:`record`)."""
    run = record(profile, seed, **options)
    check_join(run)
    model_picks = {k: (run.last[k].snapshot["u"], run.last[k].snapshot["p"]) for k in run.prob_keys}
    curve = sweep(run.decided_users, model_picks, run.truth)
    started = time.monotonic()
    oracle = run_oracle(run, repeats, rounds=rounds, depth=depth)
    return Result(
        run,
        diagnose(run),
        {p: best_at_precision(curve, p) for p in PRECISIONS},
        oracle,
        time.monotonic() - started,
    )


def split_values(values: list[str] | None, default: Sequence[str]) -> list[str]:
    """Flatten repeated and comma-separated option values.

    >>> split_values(["hard,default", "strangers"], ["x"]), split_values(None, ["x"])
    (['hard', 'default', 'strangers'], ['x'])
    """
    if not values:
        return list(default)
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m research.match_bound",
        description=__doc__.split("\n>>>")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--profile",
        action="append",
        help=f"generator profile, repeatable or comma-separated (default: "
        f"{','.join(DEFAULT_PROFILES)})",
    )
    parser.add_argument("--seed", action="append", help="generator seed(s) (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="oracle cross-fits (default: 5)")
    parser.add_argument("--rounds", type=int, default=200, help="GBDT boosting rounds")
    parser.add_argument("--depth", type=int, default=3, help="GBDT tree depth")
    parser.add_argument("--top-k", type=int, default=8, help="users per lookup answer (8)")
    parser.add_argument(
        "--max-candidates", type=int, default=12, help="candidates probed and scored (12)"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="give the oracle each candidate's whole history from the replay too",
    )
    args = parser.parse_args()
    profiles = split_values(args.profile, DEFAULT_PROFILES)
    seeds = [int(s) for s in split_values(args.seed, ["1"])]
    for profile in profiles:
        config_from_args(profile)  # fail on a typo before the first long run
    started = time.monotonic()
    results = []
    for profile in profiles:
        for seed in seeds:
            result = analyse(
                profile,
                seed,
                args.repeats,
                rounds=args.rounds,
                depth=args.depth,
                top_k=args.top_k,
                max_candidates=args.max_candidates,
                history=args.history,
            )
            results.append(result)
            print("\n".join(block(result)) + "\n", flush=True)
    print("\n".join([*TABLE_HEADER, *(table_row(r) for r in results)]))
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
