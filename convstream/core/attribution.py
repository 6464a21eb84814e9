"""Event-time attribution: which engagements get credit for a conversion, and how much.

Credits depend only on the conversion time and the set of engagements, never on input order or
the wall clock, so a late or replayed conversion gets the same labels. Label weight is the match
confidence times the credit.

>>> rows = [[1_000, "view", "i1", "a", "c", "ad1"], [5_000, "click", "k1", "a", "c", "ad2"],
...         [2_000, "click", "k0", "a", "c", "ad1"]]
>>> credits = attribute(6_000, [Engagement.from_row(r) for r in rows],
...                     AttributionSettings(model="linear"))
>>> [(c.engagement.engagement_id, c.credit) for c in credits]
[('k0', 0.5), ('k1', 0.5)]
>>> [d["label_weight"] for d in weigh(credits, match_confidence=0.8)]
[0.4, 0.4]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from convstream.core.units import DAY_MS

ATTRIBUTION_MODELS = ("last_touch", "first_touch", "linear", "time_decay", "position_based")
#: Event names that are not conversions unless an advertiser says so: site events, which only
#: feed the identity graph (docs/design.md, "Site events").
SITE_EVENTS = ("PageView", "ViewContent", "Login")
ENGAGEMENT_TYPES = ("click", "view")


@dataclass(frozen=True, slots=True)
class Engagement:
    """One ad engagement of a user, as in the user state rows of
    ``convstream/core/engagements.py``."""

    ts: int
    engagement_type: str
    engagement_id: str
    advertiser_id: str
    campaign_id: str | None = None
    ad_id: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Engagement:
        """From ``[ts, type, engagement_id, advertiser_id, campaign_id, ad_id]``.

        >>> Engagement.from_row([5, "click", "k1", "a", "c", "ad"]).engagement_type
        'click'
        """
        ts, engagement_type, engagement_id, advertiser_id, campaign_id, ad_id = row[:6]
        return cls(ts, engagement_type, engagement_id, advertiser_id, campaign_id, ad_id)

    def to_row(self) -> list[Any]:
        """The inverse of :meth:`from_row`."""
        return [
            self.ts,
            self.engagement_type,
            self.engagement_id,
            self.advertiser_id,
            self.campaign_id,
            self.ad_id,
        ]


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _order(e: Engagement) -> tuple[Any, ...]:
    """Total order: (ts, engagement_id), then the other fields so equal keys stay stable."""
    return (
        e.ts,
        _text(e.engagement_id),
        e.engagement_type,
        _text(e.advertiser_id),
        _text(e.campaign_id),
        _text(e.ad_id),
    )


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    """How one advertiser attributes: the model, lookback windows and model parameters."""

    model: str = "last_touch"
    click_window_ms: int = 30 * DAY_MS
    view_window_ms: int = 1 * DAY_MS
    half_life_ms: int = 7 * DAY_MS
    position_weights: tuple[float, float, float] = (0.4, 0.2, 0.4)
    #: Which event names get labels: exactly these when set, else every name but site_events.
    conversion_events: tuple[str, ...] | None = None
    site_events: tuple[str, ...] = SITE_EVENTS

    def __post_init__(self) -> None:
        if self.model not in ATTRIBUTION_MODELS:
            raise ValueError(
                f"unknown attribution model {self.model!r}; expected one of {ATTRIBUTION_MODELS}"
            )
        for name in ("click_window_ms", "view_window_ms"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not _is_number(self.half_life_ms) or not self.half_life_ms > 0:
            raise ValueError(f"half_life_ms must be positive, got {self.half_life_ms!r}")
        weights = tuple(self.position_weights)
        if (
            len(weights) != 3
            or not all(_is_number(w) and math.isfinite(w) and w >= 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                "position_weights must be three non-negative numbers (first, middle, last) "
                f"with a positive sum, got {self.position_weights!r}"
            )
        object.__setattr__(self, "position_weights", tuple(float(w) for w in weights))
        for name in ("conversion_events", "site_events"):
            names = getattr(self, name)
            if names is None and name == "conversion_events":
                continue
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{name} must be a list of event names, got {names!r}")
            object.__setattr__(self, name, tuple(names))

    def is_conversion(self, event_name: str) -> bool:
        """Whether events of this name get labels; the others only feed the identity graph.

        >>> AttributionSettings().is_conversion("Purchase"), AttributionSettings().is_conversion(
        ...     "PageView")
        (True, False)
        >>> only = AttributionSettings(conversion_events=("Purchase",))
        >>> only.is_conversion("AddToCart"), only.is_conversion("Purchase")
        (False, True)
        """
        if self.conversion_events is not None:
            return event_name in self.conversion_events
        return event_name not in self.site_events

    def window_ms(self, engagement_type: str) -> int | None:
        """Lookback window of an engagement type; None for an unknown type.

        >>> AttributionSettings().window_ms("view") == DAY_MS
        True
        """
        if engagement_type == "click":
            return self.click_window_ms
        if engagement_type == "view":
            return self.view_window_ms
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


@dataclass(frozen=True, slots=True)
class Credit:
    """The share of a conversion credited to one engagement."""

    engagement: Engagement
    credit: float


def _as_engagement(e: Engagement | Sequence[Any]) -> Engagement:
    return e if isinstance(e, Engagement) else Engagement.from_row(e)


def eligible(
    conversion_ts: int,
    engagements: Iterable[Engagement | Sequence[Any]],
    settings: AttributionSettings,
) -> list[Engagement]:
    """Engagements that may get credit, sorted by ``(ts, engagement_id)``.

    An engagement is eligible when ``0 <= conversion_ts - ts <= window`` of its type (inclusive
    at exactly the window). Click beats view: if any click is eligible, views are dropped.
    Identical engagements count once; rows are accepted as well as :class:`Engagement`.

    >>> s = AttributionSettings(click_window_ms=100, view_window_ms=10)
    >>> views = [Engagement(90, "view", "i1", "a"), Engagement(89, "view", "i0", "a")]
    >>> [e.engagement_id for e in eligible(100, views, s)]
    ['i1']
    >>> [e.engagement_id for e in eligible(100, views + [[0, "click", "k1", "a", None, None]], s)]
    ['k1']
    """
    kept: set[Engagement] = set()
    for item in engagements:
        e = _as_engagement(item)
        window = settings.window_ms(e.engagement_type)
        if window is not None and 0 <= conversion_ts - e.ts <= window:
            kept.add(e)
    if any(e.engagement_type == "click" for e in kept):
        kept = {e for e in kept if e.engagement_type == "click"}
    return sorted(kept, key=_order)


def _position_weights(n: int, first: float, middle: float, last: float) -> list[float]:
    if n == 1:
        return [1.0]
    if n == 2:
        return [first, last] if first + last > 0 else [1.0, 1.0]
    return [first] + [middle / (n - 2)] * (n - 2) + [last]


def _raw_weights(touches: list[Engagement], s: AttributionSettings) -> list[float]:
    n = len(touches)
    if s.model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if s.model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if s.model == "linear":
        return [1.0] * n
    if s.model == "time_decay":
        # Relative to the latest touch (weight 1): same ratios as 2^(-(T - ts)/h), no underflow.
        latest = touches[-1].ts
        return [2.0 ** (-(latest - e.ts) / s.half_life_ms) for e in touches]
    return _position_weights(n, *s.position_weights)


def normalize(weights: Sequence[float]) -> list[float]:
    """Scale non-negative weights to sum to exactly 1 (``math.fsum``); residue on the top one.

    >>> credits = normalize([1.0, 1.0, 1.0])
    >>> math.fsum(credits) == 1.0, credits[0] == credits[1]
    (True, True)
    """
    total = math.fsum(weights)
    if not total > 0:
        raise ValueError(f"weights must have a positive sum, got {list(weights)!r}")
    credits = [w / total for w in weights]
    top = max(range(len(credits)), key=lambda i: (credits[i], i))
    for _ in range(4):
        residue = 1.0 - math.fsum(credits)
        if residue == 0.0:
            break
        credits[top] += residue
    return credits


def attribute(
    conversion_ts: int,
    engagements: Iterable[Engagement | Sequence[Any]],
    settings: AttributionSettings,
) -> list[Credit]:
    """Credit the eligible engagements under ``settings.model``; [] when none is eligible.

    Credits are positive, in ``(ts, engagement_id)`` order and sum to 1. Models:
    ``last_touch`` (latest; ties go to the greatest engagement id), ``first_touch`` (earliest;
    smallest id), ``linear`` (equal), ``time_decay`` (weight ``2^(-(T - ts) / half_life)``),
    ``position_based`` (1 touch: 1.0; 2: first/last weights, 0.5/0.5 by default; n >= 3: first
    0.4, last 0.4, the middle 0.2 shared equally).

    >>> touches = [Engagement(t, "click", f"k{t}", "a") for t in (0, 10, 20, 30)]
    >>> [c.credit for c in attribute(30, touches, AttributionSettings(model="position_based"))]
    [0.4, 0.1, 0.1, 0.4]
    >>> [c.engagement.ts for c in attribute(30, touches, AttributionSettings())]
    [30]
    >>> attribute(-1, touches, AttributionSettings())
    []
    """
    touches = eligible(conversion_ts, engagements, settings)
    if not touches:
        return []
    credits = normalize(_raw_weights(touches, settings))
    return [Credit(e, c) for e, c in zip(touches, credits, strict=True) if c > 0]


def weigh(credits: Iterable[Credit], match_confidence: float) -> list[dict[str, Any]]:
    """Label rows for credited engagements: ``label_weight = match_confidence * credit``.

    >>> weigh([Credit(Engagement(5, "click", "k1", "a", "c1", "ad1"), 1.0)], 0.5)
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'engagement_id': 'k1', 'engagement_type': 'click', 'ad_id': 'ad1', 'campaign_id': 'c1',
      'engagement_ts': 5, 'credit': 1.0, 'label_weight': 0.5}]
    """
    if not _is_number(match_confidence) or not 0.0 <= match_confidence <= 1.0:
        raise ValueError(f"match_confidence must be in [0, 1], got {match_confidence!r}")
    return [
        {
            "engagement_id": c.engagement.engagement_id,
            "engagement_type": c.engagement.engagement_type,
            "ad_id": c.engagement.ad_id,
            "campaign_id": c.engagement.campaign_id,
            "engagement_ts": c.engagement.ts,
            "credit": c.credit,
            "label_weight": match_confidence * c.credit,
        }
        for c in credits
    ]


def label_weight(credit_dicts: Iterable[Mapping[str, Any]]) -> float:
    """Total label weight of rows from :func:`weigh` (the match confidence when credited).

    >>> label_weight([{"label_weight": 0.25}, {"label_weight": 0.5}])
    0.75
    """
    return math.fsum(d["label_weight"] for d in credit_dicts)


@dataclass(frozen=True)
class AttributionConfig:
    """Default attribution settings plus per-advertiser overrides.

    >>> config = AttributionConfig(overrides={"adv-7": AttributionSettings(model="linear")})
    >>> config.for_advertiser("adv-7").model, config.for_advertiser("adv-1").model
    ('linear', 'last_touch')
    """

    default: AttributionSettings = field(default_factory=AttributionSettings)
    overrides: Mapping[str, AttributionSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def for_advertiser(self, advertiser_id: str) -> AttributionSettings:
        """The advertiser's settings, or the default."""
        return self.overrides.get(advertiser_id, self.default)

    def is_conversion(self, advertiser_id: str, event_name: str) -> bool:
        """:meth:`AttributionSettings.is_conversion` of the advertiser's settings."""
        return self.for_advertiser(advertiser_id).is_conversion(event_name)

    def unit_window_ms(self, advertiser_id: str) -> int:
        """The advertiser's longest window: how long a user entered in one of its campaigns
        stays in it (:mod:`convstream.core.exposures`, :mod:`convstream.core.lift`).

        >>> AttributionConfig().unit_window_ms("adv-1") == 30 * DAY_MS
        True
        """
        s = self.for_advertiser(advertiser_id)
        return max(s.click_window_ms, s.view_window_ms)

    def max_window_ms(self) -> int:
        """The longest click or view window of any advertiser: how long engagements must live.

        >>> AttributionConfig().max_window_ms() == 30 * DAY_MS
        True
        """
        every = [self.default, *self.overrides.values()]
        return max(max(s.click_window_ms, s.view_window_ms) for s in every)
