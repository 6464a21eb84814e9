"""Event quality per advertiser and event name, over a sliding event-time window.

In the spirit of Meta's Event Match Quality and Pinterest's Event Quality Score: how many
conversions carry each customer-information parameter, how many arrive from both CAPI and the
pixel, how many we match to a user, a 0-10 score, and advice on what to send next.

Window: a conversion counts while its ``ts`` is within ``window_ms`` of the newest conversion
``ts`` observed (event time, never the wall clock); a conversion observed again (a later copy or
a label revision) replaces its earlier observation.

Score, with coverage ``c_p`` of each parameter ``p`` over the row's conversions, ``m`` the match
rate and ``d`` the dedupe rate (all in [0, 1])::

    C = sum(WEIGHTS[p] * c_p) / sum(WEIGHTS)          # weighted identifier coverage
    score = 10 * (0.5 * C + 0.4 * m + 0.1 * d)        # rounded to 0.1

``WEIGHTS`` rank parameters by how often they identify one person (click id and email highest,
user agent lowest). The score rises with every coverage, with the match rate and with the
dedupe rate; ``score`` below computes it.

Advice: for each parameter the row lacks, ``lift = match rate with it - match rate without it``
over the advertiser's conversions in the window (over all advertisers' when either side has fewer
than ``min_samples``), and the advice promises ``(1 - c_p) * lift`` more match rate for this
row, capped at ``max_gain`` and at what is left to match, rounded to whole points. It is
**observational**: conversions that carry an email may differ from those that do not (a logged-in
buyer, a CAPI copy), so the figure is a guide, not the result of an experiment. Parameters with
no positive estimate get no advice.

>>> t = QualityTracker(window_ms=7 * DAY_MS)
>>> t.observe({"advertiser_id": "a", "event_name": "Purchase", "ts": 1_000,
...            "sources": ["capi", "pixel"], "user_data": {"em": "e1", "click_id": "k"}},
...           {"user_id": "u1", "match_confidence": 0.9})
True
>>> row = t.report()[0]
>>> row.n, row.coverage["em"], row.coverage["ph"], row.dedupe_rate, row.match_rate, row.score
(1, 1.0, 0.0, 1.0, 1.0, 7.4)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convstream.core.units import DAY_MS

DEFAULT_WINDOW_MS = 7 * DAY_MS

Param = str
#: Parameters scored, and the conversion user_data field each one reads.
USER_DATA_FIELDS: dict[Param, str] = {
    "em": "em",
    "ph": "ph",
    "external_id": "external_id",
    "click_id": "click_id",
    "ip": "client_ip_address",
    "user_agent": "client_user_agent",
    "device_id": "device_id",
}
PARAMS: tuple[Param, ...] = tuple(USER_DATA_FIELDS)
WEIGHTS: dict[Param, float] = {
    "click_id": 3.0,
    "em": 3.0,
    "ph": 2.0,
    "external_id": 1.5,
    "device_id": 1.5,
    "ip": 1.0,
    "user_agent": 0.5,
}
COVERAGE_SHARE, MATCH_SHARE, DEDUPE_SHARE = 0.5, 0.4, 0.1
PARAM_NAMES: dict[Param, str] = {
    "em": "hashed email",
    "ph": "hashed phone",
    "external_id": "external id",
    "click_id": "click id",
    "ip": "client IP address",
    "user_agent": "client user agent",
    "device_id": "device id",
}
_SHORT: dict[Param, str] = {
    "em": "em",
    "ph": "ph",
    "external_id": "ext",
    "click_id": "click",
    "ip": "ip",
    "user_agent": "ua",
    "device_id": "dev",
}


def score(coverage: Mapping[Param, float], match_rate: float, dedupe_rate: float) -> float:
    """The 0-10 event quality score (formula in the module docstring); missing params count 0.

    >>> score({}, 0.0, 0.0), score({p: 1.0 for p in PARAMS}, 1.0, 1.0)
    (0.0, 10.0)
    >>> score({"em": 1.0}, 0.5, 0.0)
    3.2
    """
    weighted = sum(WEIGHTS[p] * min(max(coverage.get(p, 0.0), 0.0), 1.0) for p in PARAMS)
    total = (
        COVERAGE_SHARE * weighted / sum(WEIGHTS.values())
        + MATCH_SHARE * min(max(match_rate, 0.0), 1.0)
        + DEDUPE_SHARE * min(max(dedupe_rate, 0.0), 1.0)
    )
    return round(10.0 * total, 1)


@dataclass(frozen=True)
class Advice:
    """Send ``param`` and expect about ``gain`` more match rate (a share, e.g. 0.12)."""

    param: Param
    gain: float
    lift: float  # match rate with the parameter minus without, on the basis traffic
    basis: str  # "advertiser" or "all traffic"
    n_with: int
    n_without: int

    @property
    def text(self) -> str:
        """The advice as one line.

        >>> Advice("em", 0.12, 0.3, "advertiser", 80, 40).text
        'add hashed email (em): +12% match rate on your traffic (observed: 80 with, 40 without)'
        """
        where = "your traffic" if self.basis == "advertiser" else "all advertisers' traffic"
        return (
            f"add {PARAM_NAMES[self.param]} ({self.param}): +{round(100 * self.gain)}% match rate"
            f" on {where} (observed: {self.n_with} with, {self.n_without} without)"
        )


@dataclass(frozen=True)
class QualityRow:
    """Event quality of one advertiser's event name over the window."""

    advertiser_id: str
    event_name: str
    n: int
    coverage: dict[Param, float]
    dedupe_rate: float
    match_rate: float
    score: float
    advice: list[Advice] = field(default_factory=list)


@dataclass
class _Counts:
    """Sums over observations; everything a row and its advice need."""

    n: int = 0
    matched: int = 0
    both: int = 0
    have: dict[Param, int] = field(default_factory=lambda: dict.fromkeys(PARAMS, 0))
    have_matched: dict[Param, int] = field(default_factory=lambda: dict.fromkeys(PARAMS, 0))

    def add(self, obs: _Obs, sign: int = 1) -> None:
        self.n += sign
        self.matched += sign * obs.matched
        self.both += sign * obs.both
        for p in obs.params:
            self.have[p] += sign
            self.have_matched[p] += sign * obs.matched

    def merge(self, other: _Counts) -> None:
        self.n += other.n
        self.matched += other.matched
        self.both += other.both
        for p in PARAMS:
            self.have[p] += other.have[p]
            self.have_matched[p] += other.have_matched[p]


@dataclass(frozen=True)
class _Obs:
    ts: int
    seq: int
    advertiser_id: str
    event_name: str
    params: frozenset[Param]
    both: bool
    matched: bool


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != ()


def _key(conv: Mapping[str, Any], label: Mapping[str, Any]) -> str | None:
    key = conv.get("conversion_key") or label.get("conversion_key")
    if key:
        return str(key)
    parts = [conv.get(f) for f in ("advertiser_id", "event_name", "event_id")]
    return ":".join(str(p) for p in parts) if all(_present(p) for p in parts) else None


class QualityTracker:
    """Event quality over a sliding event-time window, per advertiser and event name.

    ``observe`` is O(parameters); ``report`` is O(advertisers x event names). At most
    ``max_entries`` conversions are kept (the oldest go first), so memory stays bounded.

    >>> t = QualityTracker(window_ms=10)
    >>> conv = {"advertiser_id": "a", "event_name": "Lead", "sources": ["pixel"], "user_data": {}}
    >>> t.observe({**conv, "ts": 100, "event_id": "1"}, {"user_id": None})
    True
    >>> t.observe({**conv, "ts": 120, "event_id": "2"}, {"user_id": "u"})
    True
    >>> [(r.n, r.match_rate) for r in t.report()]
    [(1, 1.0)]
    >>> t.observe({**conv, "ts": 105, "event_id": "3"}, {"user_id": "u"})  # behind the window
    False
    """

    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        *,
        min_samples: int = 30,
        max_gain: float = 0.3,
        max_entries: int = 1_000_000,
    ) -> None:
        self.window_ms = window_ms
        self.min_samples = min_samples
        self.max_gain = max_gain
        self.max_entries = max_entries
        self.clock: int | None = None
        self._entries: dict[str, _Obs] = {}
        self._expiry: list[tuple[int, int, str]] = []
        self._groups: dict[tuple[str, str], _Counts] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, conv: Mapping[str, Any], label: Mapping[str, Any]) -> bool:
        """Count a merged conversion and its label; False when it is behind the window.

        ``conv`` has ``advertiser_id, event_name, ts, sources, user_data`` (and a
        ``conversion_key`` or ``event_id``); ``label`` has ``user_id`` (None: unmatched).
        """
        ts = int(conv["ts"])
        if self.clock is not None and ts < self.clock - self.window_ms:
            return False
        user_data = conv.get("user_data") or {}
        obs = _Obs(
            ts=ts,
            seq=next(self._seq),
            advertiser_id=str(conv["advertiser_id"]),
            event_name=str(conv["event_name"]),
            params=frozenset(p for p, f in USER_DATA_FIELDS.items() if _present(user_data.get(f))),
            both={"capi", "pixel"} <= set(conv.get("sources") or ()),
            matched=_present(label.get("user_id")),
        )
        key = _key(conv, label) or f"#{obs.seq}"
        self._drop(key)
        self._entries[key] = obs
        group = (obs.advertiser_id, obs.event_name)
        self._groups.setdefault(group, _Counts()).add(obs)
        heapq.heappush(self._expiry, (ts, obs.seq, key))
        self.clock = ts if self.clock is None else max(self.clock, ts)
        self._expire()
        return True

    def _drop(self, key: str) -> None:
        obs = self._entries.pop(key, None)
        if obs is None:
            return
        group = (obs.advertiser_id, obs.event_name)
        counts = self._groups[group]
        counts.add(obs, -1)
        if counts.n == 0:
            del self._groups[group]

    def _expire(self) -> None:
        assert self.clock is not None
        horizon = self.clock - self.window_ms
        while self._expiry and (
            self._expiry[0][0] < horizon or len(self._entries) > self.max_entries
        ):
            _, seq, key = heapq.heappop(self._expiry)
            obs = self._entries.get(key)
            if obs is not None and obs.seq == seq:  # else replaced since: a stale heap entry
                self._drop(key)

    def report(self, advertiser_group: Callable[[str], str] | None = None) -> list[QualityRow]:
        """One row per (advertiser, event name), sorted; ``advertiser_group`` maps advertiser
        ids to the name they are reported under, pooling those that share one.

        >>> t = QualityTracker()
        >>> for adv in ("a", "b"):
        ...     _ = t.observe({"advertiser_id": adv, "event_name": "Lead", "event_id": adv,
        ...                    "ts": 1, "sources": ["capi"], "user_data": {}}, {"user_id": "u"})
        >>> [(r.advertiser_id, r.n) for r in t.report(lambda adv: "other")]
        [('other', 2)]
        """
        group_of = advertiser_group or (lambda advertiser_id: advertiser_id)
        rows: dict[tuple[str, str], _Counts] = {}
        by_advertiser: dict[str, _Counts] = {}
        everyone = _Counts()
        for (advertiser_id, event_name), counts in self._groups.items():
            name = group_of(advertiser_id)
            rows.setdefault((name, event_name), _Counts()).merge(counts)
            by_advertiser.setdefault(name, _Counts()).merge(counts)
            everyone.merge(counts)
        return [
            self._row(name, event_name, counts, by_advertiser[name], everyone)
            for (name, event_name), counts in sorted(rows.items())
        ]

    def _row(
        self, name: str, event_name: str, c: _Counts, advertiser: _Counts, everyone: _Counts
    ) -> QualityRow:
        coverage = {p: c.have[p] / c.n for p in PARAMS}
        match_rate = c.matched / c.n
        dedupe_rate = c.both / c.n
        advice = []
        for p in PARAMS:
            if coverage[p] >= 1.0:
                continue
            estimate = self._lift(p, advertiser, "advertiser") or self._lift(
                p, everyone, "all traffic"
            )
            if estimate is None:
                continue
            lift, basis, n_with, n_without = estimate
            gain = min((1.0 - coverage[p]) * lift, self.max_gain, 1.0 - match_rate)
            gain = round(gain, 2)
            if gain >= 0.01:
                advice.append(Advice(p, gain, round(lift, 4), basis, n_with, n_without))
        advice.sort(key=lambda a: (-a.gain, a.param))
        return QualityRow(
            advertiser_id=name,
            event_name=event_name,
            n=c.n,
            coverage=coverage,
            dedupe_rate=dedupe_rate,
            match_rate=match_rate,
            score=score(coverage, match_rate, dedupe_rate),
            advice=advice,
        )

    def _lift(self, p: Param, c: _Counts, basis: str) -> tuple[float, str, int, int] | None:
        n_with, n_without = c.have[p], c.n - c.have[p]
        if n_with < self.min_samples or n_without < self.min_samples:
            return None
        rate_with = c.have_matched[p] / n_with
        rate_without = (c.matched - c.have_matched[p]) / n_without
        return rate_with - rate_without, basis, n_with, n_without


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


def format_table(rows: Iterable[QualityRow]) -> str:
    """A terminal table: one line per row, its advice indented below it; the footnote on how
    advice is computed only when there is advice.

    >>> row = QualityRow("adv-1", "Purchase", 120, dict.fromkeys(PARAMS, 0.5), 0.25, 0.8, 6.1,
    ...                  [Advice("ph", 0.06, 0.12, "advertiser", 60, 60)])
    >>> print(format_table([row]))  # doctest: +NORMALIZE_WHITESPACE
    advertiser event     n score match dedupe  em  ph ext click  ip  ua dev
    adv-1      Purchase 120   6.1   80%    25% 50% 50% 50%   50% 50% 50% 50%
      -> add hashed phone (ph): +6% match rate on your traffic (observed: 60 with, 60 without)
    <BLANKLINE>
    advice compares the match rate of conversions with and without a parameter in the window:
    observational, not an experiment; capped and rounded.
    >>> print(format_table([]))  # doctest: +NORMALIZE_WHITESPACE
    advertiser event n score match dedupe em ph ext click ip ua dev
    (no conversions in the window)
    """
    rows = list(rows)
    header = ["advertiser", "event", "n", "score", "match", "dedupe", *(_SHORT[p] for p in PARAMS)]
    cells = [
        [
            row.advertiser_id,
            row.event_name,
            str(row.n),
            f"{row.score:.1f}",
            _pct(row.match_rate),
            _pct(row.dedupe_rate),
            *(_pct(row.coverage[p]) for p in PARAMS),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        text = [v.ljust(widths[i]) if i < 2 else v.rjust(widths[i]) for i, v in enumerate(values)]
        return " ".join(text).rstrip()

    out = [line(header)]
    for row, values in zip(rows, cells, strict=True):
        out.append(line(values))
        out.extend(f"  -> {advice.text}" for advice in row.advice)
    if not rows:
        out.append("(no conversions in the window)")
    if not any(row.advice for row in rows):
        return "\n".join(out)  # no advice line above: nothing for the footnote to qualify
    out += [
        "",
        "advice compares the match rate of conversions with and without a parameter in the window:",
        "observational, not an experiment; capped and rounded.",
    ]
    return "\n".join(out)
