"""Where a conversion gets its user: candidates to probe, then the match and the label record.

The conversions agent calls :func:`select_probe_candidates` once every lookup answer is in,
probes those users' engagements, then :func:`resolve` scores them with the partition's match
model, attributes the conversion and builds the label (docs/design.md).

>>> from convstream.core.matching.baseline import RuleBaseline
>>> from convstream.core.attribution import AttributionSettings
>>> conv = {"conversion_key": "a:Purchase:1", "event_id": "1", "event_name": "Purchase",
...         "advertiser_id": "a", "ts": 1_000, "value": 9.5, "currency": "USD",
...         "sources": ["capi"], "user_data": {"click_id": "k1"}}
>>> answers = {"click:k1": {"key": "click:k1", "kind": "click", "degree": 1,
...                         "users": [["u1", 900, 900, 1]]}}
>>> select_probe_candidates(conv, answers)
['u1']
>>> probes = {"u1": {"user_id": "u1", "engagements": [[900, "click", "k1", "a", "c", "ad"]],
...                  "last_adv_ts": 900, "last_click_ts": 900, "n_adv": 1, "n_clicks": 1}}
>>> label, decision = resolve(conv, answers, probes, RuleBaseline(), AttributionSettings(),
...                           revision=0, emitted_at=2_000)
>>> label["user_id"], label["match_method"], label["label_weight"], label["credits"][0]["ad_id"]
('u1', 'deterministic:click', 1.0, 'ad')
"""

from __future__ import annotations

from typing import Any, Protocol

from convstream.core.attribution import (
    AttributionSettings,
    Engagement,
    attribute,
    label_weight,
    weigh,
)
from convstream.core.identity import conversion_identifier_keys
from convstream.core.matching.candidates import select_candidates
from convstream.core.matching.model import MatchDecision
from convstream.core.shared_values import shared_keys

LabelRecord = dict[str, Any]


class Matcher(Protocol):
    """What ``resolve`` needs from a match model (``MatchModel`` and the baselines)."""

    def decide(self, conv: dict, answers: dict, probes: dict) -> MatchDecision: ...

    def learn_self_supervised(
        self, conv: dict, answers: dict, probes: dict, decision: MatchDecision
    ) -> None: ...


def select_probe_candidates(
    conv: dict[str, Any], answers: dict[str, dict[str, Any]], max_candidates: int = 12
) -> list[str]:
    """Users to probe: every deterministic candidate (bounded), then at most
    ``max_candidates`` probabilistic ones by a cheap prior
    (``convstream/core/matching/candidates.py``).
    """
    return select_candidates(conv, answers, max_candidates)


def resolve(
    conv: dict[str, Any],
    answers: dict[str, dict[str, Any]],
    probes: dict[str, dict[str, Any]],
    matcher: Matcher,
    attribution_settings: AttributionSettings,
    *,
    revision: int,
    emitted_at: int,
    learn: bool = False,
) -> tuple[LabelRecord, MatchDecision]:
    """Match, attribute and build the label.

    The caller then calls ``matcher.learn_self_supervised(conv, answers, probes, decision)``
    (after deciding, so the model's metrics stay progressive); ``learn=True`` does it here.
    """
    decision = matcher.decide(conv, answers, probes)
    if learn:
        matcher.learn_self_supervised(conv, answers, probes, decision)
    credits: list[dict[str, Any]] = []
    if decision.user_id is not None:
        rows = (probes.get(decision.user_id) or {}).get("engagements") or []
        touches = attribute(
            conv["ts"], [Engagement.from_row(r) for r in rows], attribution_settings
        )
        credits = weigh(touches, decision.confidence)
    label = {
        "conversion_key": conv["conversion_key"],
        "advertiser_id": conv["advertiser_id"],
        "event_id": conv["event_id"],
        "event_name": conv["event_name"],
        "ts": conv["ts"],
        "value": conv.get("value"),
        "currency": conv.get("currency"),
        "sources": sorted(conv.get("sources") or []),
        "user_id": decision.user_id,
        "match_confidence": decision.confidence if decision.user_id is not None else 0.0,
        "match_method": decision.method,
        "match_explanation": list(decision.explanation) + _dropped(conv),
        "attribution_model": attribution_settings.model,
        "credits": credits,
        "label_weight": label_weight(credits),
        "revision": revision,
        "emitted_at": emitted_at,
    }
    return label, decision


def _sole_click(decision: MatchDecision, answers: dict[str, dict[str, Any]]) -> bool:
    """The decision is a click id's, and that click id has no user but the matched one."""
    clicks = [a for a in answers.values() if a.get("kind") == "click" and a.get("users")]
    return (
        decision.method == "deterministic:click"
        and bool(clicks)
        and all(a["degree"] <= 1 and a["users"][0][0] == decision.user_id for a in clicks)
    )


DROPPED = "dropped "


def _dropped(conv: dict[str, Any]) -> list[str]:
    """What the label says of the identifier values dropped from the conversion (junk at
    ingestion, shared values once answered).

    >>> _dropped({"rejected_identifiers": [["em", "shared"], ["ph", "placeholder"]]})
    ['dropped em: shared', 'dropped ph: placeholder']
    """
    return [f"{DROPPED}{f}: {why}" for f, why in conv.get("rejected_identifiers") or []]


def dropped_identifiers(label: LabelRecord) -> list[tuple[str, str]]:
    """``(field, reason)`` of each identifier value a label says was dropped.

    >>> dropped_identifiers({"match_explanation": ["em match", "dropped ph: shared"]})
    [('ph', 'shared')]
    """
    out = []
    for line in label.get("match_explanation") or []:
        if line.startswith(DROPPED) and ": " in line:
            field, reason = line[len(DROPPED) :].split(": ", 1)
            out.append((field, reason))
    return out


#: Kinds a deterministic match teaches the index: the advertiser's customer id, and an email or
#: phone the converter shopped with.
LINKED_KINDS = ("ext", "em", "ph")
#: A link is learned only from a match at least this likely to be right, as for self-supervised
#: examples: a family tablet's shared device id ("dev:contested") teaches nothing.
LINK_MIN_CONFIDENCE = 0.9


def identity_links(
    conv: dict[str, Any], decision: MatchDecision, answers: dict[str, dict[str, Any]] | None = None
) -> list[tuple[str, str]]:
    """``(key, user_id)`` to record after a deterministic match: the conversion's external id,
    email and phone become deterministic identifiers of the matched user for later conversions
    (other than the kind that matched, which the index already ties to the user, and values
    of the round's ``answers`` dropped as shared by too many users).

    A user who shops with an email the platform never learned, and converts once with a click id
    as well, is then matched on that email alone next time, rather than by address. A match by
    a click id that one user holds teaches its links even when the email's other users make it
    contested: the click says who converted, and the contest is what shows a checkout form's
    fallback email on ever more users until it is dropped as shared.

    >>> conv = {"advertiser_id": "a", "user_data": {"click_id": "c", "em": "e" * 64}}
    >>> identity_links(conv, MatchDecision("u1", 0.99, "deterministic:click", []))
    [('em:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 'u1')]
    >>> identity_links(conv, MatchDecision("u1", 0.6, "deterministic:dev", []))
    []
    >>> click = {"click:c": {"kind": "click", "degree": 1, "users": [["u1", 0, 0, 1]]}}
    >>> len(identity_links(conv, MatchDecision("u1", 0.6, "deterministic:click", []), click))
    1
    """
    answers = answers or {}
    if decision.user_id is None or not decision.method.startswith("deterministic:"):
        return []
    if decision.confidence < LINK_MIN_CONFIDENCE and not _sole_click(decision, answers):
        return []
    skip = shared_keys(answers)
    matched = decision.method.split(":", 1)[1]
    keys = conversion_identifier_keys(conv["advertiser_id"], conv.get("user_data") or {})
    return [
        (ident, decision.user_id)
        for kind, ident in dict.fromkeys(keys)
        if kind in LINKED_KINDS and kind != matched and ident not in skip
    ]
