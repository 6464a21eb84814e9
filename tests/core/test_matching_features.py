"""Feature construction from hand-made lookup and probe answers."""

from __future__ import annotations

import math

import pytest

from convstream.core.matching.candidates import prior_scores, select_candidates
from convstream.core.matching.features import (
    LONG_AGO,
    PAIR_FEATURES,
    candidate_features,
    from_vector,
    to_vector,
)

T = 100_000_000  # conversion time (ms)


def _answer(key: str, degree: int, rows: list[list]) -> dict:
    return {"key": key, "kind": key.split(":", 1)[0], "degree": degree, "users": rows}


CONV = {
    "ts": T,
    "sources": ["pixel", "capi"],
    "user_data": {"client_ip_address": "1.2.3.4", "client_user_agent": "UA", "em": "h"},
}
ANSWERS = {
    "em:h": _answer("em:h", 1, [["u9", 0, T - 5_000, 2]]),
    "ip:1.2.3.4": _answer(
        "ip:1.2.3.4",
        3,
        [["u1", T - 90_000_000, T - 60_000, 5], ["u2", T - 50_000_000, T - 3_600_000, 1]],
    ),
    "ipua:1.2.3.4|abc": _answer("ipua:1.2.3.4|abc", 2, [["u1", T - 90_000_000, T - 60_000, 4]]),
}
PROBES = {
    "u1": {
        "user_id": "u1",
        "engagements": [[T - 7_200_000, "click", "k1", "a", "c", "ad"]],
        "last_adv_ts": T - 7_200_000,
        "last_click_ts": T - 7_200_000,
        "n_adv": 1,
        "n_clicks": 1,
    },
    "u2": {
        "user_id": "u2",
        "engagements": [],
        "last_adv_ts": None,
        "last_click_ts": None,
        "n_adv": 0,
        "n_clicks": 0,
    },
}


def test_probabilistic_candidate_features():
    feats = candidate_features(CONV, ANSWERS, PROBES, kinds=("ipua", "ip"))
    assert sorted(feats) == ["u1", "u2"]
    u1, u2 = feats["u1"], feats["u2"]
    assert set(u1) == set(PAIR_FEATURES)
    # identifier agreement
    assert (u1["ipua"], u1["ip"], u1["ip_only"]) == (1.0, 1.0, 0.0)
    assert (u2["ipua"], u2["ip"], u2["ip_only"]) == (0.0, 1.0, 1.0)
    assert all(u1[k] == 0.0 for k in ("click", "em", "ph", "dev", "ext"))
    # degree / term frequency
    assert u1["ip_logdeg"] == pytest.approx(math.log(3))
    assert u1["ip_inv"] == pytest.approx(1 / 3) and u1["ipua_inv"] == pytest.approx(1 / 2)
    assert u2["ipua_inv"] == 0.0 and u2["ipua_logdeg"] == pytest.approx(math.log(2))
    # recency (log seconds) and counts
    assert u1["ip_age"] == pytest.approx(math.log1p(60))
    assert u2["ip_age"] == pytest.approx(math.log1p(3600))
    assert u2["ipua_age"] == LONG_AGO
    assert u1["ip_cnt"] == pytest.approx(math.log1p(5)) and u1["ipua_cnt"] == pytest.approx(
        math.log1p(4)
    )
    assert (u1["ip_rank"], u2["ip_rank"]) == (0.0, 1.0)
    assert u1["ip_share"] == pytest.approx(5 / 6)
    assert u1["ip_age_gap"] == 0.0 and u2["ip_age_gap"] > 0.0
    # advertiser engagement from the probes
    assert (u1["adv"], u1["adv_click"], u2["adv"]) == (1.0, 1.0, 0.0)
    assert u1["adv_age"] == pytest.approx(math.log1p(7200))
    assert u2["adv_age"] == LONG_AGO and u2["adv_others"] == pytest.approx(math.log1p(1))
    # conversion-level context
    assert u1["n_cand"] == pytest.approx(math.log1p(2))
    assert (u1["capi"], u1["pixel"], u1["no_ip"], u1["no_ua"]) == (1.0, 1.0, 0.0, 0.0)


def test_deterministic_kinds_and_unprobed_candidates():
    feats = candidate_features(CONV, ANSWERS, {})
    assert feats["u9"]["em"] == 1.0 and feats["u9"]["ip"] == 0.0
    assert feats["u9"]["probed"] == 0.0 and feats["u9"]["adv_age"] == LONG_AGO
    assert feats["u1"]["em"] == 0.0


def test_ipua_user_beyond_the_ip_top_k_still_counts_as_on_the_ip():
    answers = {
        "ip:1.2.3.4": _answer("ip:1.2.3.4", 40, [["u1", 0, T - 10, 1]]),
        "ipua:1.2.3.4|abc": _answer("ipua:1.2.3.4|abc", 3, [["u7", 0, T - 600_000, 2]]),
    }
    f = candidate_features(CONV, answers, {})["u7"]
    assert f["ip"] == 1.0 and f["ip_only"] == 0.0
    assert f["ip_inv"] == pytest.approx(1 / 40)
    assert f["ip_age"] == f["ipua_age"] and f["ip_rank"] == 1.0


def test_missing_ip_flag_and_no_candidates():
    conv = {"ts": T, "sources": ["capi"], "user_data": {"em": "h"}}
    assert candidate_features(conv, {}, {}) == {}
    feats = candidate_features(conv, {"em:h": ANSWERS["em:h"]}, {})
    assert feats["u9"]["no_ip"] == 1.0 and feats["u9"]["no_ua"] == 1.0


def test_vector_round_trip_is_compact_and_ordered():
    f = candidate_features(CONV, ANSWERS, PROBES)["u1"]
    vec = to_vector(f)
    assert len(vec) == len(PAIR_FEATURES)
    back = from_vector(vec)
    assert all(back[k] == pytest.approx(f[k], abs=1e-4) for k in PAIR_FEATURES)


def test_candidate_selection_is_bounded_and_deterministic_first():
    rows = [[f"u{i:02d}", 0, T - i * 60_000, 1 + i % 3] for i in range(30)]
    answers = {"ip:x": _answer("ip:x", 30, rows), "em:h": ANSWERS["em:h"]}
    chosen = select_candidates(CONV, answers, max_candidates=5)
    assert chosen[0] == "u9" and len(chosen) == 6
    assert chosen == select_candidates(CONV, answers, max_candidates=5)
    prior = prior_scores(CONV, ANSWERS)
    assert prior["u1"] > prior["u2"]  # same ip+ua and recent beats an older ip-only sighting


IPHONE_17_2 = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1"
)


def test_ua_family_on_the_address_after_a_browser_update():
    # The converter's phone updated: its new exact user agent was never seen on the address,
    # but its family was; a housemate on the same address uses another family.
    conv = {
        "ts": T,
        "sources": ["pixel"],
        "user_data": {"client_ip_address": "10.0.0.1", "client_user_agent": IPHONE_17_2},
    }
    ip = _answer(
        "ip:10.0.0.1", 5, [["u1", 0, T - 60_000, 5], ["u2", 0, T - 30_000, 9], ["u3", 0, T, 1]]
    )
    ip["families"] = {"u1": ["safari/ios", "chrome/windows"], "u2": ["chrome/windows"]}
    ip["family_degree"] = {"safari/ios": 2, "chrome/windows": 3}
    feats = candidate_features(conv, {"ip:10.0.0.1": ip}, {})
    u1, u2, u3 = feats["u1"], feats["u2"], feats["u3"]
    assert (u1["ipfam"], u2["ipfam"], u3["ipfam"]) == (1.0, 0.0, 0.0)
    assert u1["ipfam_inv"] == pytest.approx(1 / 2) and u2["ipfam_inv"] == 0.0
    assert u1["ipfam_logdeg"] == u2["ipfam_logdeg"] == pytest.approx(math.log(2))
    assert u1["ip_only"] == 1.0  # the exact user agent still does not match


def test_ua_family_features_stay_zero_without_a_user_agent_or_family_state():
    ip = _answer("ip:10.0.0.1", 2, [["u1", 0, T - 60_000, 5]])
    no_state = candidate_features(CONV, {"ip:10.0.0.1": ip}, {})["u1"]
    assert (no_state["ipfam"], no_state["ipfam_inv"], no_state["ipfam_logdeg"]) == (0, 0, 0)
    ip["families"], ip["family_degree"] = {"u1": ["other/other"]}, {"other/other": 1}
    conv = {"ts": T, "sources": ["capi"], "user_data": {"client_ip_address": "10.0.0.1"}}
    no_agent = candidate_features(conv, {"ip:10.0.0.1": ip}, {})["u1"]
    assert (no_agent["ipfam"], no_agent["ipfam_logdeg"]) == (0.0, 0.0)


def test_vectors_stored_before_the_family_features_still_line_up():
    old = to_vector(dict.fromkeys(PAIR_FEATURES, 1.0))[: PAIR_FEATURES.index("ipfam")]
    restored = from_vector(old)
    assert restored["no_ua"] == 1.0 and "ipfam" not in restored
