"""Features of a (conversion, candidate user) pair, from lookup answers and probe answers.

Everything here is a pure function of the answers, so the same code serves the live decision,
the self-supervised pairs (answers restricted to probabilistic kinds) and the snapshot kept for
delayed feedback. Degree (how many users share an identifier) stays central: a carrier NAT
address seen by hundreds of users says little about any one of them.

>>> conv = {"ts": 10_000_000, "sources": ["pixel"],
...         "user_data": {"client_ip_address": "1.2.3.4", "client_user_agent": "UA"}}
>>> answers = {
...     "ip:1.2.3.4": {"key": "ip:1.2.3.4", "kind": "ip", "degree": 2,
...                    "users": [["u1", 0, 9_000_000, 3], ["u2", 0, 4_000_000, 1]]},
...     "ipua:1.2.3.4|x": {"key": "ipua:1.2.3.4|x", "kind": "ipua", "degree": 1,
...                        "users": [["u1", 0, 9_000_000, 3]]}}
>>> feats = candidate_features(conv, answers, {})
>>> sorted(feats)
['u1', 'u2']
>>> feats["u1"]["ipua"], feats["u2"]["ipua"], feats["u2"]["ip_rank"]
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

from convstream.core.identity import DETERMINISTIC_KINDS, PROBABILISTIC_KINDS, ua_family

Features = dict[str, float]
UserId = str

#: Log-seconds used when a time is unknown (about 30 days): "long ago".
LONG_AGO = math.log1p(30 * 24 * 3600)

#: Fixed order of pair features; snapshots store values in this order.
PAIR_FEATURES: tuple[str, ...] = (
    *DETERMINISTIC_KINDS,
    "det_shared",
    "ipua",
    "ipua_logdeg",
    "ipua_inv",
    "ipua_age",
    "ipua_cnt",
    "ip",
    "ip_only",
    "ip_logdeg",
    "ip_inv",
    "ip_age",
    "ip_cnt",
    "ip_tenure",
    "ip_rank",
    "ip_share",
    "adv",
    "adv_age",
    "adv_n",
    "adv_click",
    "click_age",
    "adv_rank",
    "adv_others",
    "ip_age_gap",
    "ipua_age_gap",
    "adv_age_gap",
    "probed",
    "n_cand",
    "capi",
    "pixel",
    "no_ip",
    "no_ua",
    # Appended, so vectors stored before these existed still line up (missing ones read as 0).
    "ipfam",
    "ipfam_inv",
    "ipfam_logdeg",
)


def log_age(ts: int, seen: int | None) -> float:
    """Log-seconds from ``seen`` to ``ts`` (``LONG_AGO`` when never seen)."""
    if seen is None:
        return LONG_AGO
    return math.log1p(max(ts - seen, 0) / 1000.0)


def candidate_features(
    conv: dict[str, Any],
    answers: dict[str, dict[str, Any]],
    probes: dict[UserId, dict[str, Any]],
    *,
    kinds: tuple[str, ...] | None = None,
    users: list[UserId] | None = None,
) -> dict[UserId, Features]:
    """Feature dicts for every candidate on the answers of ``kinds`` (all kinds by default).

    ``users`` restricts (and orders) the candidates; users absent from every answer are skipped.
    """
    ts = conv["ts"]
    kinds = kinds or (*DETERMINISTIC_KINDS, *PROBABILISTIC_KINDS)
    by_kind: dict[str, dict[str, Any]] = {}
    for ans in answers.values():
        if ans["kind"] in kinds and ans["users"]:
            by_kind[ans["kind"]] = ans
    pool: dict[UserId, None] = {}
    for ans in by_kind.values():
        for row in ans["users"]:
            pool.setdefault(row[0], None)
    chosen = [u for u in (users if users is not None else pool) if u in pool]
    ud = conv.get("user_data") or {}
    sources = conv.get("sources") or []
    ip_ans = by_kind.get("ip")
    ip_rows = {r[0]: (i, r) for i, r in enumerate(ip_ans["users"])} if ip_ans else {}
    ip_total = sum(r[3] for r in ip_ans["users"]) if ip_ans else 0
    prob_pool = {r[0] for k in PROBABILISTIC_KINDS if k in by_kind for r in by_kind[k]["users"]}
    adv_ages = {u: log_age(ts, (probes.get(u) or {}).get("last_adv_ts")) for u in chosen}
    engaged = [u for u in chosen if (probes.get(u) or {}).get("n_adv")]
    agent = ud.get("client_user_agent")
    family = ua_family(agent) if agent else None
    family_of = (ip_ans or {}).get("families") or {}
    family_degree = max(((ip_ans or {}).get("family_degree") or {}).get(family, 0), 1)
    common = {
        "n_cand": math.log1p(len(prob_pool)),
        "capi": float("capi" in sources),
        "pixel": float("pixel" in sources),
        "no_ip": float(not ud.get("client_ip_address")),
        "no_ua": float(not ud.get("client_user_agent")),
        "ipfam_logdeg": math.log(family_degree) if family and family_of else 0.0,
    }
    out: dict[UserId, Features] = {}
    for user in chosen:
        f: Features = dict.fromkeys(PAIR_FEATURES, 0.0)
        f.update(common)
        shared = 0.0
        for kind in DETERMINISTIC_KINDS:
            det = by_kind.get(kind)
            if det and any(r[0] == user for r in det["users"]):
                f[kind] = 1.0
                shared = max(shared, math.log(max(det["degree"], 1)))
        f["det_shared"] = shared
        for kind in PROBABILISTIC_KINDS:
            prob = by_kind.get(kind)
            row = next((r for r in prob["users"] if r[0] == user), None) if prob else None
            degree = max(prob["degree"], 1) if prob else 1
            f[f"{kind}_logdeg"] = math.log(degree) if prob else 0.0
            f[f"{kind}_age"] = LONG_AGO
            if row is not None:
                f[kind] = 1.0
                f[f"{kind}_inv"] = 1.0 / degree
                f[f"{kind}_age"] = log_age(ts, row[2])
                f[f"{kind}_cnt"] = math.log1p(row[3])
        if user in ip_rows:
            rank, row = ip_rows[user]
            f["ip_rank"] = float(rank)
            f["ip_tenure"] = log_age(ts, row[1])
            f["ip_share"] = row[3] / max(ip_total, 1)
            f["ipfam"] = float(family is not None and family in family_of.get(user, ()))
        elif f["ipua"] and ip_ans:
            # On the address with this user agent, but past the address answer's top-k.
            f["ip"], f["ip_inv"] = 1.0, 1.0 / max(ip_ans["degree"], 1)
            f["ip_age"], f["ip_cnt"] = f["ipua_age"], f["ipua_cnt"]
            f["ip_rank"] = float(len(ip_ans["users"]))
            f["ip_tenure"] = f["ipua_age"]
            f["ipfam"] = float(bool(family_of))
        if f["ipfam"]:
            f["ipfam_inv"] = 1.0 / family_degree
        f["ip_only"] = float(f["ip"] == 1.0 and f["ipua"] == 0.0)
        probe = probes.get(user)
        if probe is not None:
            f["probed"] = 1.0
            f["adv"] = float(probe.get("n_adv", 0) > 0)
            f["adv_age"] = adv_ages[user]
            f["adv_n"] = math.log1p(probe.get("n_adv", 0))
            f["adv_click"] = float(probe.get("n_clicks", 0) > 0)
            f["click_age"] = log_age(ts, probe.get("last_click_ts"))
        else:
            f["adv_age"] = f["click_age"] = LONG_AGO
        if f["adv"]:
            f["adv_rank"] = float(sum(1 for a in adv_ages.values() if a < adv_ages[user]))
        f["adv_others"] = math.log1p(len(engaged) - int(f["adv"] > 0))
        out[user] = f
    _relative(out)
    return out


def _relative(feats: dict[UserId, Features]) -> None:
    """How far each candidate is behind the most recent one (log seconds, 0 for the leader)."""
    for name, flag in (("ip_age", "ip"), ("ipua_age", "ipua"), ("adv_age", "adv")):
        ages = [f[name] for f in feats.values() if f[flag]]
        best = min(ages, default=LONG_AGO)
        for f in feats.values():
            f[f"{name}_gap"] = (f[name] - best) if f[flag] else LONG_AGO - best


def to_vector(f: Features) -> list[float]:
    """Compact, rounded list in ``PAIR_FEATURES`` order (for snapshots).

    >>> to_vector(dict.fromkeys(PAIR_FEATURES, 1 / 3))[:2]
    [0.3333, 0.3333]
    """
    return [round(f.get(name, 0.0), 4) for name in PAIR_FEATURES]


def from_vector(values: list[float]) -> Features:
    """Inverse of ``to_vector``.

    >>> from_vector(to_vector({"ip": 1.0}))["ip"]
    1.0
    """
    return dict(zip(PAIR_FEATURES, values, strict=False))
