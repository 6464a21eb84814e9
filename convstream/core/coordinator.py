"""The life of one conversion key: dedupe, lookups, probes, label revisions, feedback.

A conversion's state is a plain dict kept in the conversions table. Every step is a function
that takes the state and returns what to send next, so the Faust agent only moves messages:

1. :func:`admit` a CAPI or pixel copy (first copy wins; later copies fill missing identifiers);
2. :func:`start_round` asks the identifier index for every identifier it carries;
3. :func:`on_answer` collects those answers, then :func:`probe_targets` names the candidates
   whose engagements are needed, and :func:`on_probe` collects them;
4. :func:`finish` scores, attributes and returns a label when it is new or changed.

A copy that adds identifiers after a label went out starts a new round; its label carries a
higher revision. Answers of an older round are ignored.

>>> conv = {"conversion_key": "a:Purchase:1", "ts": 5, "sources": ["pixel"],
...         "user_data": {"click_id": "k1"}, "advertiser_id": "a"}
>>> state, outcome = admit(None, conv, clock_ts=5, policy=Policy())
>>> outcome
'new'
>>> state, lookups = start_round(state, ["click:k1"])
>>> lookups
['click:k1']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from convstream.core import shared_values
from convstream.core.dedupe import identifier_gain, merge_user_data
from convstream.core.units import DAY_MS


class ConversionState(TypedDict, total=False):
    """One conversion key's state in the conversions table (a JSON object on its changelog).

    Truth that arrived before its conversion (:func:`feedback_first`) has only ``phase`` and
    ``feedback``.
    """

    conv: dict[str, Any]  # the merged copy: conversion_key, ts, sources, user_data, ...
    round: int  # the resolution round in flight or last done; answers of others are ignored
    revision: int  # of the last label emitted (-1: none yet)
    phase: str  # feedback_first, new, held, lookup, probe or done
    pending: list[str]  # identifier keys (lookup) or user ids (probe) still to answer
    answers: dict[str, Any]  # identifier key -> lookup answer, this round
    probes: dict[str, Any]  # user id -> probe answer, this round
    label: dict[str, Any] | None  # the gist of the last label emitted
    snapshot: Any  # the match model's snapshot of the last decision, for feedback
    feedback: dict[str, Any] | None  # {user_id, ts, learned}: delayed truth
    round_at: float  # wall time the round started: redrive only, never event time
    again: bool  # a copy with new identifiers came during the round: another one follows
    # The last label emitted, whole, and its number among its partition's labels: sent again
    # by the partition's next owner if it was decided after the replica's checkpoint.
    sent: dict[str, Any]  # {"seq": int, "label": dict}
    incremental: bool  # its conversion taught the incrementality estimators (once per key)


@dataclass(frozen=True)
class Policy:
    """The rules of a conversion's life: event time for admitting copies (durations in
    milliseconds), and how many distinct users a personal identifier value may have before it
    is shared junk (:mod:`convstream.core.shared_values`)."""

    dedupe_window_ms: int = 2 * DAY_MS
    max_age_ms: int = 7 * DAY_MS
    max_future_ms: int = 30 * DAY_MS
    feedback_horizon_ms: int = 7 * DAY_MS
    max_users_per_value: int = shared_values.DEFAULT_LIMIT


def admit(
    state: ConversionState | None, conv: dict[str, Any], *, clock_ts: int | None, policy: Policy
) -> tuple[ConversionState | None, str]:
    """Take one copy; outcome is new, duplicate, correction, late, too_old or future.

    ``clock_ts`` is the partition's event-time clock (newest conversion ts seen), never wall
    time, so replays of old traffic behave as live traffic did.

    >>> p = Policy(dedupe_window_ms=10, max_age_ms=100, max_future_ms=50)
    >>> admit(None, {"ts": 1_000, "user_data": {}}, clock_ts=1_200, policy=p)[1]
    'too_old'
    >>> admit(None, {"ts": 1_100, "user_data": {}}, clock_ts=1_000, policy=p)[1]
    'future'
    """
    ts = conv["ts"]
    early: dict[str, Any] | None = None
    if state is not None and state["phase"] == "feedback_first":
        early = state["feedback"]
        state = None
    if state is None:
        if clock_ts is not None and ts < clock_ts - policy.max_age_ms:
            return None, "too_old"
        if clock_ts is not None and ts > clock_ts + policy.max_future_ms:
            return None, "future"
        fresh: ConversionState = {
            "conv": conv,
            "round": -1,
            "revision": -1,
            "pending": [],
            "answers": {},
            "probes": {},
            "phase": "new",
            "label": None,
            "snapshot": None,
            "feedback": early,
        }
        return fresh, "new"
    first = state["conv"]
    if clock_ts is not None and clock_ts - first["ts"] > policy.dedupe_window_ms:
        return state, "late"
    merged_ud = merge_user_data(first["user_data"], conv["user_data"])
    gained = identifier_gain(first["user_data"], merged_ud)
    sources = sorted(set(first["sources"]) | set(conv["sources"]))
    state["conv"] = {**first, "user_data": merged_ud, "sources": sources}
    rejected = list(first.get("rejected_identifiers") or [])
    rejected += [r for r in conv.get("rejected_identifiers") or [] if r not in rejected]
    if rejected:
        state["conv"]["rejected_identifiers"] = rejected
    return state, "correction" if gained else "duplicate"


def feedback_first(user_id: str | None, ts: int) -> ConversionState:
    """State for delayed truth that arrived before its conversion was read.

    Each topic partition is read at its own pace, so on a replay or after downtime the small
    feedback topic runs ahead of the conversions. The truth waits in the conversion's own state
    (same key, same partition) for :func:`admit` to take it over, until ``expired``.

    >>> p = Policy(max_age_ms=100)
    >>> state, outcome = admit(feedback_first("u1", 1_050), {"ts": 1_000, "user_data": {}},
    ...                        clock_ts=1_000, policy=p)
    >>> outcome, state["feedback"], state["phase"]
    ('new', {'user_id': 'u1', 'ts': 1050}, 'new')
    """
    return {"phase": "feedback_first", "feedback": {"user_id": user_id, "ts": ts}}


def start_round(state: ConversionState, identifiers: Iterable[str]) -> tuple[ConversionState, list]:
    """Begin a resolution round: the identifier keys to look up (may be empty)."""
    state["round"] += 1
    state["pending"] = sorted(set(identifiers))
    state["answers"] = {}
    state["probes"] = {}
    state["phase"] = "lookup"
    return state, list(state["pending"])


def on_answer(state: ConversionState, round_: int, key: str, answer: dict) -> bool:
    """Store a lookup answer; True when the round has every answer it asked for.

    The phase is read first: truth waiting for its conversion has no round (a stray answer to
    a key whose state expired meanwhile must not crash the agent).

    >>> on_answer(feedback_first(None, 0), 0, "ip:1.2.3.4", {})
    False
    """
    if state["phase"] != "lookup" or round_ != state["round"] or key not in state["pending"]:
        return False
    state["answers"][key] = answer
    state["pending"].remove(key)
    return not state["pending"]


def begin_probes(state: ConversionState, users: list[str]) -> list[str]:
    """Record which candidates are being probed; returns them (empty: finish right away)."""
    state["phase"] = "probe"
    state["pending"] = list(dict.fromkeys(users))
    return list(state["pending"])


def on_probe(state: ConversionState, round_: int, user_id: str, probe: dict) -> bool:
    """Store a probe answer; True when every probed candidate has answered (phase first, as
    in :func:`on_answer`)."""
    if state["phase"] != "probe" or round_ != state["round"] or user_id not in state["pending"]:
        return False
    state["probes"][user_id] = probe
    state["pending"].remove(user_id)
    return not state["pending"]


def label_changed(previous: dict[str, Any] | None, label: dict[str, Any]) -> bool:
    """Whether a new label says something the previous revision did not."""
    if previous is None:
        return True

    def gist(lab: dict[str, Any]) -> tuple:
        credits = tuple((c["engagement_id"], round(c["label_weight"], 9)) for c in lab["credits"])
        return lab["user_id"], round(lab["match_confidence"], 9), credits, tuple(lab["sources"])

    return gist(previous) != gist(label)


def settle(state: ConversionState, label: dict[str, Any], snapshot: Any) -> dict | None:
    """Close the round; returns the label to emit (revision set) or None if nothing changed."""
    state["phase"] = "done"
    state["pending"] = []
    state["answers"] = {}
    state["probes"] = {}
    state["snapshot"] = snapshot
    if not label_changed(state["label"], label):
        return None
    state["revision"] += 1
    label = {**label, "revision": state["revision"]}
    state["label"] = {
        k: label[k] for k in ("user_id", "match_confidence", "credits", "sources", "revision")
    }
    return label


def expired(state: ConversionState, clock_ts: int, policy: Policy) -> bool:
    """State is kept for dedupe and for delayed feedback, then dropped (event time).

    A conversion still being resolved is never dropped: conversions are read far ahead of the
    engagement topics during a replay, so the conversions clock can pass a key's horizon while
    its lookups still wait for the engagement watermark.

    Truth waiting for its conversion (:func:`feedback_first`) is dropped once the conversion
    could no longer be admitted: ``max_age_ms`` past the truth's own time, which is later than
    the conversion's.

    >>> pending, done = {"conv": {"ts": 0}, "phase": "lookup"}, {"conv": {"ts": 0}, "phase": "done"}
    >>> expired(pending, 10 * DAY_MS, Policy()), expired(done, 10 * DAY_MS, Policy())
    (False, True)
    >>> early = feedback_first(None, 0)
    >>> expired(early, 7 * DAY_MS, Policy()), expired(early, 7 * DAY_MS + 1, Policy())
    (False, True)
    """
    if state["phase"] == "feedback_first":
        truth = state["feedback"]
        return truth is None or clock_ts - truth["ts"] > policy.max_age_ms
    if state["phase"] != "done":
        return False
    keep = max(policy.dedupe_window_ms, policy.feedback_horizon_ms)
    return clock_ts - state["conv"]["ts"] > keep
