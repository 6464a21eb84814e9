"""A user's ad engagements, kept for attribution and summarized for the match model.

The state is a plain dict ``{"e": [[ts, type, engagement_id, advertiser_id, campaign_id,
ad_id], ...], "k": {identifier_key: last_ts}, "o": {"em" | "ph": first_ts}}``, engagements
sorted by ``(ts, engagement_id)``. ``k`` remembers which identifiers the user was seen on (newest
``max_keys``), so that a deletion request can remove the user from every identifier entry
without scanning the index. ``o`` says since when the platform has known an email and a phone
of the user's own (the times only; the hashes stay in the index): a conversion whose email
matched nobody, from the device of a user whose email is known, is more likely a housemate's.
Rows older than the retention (the longest attribution window) behind the user's partition
clock are dropped, and each advertiser keeps at most ``max_per_advertiser`` rows, newest first,
so a heavy user cannot grow state without bound.

>>> state = add_engagements(None, [[1_000, "view", "i1", "a1", "c1", "ad1"]], retention_ms=10**9)
>>> state = add_engagements(state, [[2_000, "click", "k1", "a1", "c1", "ad1"]], retention_ms=10**9)
>>> answer = probe(state, "u1", "a1", conversion_ts=1_500, retention_ms=10**9)
>>> [row[2] for row in answer["engagements"]], answer["last_adv_ts"]
(['i1'], 1000)
"""

from __future__ import annotations

from typing import Any

from convstream.core.exposures import units_answer
from convstream.core.identity import kind_of
from convstream.core.records import Engagement

UserState = dict[str, Any]
ProbeAnswer = dict[str, Any]
EngagementRow = list[Any]

DEFAULT_MAX_PER_ADVERTISER = 200
DEFAULT_MAX_KEYS = 256
#: Identifier kinds that name one person: a conversion carrying one that matched nobody was
#: probably not made by a user known to have their own.
OWN_KINDS = ("em", "ph")


def remember_keys(
    state: UserState | None, seen: dict[str, int], *, max_keys: int = DEFAULT_MAX_KEYS
) -> UserState:
    """Note the identifier keys the user was seen on, with their newest sighting time.

    >>> remember_keys({"e": []}, {"ip:1": 5, "ip:2": 9}, max_keys=1)["k"]
    {'ip:2': 9}
    """
    if state is None:
        state = {"e": []}
    known = dict(state.get("k") or {})
    for key, ts in seen.items():
        if ts > known.get(key, -1):
            known[key] = ts
    if len(known) > max_keys:
        known = dict(sorted(known.items(), key=lambda kv: (-kv[1], kv[0]))[:max_keys])
    state["k"] = known
    return state


def note_own_identifiers(state: UserState | None, firsts: dict[str, int]) -> UserState:
    """Keep the first time an email (``em``) or phone (``ph``) of the user's own was seen.

    >>> note_own_identifiers({"e": [], "o": {"em": 9}}, {"em": 5, "ph": 7})["o"]
    {'em': 5, 'ph': 7}
    """
    if state is None:
        state = {"e": []}
    own = dict(state.get("o") or {})
    for kind, ts in firsts.items():
        own[kind] = min(ts, own.get(kind, ts))
    state["o"] = own
    return state


def note_link(state: UserState | None, key: str, ts: int) -> UserState:
    """An identifier a conversion linked to the user (``convstream.core.resolve.identity_links``):
    kept
    for deletions, and an email or phone the user shopped with counts as one of their own.

    >>> state = note_link(None, "ph:h", 7)
    >>> state["k"], state["o"]
    ({'ph:h': 7}, {'ph': 7})
    """
    state = remember_keys(state, {key: ts})
    kind = kind_of(key)
    if kind in OWN_KINDS:
        state = note_own_identifiers(state, {kind: ts})
    return state


def engagement_row(rec: Engagement) -> EngagementRow | None:
    """The state row of an impression or click; None for a ghost impression (``holdout``),
    which was never shown: it can never be credited, whichever driver reads it.

    >>> rec = Engagement("view", "i1", 5, "u", "a", "c", "ad", None, None, None)
    >>> engagement_row(rec)
    [5, 'view', 'i1', 'a', 'c', 'ad']
    >>> engagement_row(Engagement("view", "g1", 5, "u", "a", "c", "ad", None, None, None,
    ...                           holdout=True)) is None
    True
    """
    if rec.holdout:
        return None
    return [rec.ts, rec.kind, rec.event_id, rec.advertiser_id, rec.campaign_id, rec.ad_id]


def _order(row: EngagementRow) -> tuple[int, str]:
    return row[0], row[2]


def add_engagements(
    state: UserState | None,
    rows: list[EngagementRow],
    *,
    retention_ms: int,
    clock_ts: int | None = None,
    max_per_advertiser: int = DEFAULT_MAX_PER_ADVERTISER,
) -> UserState:
    """Merge engagement rows into ``state``, dedupe by engagement id, prune by event time.

    New rows are nearly always newer than the kept ones: they are appended, and the list is
    re-sorted, pruned or capped only when that can change it (kept rows already are).
    """
    if state is None:
        state = {"e": []}
    kept = state["e"]
    ids = {row[2] for row in kept}
    fresh = []
    for row in rows:
        if row[2] not in ids:
            ids.add(row[2])
            fresh.append(list(row))
    if fresh:
        fresh.sort(key=_order)
        if kept and _order(fresh[0]) < _order(kept[-1]):
            kept = sorted(kept + fresh, key=_order)
        else:
            kept = kept + fresh
    clock = clock_ts
    if kept:
        clock = kept[-1][0] if clock_ts is None else max(clock_ts, kept[-1][0])
    if clock is not None and kept and kept[0][0] < clock - retention_ms:
        horizon = clock - retention_ms
        kept = [r for r in kept if r[0] >= horizon]
    if len(kept) > max_per_advertiser:
        kept = _cap_per_advertiser(kept, max_per_advertiser)
    state["e"] = kept
    return state


def _cap_per_advertiser(rows: list[EngagementRow], cap: int) -> list[EngagementRow]:
    counts: dict[str, int] = {}
    keep = [False] * len(rows)
    for i in range(len(rows) - 1, -1, -1):
        adv = rows[i][3]
        n = counts.get(adv, 0)
        if n < cap:
            keep[i] = True
            counts[adv] = n + 1
    return [row for row, k in zip(rows, keep, strict=True) if k]


def probe(
    state: UserState | None,
    user_id: str,
    advertiser_id: str,
    *,
    conversion_ts: int,
    retention_ms: int,
    unit_window_ms: int | None = None,
) -> ProbeAnswer:
    """What the match model and attribution need about one candidate for one conversion.

    Only engagements at or before the conversion and within the retention count, so a late
    answer gives the same result as an early one; ``own`` lists the kinds of the user's own
    identifiers (``em``, ``ph``) known by then. With ``unit_window_ms`` (the advertiser's
    :meth:`~convstream.core.attribution.AttributionConfig.unit_window_ms`) it also carries the
    user's units of the advertiser and activity as of the conversion, for incrementality
    (:func:`convstream.core.exposures.units_answer`).
    """
    rows: list[EngagementRow] = []
    own: list[str] = []
    if state is not None:
        horizon = conversion_ts - retention_ms
        rows = [r for r in state["e"] if r[3] == advertiser_id and horizon <= r[0] <= conversion_ts]
        own = sorted(k for k, ts in (state.get("o") or {}).items() if ts <= conversion_ts)
    clicks = [r for r in rows if r[1] == "click"]
    answer = {
        "user_id": user_id,
        "engagements": rows,
        "last_adv_ts": rows[-1][0] if rows else None,
        "last_click_ts": clicks[-1][0] if clicks else None,
        "n_adv": len(rows),
        "n_clicks": len(clicks),
        "own": own,
    }
    if unit_window_ms is not None:
        answer.update(units_answer(state, advertiser_id, conversion_ts, window_ms=unit_window_ms))
    return answer
