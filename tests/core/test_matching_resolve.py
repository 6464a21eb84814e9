"""resolve(): the label record of the contract, from answers, probes and a matcher."""

from __future__ import annotations

import math

from convstream.core.attribution import AttributionSettings
from convstream.core.matching.baseline import DeterministicOnly, RuleBaseline
from convstream.core.matching.model import MatchDecision, MatchModel
from convstream.core.resolve import identity_links, resolve, select_probe_candidates

T = 1_767_571_200_000
CONV = {
    "conversion_key": "adv-1:Purchase:o1",
    "event_id": "o1",
    "event_name": "Purchase",
    "advertiser_id": "adv-1",
    "ts": T,
    "value": 12.5,
    "currency": "EUR",
    "sources": ["pixel", "capi"],
    "user_data": {"em": "e" * 64, "external_id": "f" * 64, "client_ip_address": "1.2.3.4"},
}
ANSWERS = {
    "em:" + "e" * 64: {"key": "em:x", "kind": "em", "degree": 1, "users": [["u1", 0, T - 9, 1]]},
    "ip:1.2.3.4": {
        "key": "ip:1.2.3.4",
        "kind": "ip",
        "degree": 2,
        "users": [["u2", 0, T - 5, 1], ["u1", 0, T - 50, 3]],
    },
}
PROBES = {
    "u1": {
        "user_id": "u1",
        "n_adv": 2,
        "n_clicks": 1,
        "last_adv_ts": T - 1000,
        "last_click_ts": T - 5000,
        "engagements": [
            [T - 5000, "click", "k1", "adv-1", "c1", "ad1"],
            [T - 1000, "view", "i1", "adv-1", "c1", "ad2"],
        ],
    },
    "u2": {
        "user_id": "u2",
        "n_adv": 0,
        "n_clicks": 0,
        "last_adv_ts": None,
        "last_click_ts": None,
        "engagements": [],
    },
}
FIELDS = {
    "conversion_key",
    "advertiser_id",
    "event_id",
    "event_name",
    "ts",
    "value",
    "currency",
    "sources",
    "user_id",
    "match_confidence",
    "match_method",
    "match_explanation",
    "attribution_model",
    "credits",
    "label_weight",
    "revision",
    "emitted_at",
}


def test_label_record_matches_the_contract():
    label, decision = resolve(
        CONV,
        ANSWERS,
        PROBES,
        MatchModel(),
        AttributionSettings(),
        revision=3,
        emitted_at=T + 60_000,
    )
    assert set(label) == FIELDS
    assert label["user_id"] == "u1" == decision.user_id
    assert label["match_method"] == "deterministic:em"
    assert 0.9 < label["match_confidence"] <= 1.0
    assert label["match_explanation"] and all(
        isinstance(s, str) for s in label["match_explanation"]
    )
    assert (label["revision"], label["emitted_at"], label["sources"]) == (
        3,
        T + 60_000,
        ["capi", "pixel"],
    )
    # last touch: the click beats the later view
    [credit] = label["credits"]
    assert credit["engagement_id"] == "k1" and credit["credit"] == 1.0
    assert credit["label_weight"] == label["match_confidence"]
    assert set(credit) == {
        "engagement_id",
        "engagement_type",
        "ad_id",
        "campaign_id",
        "engagement_ts",
        "credit",
        "label_weight",
    }
    assert label["label_weight"] == math.fsum(c["label_weight"] for c in label["credits"])


def test_linear_attribution_splits_label_weight():
    label, _ = resolve(
        CONV,
        ANSWERS,
        PROBES,
        RuleBaseline(),
        AttributionSettings(model="linear", view_window_ms=10**9),
        revision=0,
        emitted_at=T,
    )
    assert label["attribution_model"] == "linear"
    assert [c["credit"] for c in label["credits"]] == [1.0]  # click beats view when eligible
    assert label["label_weight"] == 0.95


def test_no_user_gives_empty_credits_and_zero_weight():
    answers = {"ip:1.2.3.4": ANSWERS["ip:1.2.3.4"]}
    label, decision = resolve(
        CONV, answers, PROBES, DeterministicOnly(), AttributionSettings(), revision=0, emitted_at=T
    )
    assert decision.user_id is None
    assert (label["user_id"], label["credits"], label["label_weight"]) == (None, [], 0.0)
    assert (label["match_confidence"], label["match_method"]) == (0.0, "none")


def test_probe_candidates_put_deterministic_users_first_and_are_bounded():
    assert select_probe_candidates(CONV, ANSWERS) == ["u1", "u2"]
    assert select_probe_candidates(CONV, ANSWERS, max_candidates=0) == ["u1"]


def test_resolve_learns_only_when_asked():
    frozen = MatchModel()
    resolve(CONV, ANSWERS, PROBES, frozen, AttributionSettings(), revision=0, emitted_at=T)
    assert frozen.pair.n == 0
    model = MatchModel()
    resolve(
        CONV, ANSWERS, PROBES, model, AttributionSettings(), revision=0, emitted_at=T, learn=True
    )
    assert model.pair.n == 2  # both probabilistic candidates became self-supervised pairs


def test_identity_links_come_from_confident_deterministic_matches_only():
    by_em = MatchDecision("u1", 0.97, "deterministic:em", [])
    # The external id is linked; the email that matched is the index's already.
    assert identity_links(CONV, by_em) == [("ext:adv-1:" + "f" * 64, "u1")]
    by_click = MatchDecision("u1", 0.99, "deterministic:click", [])
    assert {key.split(":")[0] for key, _ in identity_links(CONV, by_click)} == {"ext", "em"}
    by_ext = MatchDecision("u1", 0.95, "deterministic:ext", [])
    assert identity_links(CONV, by_ext) == [("em:" + "e" * 64, "u1")]
    assert identity_links(CONV, MatchDecision("u1", 0.95, "model", [])) == []
    # A shared device id ("dev:contested") is not trusted enough to teach the index.
    assert identity_links(CONV, MatchDecision("u1", 0.6, "deterministic:dev", [])) == []
    no_ext = dict(CONV, user_data={"em": "e" * 64})
    assert identity_links(no_ext, by_em) == []
