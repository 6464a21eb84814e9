"""Seeded synthetic traffic: a replay file for the input topics plus the ground truth behind it.

The simulated world has platform users in households that share a churning home IP, mobile
carriers behind CGNAT (hundreds of users per IP), offices (tens per IP), privacy relays and lost
IPs, common user agents, ads shown and clicked, and conversions reported by pixel and/or CAPI with
partial identifiers. Non-platform "strangers" convert from the same IP pools. Same config, same
bytes: everything draws from one ``random.Random(seed)`` and time starts at a fixed epoch.

Every campaign holds a share of users out (``holdout_share``): the ad server logs the ad it
would have shown them as a *ghost impression* (``"holdout": true``) and shows nothing, so no
click follows. Each ad-driven visit has a lift share, the probability that the ad caused it;
a held-out user makes such a visit anyway with probability one minus that share (it becomes
organic). What the holdouts change draws from streams of their own, so the traffic of exposed
users is the traffic of a world without holdouts (``holdout_share=0``), byte for byte.

Advertisers' sites send events that are not conversions (``PageView``, ``ViewContent``,
``Login``; :mod:`convstream.synth.site`), with a first-party browser id (``fbp``) that the
conversions' copies carry too. Each person's site events draw from a stream of their own, so
``site_events=False`` gives the traffic from before they existed, byte for byte.

>>> lines, truth = generate(GeneratorConfig(users=60, days=3, seed=3))
>>> lines == generate(GeneratorConfig(users=60, days=3, seed=3))[0]
True
>>> sorted(lines[0]), sorted(truth[0])[:4]
(['topic', 'value'], ['advertiser_id', 'campaign_id', 'conversion_key', 'event_id'])
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from convstream.core.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from convstream.synth.reach import GraphReach, Observation
from convstream.synth.site import (
    SITE_EVENT_NAMES,
    SiteSimulator,
    Touch,
    capi_delay_ms,
    conversion_event,
    customer_hash,
    event_nodes,
)

ReplayLine = dict[str, Any]
TruthRow = dict[str, Any]
CampaignTruthRow = dict[str, Any]

#: Simulation epoch: 2026-01-05T00:00:00Z, a Monday. Never wall-clock.
START_MS = 1_767_571_200_000
#: Truth last touch: the last click within 30 days, else the last view within 1 day (inclusive).
CLICK_WINDOW_MS = 30 * DAY_MS
VIEW_WINDOW_MS = DAY_MS

#: Delivery delay bounds (arrival = event ts + delay). CAPI bounds are in GeneratorConfig;
#: feedback arrives at its own ts (delay 0).
PLATFORM_DELAY_MS = (50, 5 * MINUTE_MS)  # impressions, clicks, identity; rare late batches
PIXEL_DELAY_MS = (200, 5 * SECOND_MS)

#: Address ranges per network kind (strings only, never contacted).
RESIDENTIAL_PREFIX = "10."
CGNAT_PREFIX = "100."
OFFICE_PREFIX = "172."
RELAY_PREFIX = "198.18."

TOPICS = ("impressions", "clicks", "identity", "conversions", "feedback")
KINDS = ("click_through", "view_through", "organic", "stranger")


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """Every knob of the simulated world; rates are probabilities, counts are per user or day."""

    seed: int = 0
    users: int = 3000
    days: int = 14
    start_ms: int = START_MS
    advertisers: int = 12
    # Households, devices and networks.
    household_size_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)  # sizes 1, 2, 3, 4
    second_device_rate: float = 0.45
    home_ip_churn_days: float = 4.0
    residential_pool_factor: float = 40.0  # home IPs drawn from households * factor addresses
    mobile_away_rate: float = 0.3  # mobile sessions on carrier CGNAT instead of home wifi
    users_per_cgnat_ip: int = 250
    office_user_share: float = 0.35
    users_per_office: int = 25
    office_hours_rate: float = 0.75  # weekday 9-18h sessions of office workers from the office
    # IP loss and privacy relays.
    ip_null_rate: float = 0.03
    relay_user_share: float = 0.06
    relay_rate: float = 0.8  # share of a relay user's traffic that goes through the relay
    relay_ips: int = 6
    ua_null_rate: float = 0.02
    # Browser and OS updates: a device's user agent moves to the catalog's next version at a
    # random time; devices already on the newest version keep theirs. Drawn from a separate
    # stream, so changing it leaves the rest of the world as it was.
    ua_upgrade_rate: float = 0.0
    device_id_null_rate: float = 0.2
    # Platform activity (means; each user draws their own rate around them).
    sessions_per_day: float = 0.8
    impressions_per_session: float = 2.6
    targeting_rate: float = 0.6  # impressions from the user's interest advertisers
    ctr: float = 0.03
    logins_per_week: float = 2.0
    em_known_rate: float = 0.7  # the platform learns the user's email at login
    ph_known_rate: float = 0.5
    shop_email_same_rate: float = 0.85  # the user shops with the email known to the platform
    phone_rate: float = 0.85
    # Conversions.
    click_conversion_rate: float = 0.1
    view_conversion_rate: float = 0.003
    organic_conversions_per_day: float = 0.02
    add_to_cart_rate: float = 0.35  # a purchase preceded by an AddToCart in the same visit
    same_device_rate: float = 0.8  # click-through conversions on the clicking device
    unknown_device_rate: float = 0.08  # converting on a device the platform never saw
    stranger_share: float = 0.2  # of conversion keys
    stranger_household_rate: float = 0.15  # strangers living in a platform user's household
    # Reporting channels and identifiers.
    both_channels_rate: float = 0.65
    pixel_only_rate: float = 0.2  # the rest is CAPI only
    pixel_click_id_rate: float = 0.75
    pixel_em_rate: float = 0.08
    pixel_ph_rate: float = 0.03
    pixel_device_id_rate: float = 0.1
    capi_em_rate: float = 0.8
    capi_ph_rate: float = 0.45
    capi_click_id_rate: float = 0.3
    capi_ip_ua_rate: float = 0.4
    capi_device_id_rate: float = 0.25
    external_id_advertiser_rate: float = 0.6  # advertisers that send a customer id
    raw_pii_rate: float = 0.03  # CAPI em/ph values sent unhashed
    capi_delay_min_s: float = 600.0
    capi_delay_max_s: float = 6 * 3600.0
    feedback_rate: float = 0.1
    # Incrementality. Users held out of each campaign (assignment hashed from the seed, user and
    # campaign, so it is stable); the share of campaigns whose ads cause nothing; the lift share
    # range of the others (the probability that the ad caused an ad-driven visit, before the
    # segment, recency and frequency factors of _lift_share). Drawn from separate streams, as
    # ua_upgrade_rate: exposed users' traffic does not depend on them.
    holdout_share: float = 0.10
    zero_lift_campaign_share: float = 0.25
    campaign_lift_range: tuple[float, float] = (0.3, 0.9)
    # Advertiser site events (convstream/synth/site.py): PageView, ViewContent and Login with a
    # first-party browser id (fbp) per advertiser domain, which the conversions carry too. They
    # draw from a stream of their own: with site_events=False the replay is the one before them,
    # byte for byte, and with it the rest of the traffic only gains its fbp fields.
    site_events: bool = True
    landing_page_view_rate: float = 0.85  # an ad click lands on a page view with its fbc
    view_content_rate: float = 0.6  # a site visit views products
    site_login_rate: float = 0.3  # a site visit (not a landing) logs in
    browse_sessions_per_week: float = 1.0  # site visits that convert nothing
    site_capi_rate: float = 0.4  # site events the server sends too (the rest: pixel only)
    capi_fbp_rate: float = 0.6  # CAPI copies that forward the browser's fbp
    extra_browser_rate: float = 0.3  # desktops with a second browser (a cookie jar of its own)
    cookie_clear_per_day: float = 0.01  # a browser's cookies cleared (all domains at once)
    strict_cookie_share: float = 0.0  # non-Safari browsers that also cap cookies at 7 days

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1 or self.advertisers < 1:
            raise ValueError("users, days and advertisers must be >= 1")
        if not 0.0 <= self.stranger_share < 1.0:
            raise ValueError("stranger_share must be in [0, 1)")
        if not self.household_size_weights or sum(self.household_size_weights) <= 0:
            raise ValueError("household_size_weights needs a positive weight")
        if not 0 < self.capi_delay_min_s <= self.capi_delay_max_s:
            raise ValueError("need 0 < capi_delay_min_s <= capi_delay_max_s")
        if self.both_channels_rate + self.pixel_only_rate > 1.0:
            raise ValueError("both_channels_rate + pixel_only_rate must be <= 1")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError("holdout_share must be in [0, 1)")
        if not 0.0 <= self.zero_lift_campaign_share <= 1.0:
            raise ValueError("zero_lift_campaign_share must be in [0, 1]")
        lo, hi = self.campaign_lift_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError("campaign_lift_range must be 0 <= lo <= hi <= 1")


_HEAVY_SHARING: dict[str, Any] = {
    "household_size_weights": (0.1, 0.2, 0.35, 0.35),
    "residential_pool_factor": 2.0,
    "mobile_away_rate": 0.6,
    "users_per_cgnat_ip": 800,
    "office_user_share": 0.7,
    "users_per_office": 100,
}
_STRANGERS: dict[str, Any] = {"stranger_share": 0.5, "stranger_household_rate": 0.3}
_IP_LOSS: dict[str, Any] = {
    "ip_null_rate": 0.2,
    "relay_user_share": 0.3,
    "relay_rate": 0.9,
    "ua_null_rate": 0.06,
}

#: Named overrides of :class:`GeneratorConfig` defaults.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "heavy-sharing": _HEAVY_SHARING,
    "strangers": _STRANGERS,
    "ip-loss": _IP_LOSS,
    "hard": {**_HEAVY_SHARING, **_STRANGERS, **_IP_LOSS},
    "ua-drift": {"ua_upgrade_rate": 0.7},
    # Browsers that forget: cleared cookies, strict tracking prevention (the pixel's click-id
    # cookie is lost as often), several browsers per person, and IP loss on top: the case the
    # identity graph is for.
    "cookie-churn": {
        **_IP_LOSS,
        "pixel_click_id_rate": 0.3,
        "capi_click_id_rate": 0.15,
        "cookie_clear_per_day": 0.08,
        "strict_cookie_share": 0.5,
        "extra_browser_rate": 0.6,
        "second_device_rate": 0.7,
    },
}


def config_from_args(profile: str = "default", **overrides: Any) -> GeneratorConfig:
    """The config of a named profile with keyword overrides; None overrides are ignored (CLI).

    >>> cfg = config_from_args("strangers", seed=5, users=None)
    >>> cfg.seed, cfg.users, cfg.stranger_share
    (5, 3000, 0.5)
    >>> config_from_args("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown profile 'nope'; choose from default, heavy-sharing, ..., cookie-churn
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    known = {f.name for f in fields(GeneratorConfig)}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise TypeError(f"unknown GeneratorConfig fields: {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(GeneratorConfig(**PROFILES[profile]), **given)


# --- identifiers and strings -------------------------------------------------------------------


def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


_FIRST = ("alice", "bob", "carla", "dmitri", "emma", "farid", "grace", "hiro", "ines", "jamal")
_FIRST += ("kira", "luis", "mei", "noah", "olga", "priya", "quinn", "rosa", "sven", "tariq")
_LAST = ("smith", "garcia", "chen", "okafor", "mueller", "rossi", "kowalski", "tanaka", "silva")
_LAST += ("nguyen", "haddad", "larsen", "patel", "dubois", "moreau", "ivanova", "kim", "novak")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "inbox.example")
_AREA_CODES = ("201", "212", "305", "312", "415", "503", "617", "702", "713", "808", "917")

# (template, versions, weight, mobile); the version fills {v}.
_UA_CATALOG: tuple[tuple[str, tuple[str, ...], float, bool], ...] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
        ("119", "120", "121", "122"),
        0.2,
        False,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
        ("120", "121", "122"),
        0.07,
        False,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/{v} Safari/605.1.15",
        ("17.1", "17.2", "17.2.1", "17.3"),
        0.06,
        False,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        ("121", "122", "123"),
        0.04,
        False,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
        ("120", "121", "122"),
        0.06,
        False,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
        ("120", "121"),
        0.01,
        False,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        ("16_7_4", "17_1_2", "17_2", "17_2_1", "17_3"),
        0.28,
        True,
    ),
    (
        "Mozilla/5.0 (Linux; Android {v}; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/121.0.0.0 Mobile Safari/537.36",
        ("10", "13", "14"),
        0.2,
        True,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/{v}.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        ("23", "24"),
        0.05,
        True,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS {v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Mobile/15E148 Safari/604.1",
        ("17_2", "17_3"),
        0.03,
        True,
    ),
)

# Session start hour weights (UTC stands in for local time): quiet nights, busy evenings.
_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 3, 3, 3, 4, 3, 3, 3, 3, 4, 5, 6, 6, 5, 4, 2)
_HOUR_CUM = tuple(itertools.accumulate(_HOUR_WEIGHTS))

_VERTICALS = ("ecommerce", "ecommerce", "ecommerce", "leadgen", "subscription")
_CURRENCIES = ("USD", "USD", "USD", "USD", "USD", "USD", "USD", "EUR", "EUR", "GBP")


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _lognormal_mean1(rng: random.Random, sigma: float) -> float:
    """A lognormal multiplier with mean 1: user-to-user heterogeneity of a rate."""
    return rng.lognormvariate(-sigma * sigma / 2, sigma)


# --- the world ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Device:
    device_id: str  # sha256 hex of the raw id
    ua: str
    mobile: bool
    upgrade: tuple[int, str] | None = None  # (ts, user agent from then on)

    def ua_at(self, ts: int) -> str:
        if self.upgrade is not None and ts >= self.upgrade[0]:
            return self.upgrade[1]
        return self.ua


@dataclass(slots=True)
class _Household:
    starts: list[int]
    ips: list[str]

    def ip_at(self, ts: int) -> str:
        return self.ips[max(0, bisect.bisect_right(self.starts, ts) - 1)]


@dataclass(slots=True)
class _Person:
    number: int
    user_id: str | None  # None: a stranger, not on the platform
    household: _Household
    devices: list[_Device]
    carrier: int
    office: list[str] | None
    relay: bool
    em_hash: str  # the email the person shops with, hashed
    em_raw: str  # the same email as a messy form would carry it
    ph_hash: str | None
    ph_raw: str | None
    interests: list[int]
    propensity: float
    ctr: float
    platform_em: str | None = None  # hashed, when the platform knows it
    platform_ph: str | None = None


@dataclass(slots=True)
class _Advertiser:
    advertiser_id: str
    vertical: str
    currency: str
    aov: float
    ads: list[tuple[str, str]]  # (campaign_id, ad_id)
    sends_external_id: bool
    customers: dict[int, str] = field(default_factory=dict)  # person number -> hashed id


@dataclass(slots=True, frozen=True)
class _Shown:
    """One (ghost) impression and the click it drew (for a ghost: the click it would have)."""

    campaign_id: str
    ts: int
    click_ts: int | None
    ghost: bool


@dataclass(slots=True)
class _Visit:
    """A person on an advertiser's site at ``ts``; ``keep_ip`` reuses the ad session's IP.

    ``cause`` is the impression that drove an ad-driven visit (click- or view-through),
    ``lift`` the probability that it caused the visit; ``happened`` is False for a held-out
    user's visit that the ad would have caused: drawn like any visit, never emitted.
    """

    ts: int
    advertiser: int
    kind: str
    device: _Device | None = None
    ip: str | None = None
    keep_ip: bool = False
    # What the advertiser's site sees, filled in when the visit is reported.
    ua: str | None = None
    click_id: str | None = None
    channel: str = "both"
    external_id: str | None = None
    cause: _Shown | None = None
    lift: float = 0.0
    happened: bool = True


@dataclass(slots=True)
class _Truth:
    key: str
    advertiser_id: str
    event_name: str
    event_id: str
    ts: int
    user_id: str | None
    kind: str
    identifiers: list[str]  # merged over the copies, em/ph hashed
    cause: _Shown | None = None
    lift: float = 0.0
    happened: bool = True
    copies: list[dict[str, Any]] = field(default_factory=list)  # as emitted
    person: _Person | None = None


def _identifier_keys(
    click_id: str | None,
    em: str | None,
    ph: str | None,
    device_id: str | None,
    ip: str | None,
    ua: str | None,
) -> list[str]:
    """Identifier keys of one event (em/ph already hashed), in the spirit of docs/design.md."""
    keys = []
    if click_id:
        keys.append(f"click:{click_id}")
    if em:
        keys.append(f"em:{em}")
    if ph:
        keys.append(f"ph:{ph}")
    if device_id:
        keys.append(f"dev:{device_id}")
    if ip and ua:
        keys.append(f"ipua:{ip}|{ua}")
    if ip:
        keys.append(f"ip:{ip}")
    return keys


class _World:
    """Builds the population, simulates it and collects events; one instance per generate()."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.end_ms = cfg.start_ms + cfg.days * DAY_MS
        self.events: list[tuple[int, int, str, dict[str, Any]]] = []
        self.seq = itertools.count()
        self.person_seq = itertools.count()
        self.truth: list[_Truth] = []
        # identifier key -> {user_id: first ts}, from impressions, clicks and identity
        self.seen: dict[str, dict[str, int]] = {}
        # (user_id, advertiser_id) -> [(ts, type, engagement_id)]
        self.engagements: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        # (device_id, advertiser index) -> [(ts, click_id)]: the pixel's click-id cookie
        self.cookies: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self.event_ids: set[str] = set()
        self.ua_choices = [
            (template.format(v=v), weight / len(versions), mobile)
            for template, versions, weight, mobile in _UA_CATALOG
            for v in versions
        ]
        self.ua_cum = list(itertools.accumulate(w for _, w, _ in self.ua_choices))
        self.ua_next = {
            template.format(v=old): template.format(v=new)
            for template, versions, _, _ in _UA_CATALOG
            for old, new in itertools.pairwise(versions)
        }
        self.upgrade_rng = random.Random(cfg.seed * 1_000_003 + 17)
        # Holdout survival draws, and the campaigns' lift shares: a stream of their own.
        self.lift_rng = random.Random(cfg.seed * 1_000_003 + 29)
        # (user_id, campaign_id) -> ts of every impression, ghosts included
        self.exposures: dict[tuple[str, str], list[int]] = {}
        self.engagement_campaign: dict[str, str] = {}  # shown impression or click -> campaign
        # For the site events, noted without a draw: moments on an advertiser's site, everyone
        # simulated, and each emitted conversion's copies with its advertiser, ts and person.
        self.touches: list[Touch] = []
        self.people: list[_Person] = []
        self.site: SiteSimulator | None = None
        self._build_networks()
        self._build_advertisers()
        self._build_campaign_lifts()

    # -- construction ---------------------------------------------------------------------------

    def _build_networks(self) -> None:
        cfg, rng = self.cfg, self.rng
        mean_size = sum((i + 1) * w for i, w in enumerate(cfg.household_size_weights)) / sum(
            cfg.household_size_weights
        )
        households = max(1, round(cfg.users / mean_size))
        self.residential_pool = min(1 << 24, max(16, int(households * cfg.residential_pool_factor)))
        n_cgnat = max(3, math.ceil(cfg.users / max(1, cfg.users_per_cgnat_ip)))
        shares = (0.45, 0.35, 0.2)
        self.carriers: list[list[str]] = []
        for c, share in enumerate(shares):
            count = max(1, round(n_cgnat * share))
            self.carriers.append(
                [f"100.{64 + c}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(count)]
            )
        n_offices = max(
            1, math.ceil(cfg.users * cfg.office_user_share / max(1, cfg.users_per_office))
        )
        self.offices = [
            [
                f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                for _ in range(rng.choice((1, 1, 2)))
            ]
            for _ in range(n_offices)
        ]
        self.relays = [
            f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            for _ in range(max(1, cfg.relay_ips))
        ]

    def _build_advertisers(self) -> None:
        cfg, rng = self.cfg, self.rng
        self.advertisers: list[_Advertiser] = []
        for a in range(cfg.advertisers):
            adv_id = f"adv-{a + 1:02d}"
            ads = [
                (f"cmp-{a + 1:02d}-{c + 1}", f"ad-{a + 1:02d}-{c + 1}-{d + 1}")
                for c in range(rng.randint(2, 4))
                for d in range(rng.randint(2, 4))
            ]
            self.advertisers.append(
                _Advertiser(
                    advertiser_id=adv_id,
                    vertical=rng.choice(_VERTICALS),
                    currency=rng.choice(_CURRENCIES),
                    aov=round(rng.uniform(20, 180), 2),
                    ads=ads,
                    sends_external_id=rng.random() < cfg.external_id_advertiser_rate,
                )
            )
        weights = [1.0 / (i + 1) ** 0.8 for i in range(cfg.advertisers)]
        rng.shuffle(weights)
        self.adv_cum = list(itertools.accumulate(weights))

    def _build_campaign_lifts(self) -> None:
        """Each campaign's lift share; ``zero_lift_campaign_share`` of them cause nothing."""
        cfg, rng = self.cfg, self.lift_rng
        self.campaign_advertiser = {
            c: adv.advertiser_id for adv in self.advertisers for c, _ in adv.ads
        }
        campaigns = sorted(self.campaign_advertiser)
        zero = set(rng.sample(campaigns, round(len(campaigns) * cfg.zero_lift_campaign_share)))
        self.campaign_lift = {
            c: 0.0 if c in zero else rng.uniform(*cfg.campaign_lift_range) for c in campaigns
        }

    def in_holdout(self, user_id: str, campaign_id: str) -> bool:
        """Whether the user is in the campaign's holdout: a hash, stable whatever else is drawn."""
        if self.cfg.holdout_share <= 0:
            return False
        digest = hashlib.sha256(f"{self.cfg.seed}:{user_id}:{campaign_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < self.cfg.holdout_share * 2**64

    def _lift_share(self, p: _Person, v: _Visit) -> float:
        """The probability that the ad caused ad-driven visit ``v``: the campaign's share,
        times a segment factor (users who buy a lot anyway are moved less), a recency factor
        (from 1 right after the impression or click down to 0.5, time constant a day) and a
        frequency factor (the n-th exposure to the campaign adds less than the first:
        4 / (4 + earlier exposures)).
        """
        shown = v.cause
        assert shown is not None and p.user_id is not None
        share = self.campaign_lift[shown.campaign_id]
        if share <= 0.0:
            return 0.0
        segment = 0.5 if p.propensity >= 1.5 else (1.3 if p.propensity < 0.6 else 1.0)
        since = v.ts - (shown.click_ts if shown.click_ts is not None else shown.ts)
        recency = 0.5 + 0.5 * math.exp(-max(0, since) / DAY_MS)
        earlier = bisect.bisect_left(
            sorted(self.exposures[(p.user_id, shown.campaign_id)]), shown.ts
        )
        frequency = 4.0 / (4.0 + earlier)
        return min(1.0, share * segment * recency * frequency)

    def _new_household(self) -> _Household:
        cfg, rng = self.cfg, self.rng
        churn = max(0.1, cfg.home_ip_churn_days) * DAY_MS
        t = self.cfg.start_ms - int(rng.uniform(0, churn))
        starts, ips = [], []
        while t < self.end_ms + 8 * DAY_MS:
            starts.append(t)
            v = (rng.randrange(self.residential_pool) * 2_654_435_761) % (1 << 24)
            ips.append(f"10.{v >> 16}.{(v >> 8) & 255}.{max(1, v & 255)}")
            t += max(6 * HOUR_MS, int(rng.expovariate(1.0 / churn)))
        return _Household(starts, ips)

    def _new_device(self, mobile: bool | None = None) -> _Device:
        rng = self.rng
        while True:
            ua, _, is_mobile = rng.choices(self.ua_choices, cum_weights=self.ua_cum)[0]
            if mobile is None or is_mobile == mobile:
                break
        raw = f"{rng.getrandbits(128):032x}"
        raw = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"  # an IDFA-like id
        device = _Device(_sha256(raw), ua, is_mobile)
        up = self.upgrade_rng
        if ua in self.ua_next and up.random() < self.cfg.ua_upgrade_rate:
            when = self.cfg.start_ms + int(up.uniform(0, self.cfg.days * DAY_MS))
            device.upgrade = (when, self.ua_next[ua])
        return device

    def _new_person(self, user_id: str | None, household: _Household) -> _Person:
        cfg, rng = self.cfg, self.rng
        n = next(self.person_seq)
        devices = [self._new_device()]
        if rng.random() < cfg.second_device_rate:
            devices.append(self._new_device(mobile=not devices[0].mobile))
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        domain = rng.choice(_DOMAINS)
        email = f"{first}.{last}{n}@{domain}"
        shop = email
        if user_id is not None and rng.random() >= cfg.shop_email_same_rate:
            shop = f"{first[0]}{last}.{n}.shop@{rng.choice(_DOMAINS)}"
        shop_raw = shop.title() if rng.random() < 0.5 else shop.upper()
        shop_raw = f"{' ' * rng.randint(0, 2)}{shop_raw}{' ' * rng.randint(0, 2)}"
        ph_digits = ph_raw = None
        if rng.random() < cfg.phone_rate:
            area = _AREA_CODES[(n // 10_000) % len(_AREA_CODES)]
            line = f"{n % 10_000:04d}"
            ph_digits = f"1{area}555{line}"
            ph_raw = f"+1 ({area}) 555-{line}"
        k = min(3, cfg.advertisers)
        interests: list[int] = []
        while len(interests) < k:
            a = self._pick_advertiser_global()
            if a not in interests:
                interests.append(a)
        office = None
        if rng.random() < cfg.office_user_share:
            office = rng.choice(self.offices)
        person = _Person(
            number=n,
            user_id=user_id,
            household=household,
            devices=devices,
            carrier=rng.choices((0, 1, 2), weights=(0.45, 0.35, 0.2))[0],
            office=office,
            relay=rng.random() < cfg.relay_user_share,
            em_hash=_sha256(shop),
            em_raw=shop_raw,
            ph_hash=_sha256(ph_digits) if ph_digits else None,
            ph_raw=ph_raw,
            interests=interests,
            propensity=min(8.0, _lognormal_mean1(rng, 0.8)),
            ctr=min(0.5, cfg.ctr * _lognormal_mean1(rng, 0.7)),
        )
        self.people.append(person)
        if user_id is not None:
            if rng.random() < cfg.em_known_rate:
                person.platform_em = _sha256(email)
            if ph_digits and rng.random() < cfg.ph_known_rate:
                person.platform_ph = person.ph_hash
        return person

    # -- draws ----------------------------------------------------------------------------------

    def _pick_advertiser_global(self) -> int:
        return self.rng.choices(range(self.cfg.advertisers), cum_weights=self.adv_cum)[0]

    def _pick_advertiser(self, p: _Person, targeted: float) -> int:
        if self.rng.random() < targeted:
            return self.rng.choice(p.interests)
        return self._pick_advertiser_global()

    def _random_ts(self) -> int:
        rng = self.rng
        day = rng.randrange(self.cfg.days)
        hour = rng.choices(range(24), cum_weights=_HOUR_CUM)[0]
        return self.cfg.start_ms + day * DAY_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)

    def _ip_at(
        self, p: _Person, device: _Device, ts: int, rng: random.Random | None = None
    ) -> str | None:
        """The IP an event of ``p`` on ``device`` comes from at ``ts`` (drawn from ``rng``,
        the world's stream by default)."""
        cfg, rng = self.cfg, rng or self.rng
        if rng.random() < cfg.ip_null_rate:
            return None
        if p.relay and rng.random() < cfg.relay_rate:
            return rng.choice(self.relays)
        day, ms = divmod(ts, DAY_MS)
        weekday, hour = (day + 3) % 7 < 5, ms // HOUR_MS  # 1970-01-01 was a Thursday
        if p.office and weekday and 9 <= hour < 18:
            if rng.random() < cfg.office_hours_rate * (0.6 if device.mobile else 1.0):
                return rng.choice(p.office)
        if device.mobile and rng.random() < cfg.mobile_away_rate:
            return rng.choice(self.carriers[p.carrier])
        return p.household.ip_at(ts)

    def _ua(self, device: _Device, ts: int, rng: random.Random | None = None) -> str | None:
        return None if (rng or self.rng).random() < self.cfg.ua_null_rate else device.ua_at(ts)

    def _token(self, prefix: str) -> str:
        while True:
            token = f"{prefix}{self.rng.getrandbits(64):016x}"
            if token not in self.event_ids:
                self.event_ids.add(token)
                return token

    # -- emission -------------------------------------------------------------------------------

    def _emit(self, topic: str, arrival: int, value: dict[str, Any]) -> None:
        self.events.append((arrival, next(self.seq), topic, value))

    def _platform_delay(self) -> int:
        rng = self.rng
        lo, hi = PLATFORM_DELAY_MS
        if rng.random() < 0.005:  # a late batch
            return rng.randrange(10 * SECOND_MS, hi + 1)
        return rng.randrange(lo, 3 * SECOND_MS)

    def _sight(self, user_id: str, ts: int, keys: list[str]) -> None:
        for key in keys:
            users = self.seen.setdefault(key, {})
            if ts < users.get(user_id, ts + 1):
                users[user_id] = ts

    def _engagement(
        self, p: _Person, ts: int, a: int, ctx: tuple[_Device, str | None, str | None, str | None]
    ) -> _Shown:
        """Emit an impression of advertiser ``a`` and maybe its click.

        For a user in the campaign's holdout the impression is a ghost (``"holdout": true``) and
        the click is drawn but never happens: the same draws keep the world of everyone else.
        """
        rng = self.rng
        device, ip, ua, device_id = ctx
        adv = self.advertisers[a]
        ad = rng.choice(adv.ads)
        user_id = p.user_id
        assert user_id is not None
        ghost = self.in_holdout(user_id, ad[0])
        imp_id = self._token("imp-")
        value = {
            "event_id": imp_id,
            "ts": ts,
            "user_id": user_id,
            "advertiser_id": adv.advertiser_id,
            "campaign_id": ad[0],
            "ad_id": ad[1],
            "ip": ip,
            "user_agent": ua,
            "device_id": device_id,
        }
        if ghost:
            value["holdout"] = True
        self._emit("impressions", ts + self._platform_delay(), value)
        # A ghost is a real ad request from the user's device: a sighting like any impression.
        self._sight(user_id, ts, _identifier_keys(None, None, None, device_id, ip, ua))
        self.exposures.setdefault((user_id, ad[0]), []).append(ts)
        if not ghost:
            engagements = self.engagements.setdefault((user_id, adv.advertiser_id), [])
            engagements.append((ts, "view", imp_id))
            self.engagement_campaign[imp_id] = ad[0]
        if rng.random() >= p.ctr:
            return _Shown(ad[0], ts, None, ghost)
        click_ts = ts + rng.randrange(2 * SECOND_MS, 45 * SECOND_MS)
        click_id = self._token("clk-")
        arrival = click_ts + self._platform_delay()
        if ghost:
            return _Shown(ad[0], ts, click_ts, ghost)
        click = dict(value, event_id=click_id, ts=click_ts, click_id=click_id)
        self._emit("clicks", arrival, click)
        self._sight(user_id, click_ts, _identifier_keys(click_id, None, None, device_id, ip, ua))
        self.engagements[(user_id, adv.advertiser_id)].append((click_ts, "click", click_id))
        self.engagement_campaign[click_id] = ad[0]
        self.cookies.setdefault((device.device_id, a), []).append((click_ts, click_id))
        self.touches.append(Touch("landing", click_ts, p, device, a, ip, ua, click_id))
        return _Shown(ad[0], ts, click_ts, ghost)

    def _login(self, p: _Person) -> None:
        rng = self.rng
        assert p.user_id is not None
        ts = self._random_ts()
        device = rng.choice(p.devices)
        ip, ua = self._ip_at(p, device, ts), self._ua(device, ts)
        device_id = None if rng.random() < self.cfg.device_id_null_rate / 2 else device.device_id
        value = {
            "user_id": p.user_id,
            "ts": ts,
            "em": p.platform_em,
            "ph": p.platform_ph,
            "device_id": device_id,
            "ip": ip,
            "user_agent": ua,
        }
        self._emit("identity", ts + self._platform_delay(), value)
        keys = _identifier_keys(None, p.platform_em, p.platform_ph, device_id, ip, ua)
        self._sight(p.user_id, ts, keys)

    def simulate_user(self, p: _Person) -> None:
        """All sessions, logins and conversion visits of one platform user."""
        cfg, rng = self.cfg, self.rng
        visits: list[_Visit] = []
        session_rate = cfg.sessions_per_day * _lognormal_mean1(rng, 0.6)
        for _ in range(_poisson(rng, cfg.days * session_rate)):
            self._session(p, visits)
        login_rate = cfg.logins_per_week * _lognormal_mean1(rng, 0.6)
        for _ in range(_poisson(rng, cfg.days / 7 * login_rate)):
            self._login(p)
        organic = cfg.days * cfg.organic_conversions_per_day * p.propensity
        for _ in range(_poisson(rng, organic)):
            a = self._pick_advertiser(p, 0.7)
            visits.append(_Visit(self._random_ts(), a, "organic"))
        visits.sort(key=lambda v: (v.ts, v.advertiser))
        for v in visits:
            if v.ts >= self.end_ms:
                continue
            if rng.random() < cfg.unknown_device_rate:
                v.device, v.keep_ip = self._new_device(), False
            elif v.device is None:
                v.device = rng.choice(p.devices)
            if v.cause is not None:
                self._counterfactual(p, v)
            self._visit(p, v)

    def _counterfactual(self, p: _Person, v: _Visit) -> None:
        """An ad-driven visit's lift share; for a held-out user, whether it happens anyway (as
        an organic visit, probability 1 - share) or not at all."""
        v.lift = self._lift_share(p, v)
        assert v.cause is not None
        if v.cause.ghost:
            if self.lift_rng.random() < v.lift:
                v.happened = False
            else:
                v.kind = "organic"

    def _session(self, p: _Person, visits: list[_Visit]) -> None:
        """A few impressions on one device and network; clicks and the visits they cause."""
        cfg, rng = self.cfg, self.rng
        t = self._random_ts()
        device = rng.choice(p.devices) if rng.random() < 0.35 else p.devices[0]
        ip, ua = self._ip_at(p, device, t), self._ua(device, t)
        device_id = None if rng.random() < cfg.device_id_null_rate else device.device_id
        for _ in range(1 + _poisson(rng, cfg.impressions_per_session - 1)):
            t += rng.randrange(3 * SECOND_MS, 90 * SECOND_MS)
            a = self._pick_advertiser(p, cfg.targeting_rate)
            shown = self._engagement(p, t, a, (device, ip, ua, device_id))
            if shown.click_ts is not None:
                t = shown.click_ts
                if rng.random() < min(0.9, cfg.click_conversion_rate * p.propensity):
                    soon = rng.random() < 0.6
                    if soon:
                        delay = rng.randrange(2 * MINUTE_MS, 60 * MINUTE_MS)
                    else:
                        delay = HOUR_MS + min(7 * DAY_MS, int(rng.expovariate(1 / (36 * HOUR_MS))))
                    if rng.random() < cfg.same_device_rate:
                        # A quick conversion on the clicking device stays on the session's network.
                        visit = _Visit(t + delay, a, "click_through", device, ip, soon)
                    else:
                        visit = _Visit(t + delay, a, "click_through")
                    visit.cause = shown
                    visits.append(visit)
            elif rng.random() < min(0.5, cfg.view_conversion_rate * p.propensity):
                delay = MINUTE_MS + min(23 * HOUR_MS, int(rng.expovariate(1 / (4 * HOUR_MS))))
                visits.append(_Visit(t + delay, a, "view_through", cause=shown))

    def _cookie_click(self, device: _Device, a: int, ts: int) -> str | None:
        """The pixel's click-id cookie: the device's latest click on this advertiser."""
        best = None
        for click_ts, click_id in self.cookies.get((device.device_id, a), ()):
            if ts - CLICK_WINDOW_MS <= click_ts <= ts and (best is None or click_ts >= best[0]):
                best = (click_ts, click_id)
        return best[1] if best else None

    def _visit(self, p: _Person, v: _Visit) -> int:
        """Emit the conversions of one advertiser-site visit; return how many keys."""
        cfg, rng = self.cfg, self.rng
        adv, device = self.advertisers[v.advertiser], v.device
        assert device is not None
        if not v.keep_ip:
            v.ip = self._ip_at(p, device, v.ts)
        v.ua = self._ua(device, v.ts)
        if p.user_id is not None:
            v.click_id = self._cookie_click(device, v.advertiser, v.ts)
        r = rng.random()
        if r < cfg.both_channels_rate:
            v.channel = "both"
        elif r < cfg.both_channels_rate + cfg.pixel_only_rate:
            v.channel = "pixel"
        else:
            v.channel = "capi"
        if adv.sends_external_id:
            if p.number not in adv.customers:
                adv.customers[p.number] = customer_hash(adv.advertiser_id, len(adv.customers))
            v.external_id = adv.customers[p.number]
        names = _event_names(rng, adv.vertical, cfg.add_to_cart_rate)
        if v.happened:
            # The visit's first page, a few minutes before its first conversion.
            self.touches.append(
                Touch("visit", v.ts - 5 * MINUTE_MS, p, device, v.advertiser, v.ip, v.ua)
            )
        ts = v.ts
        for name in names:
            self._conversion(p, v, ts, name)
            ts += rng.randrange(MINUTE_MS, 20 * MINUTE_MS)
        return len(names)

    def _conversion(self, p: _Person, v: _Visit, ts: int, name: str) -> None:
        """One conversion of visit ``v``: its pixel and/or CAPI copies and its truth row (for a
        visit that did not happen, drawn alike and kept out of the replay and the truth)."""
        rng = self.rng
        adv = self.advertisers[v.advertiser]
        event_id = self._token("ord-" if name == "Purchase" else "evt-")
        value = _conversion_value(rng, adv, name)
        copies: list[tuple[str, int, dict[str, str | None]]] = []
        emitted: list[dict[str, Any]] = []
        if v.channel in ("both", "pixel"):
            arrival = ts + rng.randrange(PIXEL_DELAY_MS[0], PIXEL_DELAY_MS[1] + 1)
            copies.append(("pixel", arrival, self._pixel_data(p, v)))
        if v.channel in ("both", "capi"):
            copies.append(("capi", ts + self._capi_delay(), self._capi_data(p, v)))
        for source, arrival, user_data in copies:
            event = conversion_event(
                event_id,
                name,
                source,
                ts,
                adv.advertiser_id,
                user_data,
                value=value,
                currency=adv.currency,
            )
            if v.happened:
                self._emit("conversions", arrival, event)
                emitted.append(event)
        # Identifiers merged over the copies; em/ph hashed (a raw value hashes to the same).
        merged = {
            f: next((ud[f] for _, _, ud in copies if ud[f] is not None), None)
            for f in ("click_id", "em", "ph", "device_id", "client_ip_address", "client_user_agent")
        }
        identifiers = _identifier_keys(
            merged["click_id"],
            p.em_hash if merged["em"] else None,
            p.ph_hash if merged["ph"] else None,
            merged["device_id"],
            merged["client_ip_address"],
            merged["client_user_agent"],
        )
        key = f"{adv.advertiser_id}:{name}:{event_id}"
        kind = v.kind if p.user_id is not None else "stranger"
        truth = _Truth(key, adv.advertiser_id, name, event_id, ts, p.user_id, kind, identifiers)
        truth.cause, truth.lift, truth.happened = v.cause, v.lift, v.happened
        truth.copies, truth.person = emitted, p
        self.truth.append(truth)
        if emitted:
            assert v.device is not None
            touch = Touch("conversion", ts, p, v.device, v.advertiser, v.ip, v.ua)
            self.touches.append(replace(touch, copies=tuple(emitted)))

    def _pixel_data(self, p: _Person, v: _Visit) -> dict[str, str | None]:
        """Browser pixel: IP and UA always, the click-id cookie often, hashed em/ph rarely."""
        cfg, rng = self.cfg, self.rng
        assert v.device is not None
        return {
            "em": p.em_hash if rng.random() < cfg.pixel_em_rate else None,
            "ph": p.ph_hash if rng.random() < cfg.pixel_ph_rate else None,
            "external_id": None,
            "click_id": v.click_id if rng.random() < cfg.pixel_click_id_rate else None,
            "client_ip_address": v.ip,
            "client_user_agent": v.ua,
            "device_id": v.device.device_id if rng.random() < cfg.pixel_device_id_rate else None,
        }

    def _capi_data(self, p: _Person, v: _Visit) -> dict[str, str | None]:
        """Server CAPI: em/ph/external_id often (a few unhashed), forwarded IP and UA sometimes."""
        cfg, rng = self.cfg, self.rng
        assert v.device is not None
        em = ph = None
        if rng.random() < cfg.capi_em_rate:
            em = p.em_raw if rng.random() < cfg.raw_pii_rate else p.em_hash
        if p.ph_hash and rng.random() < cfg.capi_ph_rate:
            ph = p.ph_raw if rng.random() < cfg.raw_pii_rate else p.ph_hash
        forward = rng.random() < cfg.capi_ip_ua_rate
        return {
            "em": em,
            "ph": ph,
            "external_id": v.external_id,
            "click_id": v.click_id if rng.random() < cfg.capi_click_id_rate else None,
            "client_ip_address": v.ip if forward else None,
            "client_user_agent": v.ua if forward else None,
            "device_id": v.device.device_id if rng.random() < cfg.capi_device_id_rate else None,
        }

    def _capi_delay(self) -> int:
        return capi_delay_ms(self.rng, self.cfg.capi_delay_min_s, self.cfg.capi_delay_max_s)

    def simulate_strangers(self, households: list[_Household], platform_keys: int) -> None:
        """Non-platform converters until they hold ``stranger_share`` of the conversion keys."""
        cfg, rng = self.cfg, self.rng
        target = round(platform_keys * cfg.stranger_share / (1.0 - cfg.stranger_share))
        if target <= 0:
            return
        pool = []
        for _ in range(max(1, math.ceil(target / 1.6))):
            if households and rng.random() < cfg.stranger_household_rate:
                household = rng.choice(households)
            else:
                household = self._new_household()
            pool.append(self._new_person(None, household))
        made = 0
        while made < target:
            p = rng.choice(pool)
            a = self._pick_advertiser(p, 0.7)
            made += self._visit(p, _Visit(self._random_ts(), a, "stranger", rng.choice(p.devices)))

    def run(self) -> Generated:
        cfg, rng = self.cfg, self.rng
        sizes = range(1, len(cfg.household_size_weights) + 1)
        households: list[_Household] = []
        users: list[_Person] = []
        while len(users) < cfg.users:
            household = self._new_household()
            households.append(household)
            size = rng.choices(sizes, weights=cfg.household_size_weights)[0]
            for _ in range(min(size, cfg.users - len(users))):
                users.append(self._new_person(f"u{len(users) + 1:06d}", household))
        for p in users:
            self.simulate_user(p)
        self.simulate_strangers(households, len(self.truth))
        if cfg.site_events:
            self.site = SiteSimulator(self)
            self.site.run(self.touches)
        return self._finish()

    def _finish(self) -> Generated:
        cfg, rng = self.cfg, self.rng
        self.truth.sort(key=lambda t: (t.ts, t.key))
        for t in self.truth:
            if rng.random() < cfg.feedback_rate:
                fts = t.ts + rng.randrange(DAY_MS, 3 * DAY_MS + 1)
                if not t.happened:
                    continue
                value = {
                    "advertiser_id": t.advertiser_id,
                    "event_id": t.event_id,
                    "event_name": t.event_name,
                    "user_id": t.user_id,
                    "ts": fts,
                }
                self._emit("feedback", fts, value)
        self.events.sort(key=lambda e: (e[0], e[1]))
        position: dict[str, int] = {}
        lines: list[ReplayLine] = []
        for i, (_, _, topic, value) in enumerate(self.events):
            if topic == "impressions" or topic == "clicks":
                position[value["event_id"]] = i
            lines.append({"topic": topic, "value": value})
        self.reach = GraphReach(self._observations(), self.seen)
        rows = [self._truth_row(t, position) for t in self.truth if t.happened]
        senders = self.site.senders if self.site is not None else {}
        return Generated(lines, rows, self._campaign_truth(), senders)

    def _observations(self) -> list[Observation]:
        """Every emitted event's graph nodes: the conversions' copies (with their fbp, if the
        site gave them one) and the site events."""
        out = list(self.site.observations) if self.site is not None else []
        for t in self.truth:
            if t.copies and t.person is not None:
                nodes = {n for c in t.copies for n in event_nodes(c["user_data"], t.person)}
                out.append((t.advertiser_id, t.ts, tuple(sorted(nodes))))
        return out

    def _truth_row(self, t: _Truth, position: dict[str, int]) -> TruthRow:
        linkable = False
        last_touch = None
        if t.user_id is not None:
            linkable = any(
                self.seen.get(key, {}).get(t.user_id, t.ts + 1) <= t.ts for key in t.identifiers
            )
            last_touch = _last_touch(
                self.engagements.get((t.user_id, t.advertiser_id), []), t.ts, position
            )
        campaign_id = t.cause.campaign_id if t.cause is not None else None
        if campaign_id is None and last_touch is not None:
            campaign_id = self.engagement_campaign[last_touch["engagement_id"]]
        exposed_effect = t.cause is not None and not t.cause.ghost
        hops = None
        if t.user_id is not None:
            assert t.person is not None
            own = {n for c in t.copies for n in event_nodes(c["user_data"], t.person)}
            hops = self.reach.hops(t.advertiser_id, own, t.user_id, t.ts)
        return {
            "conversion_key": t.key,
            "advertiser_id": t.advertiser_id,
            "event_name": t.event_name,
            "event_id": t.event_id,
            "ts": t.ts,
            "user_id": t.user_id,
            "kind": t.kind,
            "last_touch": last_touch,
            "linkable": linkable,
            "graph_linkable": linkable or hops is not None,
            "graph_hops": hops,
            "incremental_probability": round(t.lift, 6) if exposed_effect else 0.0,
            "campaign_id": campaign_id,
            "holdout": campaign_id is not None
            and t.user_id is not None
            and self.in_holdout(t.user_id, campaign_id),
        }

    def _campaign_truth(self) -> list[CampaignTruthRow]:
        """Each campaign's true intent-to-treat lift (docs/design.md, "True lift").

        Users enter a campaign at their first (ghost) impression of it; their outcome is the
        number of conversions at the campaign's advertiser from then to the end of the
        attribution window (:data:`CLICK_WINDOW_MS`). Exposed, a user makes every visit drawn
        for them; held out, each visit the campaign's ads would have caused happens with
        probability 1 - its lift share. So for every eligible user, ``y1`` (conversions if
        exposed) and ``tau`` (their expected loss if held out: the lift shares of the
        conversions the campaign would cause) are known, held out or not, and the truth is
        the expectation over the holdout draws: ``true_lift = sum(tau) / sum(y1 - tau)``,
        ``true_incremental = exposed_users * mean(tau)`` (scaled to the exposed group).
        """
        first: dict[tuple[str, str], int] = {}
        by_user: dict[tuple[str, str], list[str]] = {}  # (user_id, advertiser_id) -> campaigns
        for (user_id, campaign_id), times in self.exposures.items():
            first[(user_id, campaign_id)] = min(times)
            adv = self.campaign_advertiser[campaign_id]
            by_user.setdefault((user_id, adv), []).append(campaign_id)
        y1: dict[tuple[str, str], int] = dict.fromkeys(first, 0)
        tau: dict[tuple[str, str], float] = dict.fromkeys(first, 0.0)
        observed: dict[tuple[str, str], int] = dict.fromkeys(first, 0)
        for t in self.truth:
            if t.user_id is None:
                continue
            for campaign_id in by_user.get((t.user_id, t.advertiser_id), ()):
                key = (t.user_id, campaign_id)
                if not first[key] <= t.ts <= first[key] + CLICK_WINDOW_MS:
                    continue
                caused_here = t.cause is not None and t.cause.campaign_id == campaign_id
                observed[key] += t.happened
                # A visit that did not happen is a would-be conversion only for its own
                # campaign; for another it happened in neither arm.
                if t.happened or caused_here:
                    y1[key] += 1
                if caused_here:
                    tau[key] += t.lift
        per_campaign: dict[str, list[tuple[str, str]]] = {c: [] for c in self.campaign_advertiser}
        for key in first:
            per_campaign[key[1]].append(key)
        out = []
        for campaign_id, keys in sorted(per_campaign.items()):
            held = [k for k in keys if self.in_holdout(k[0], campaign_id)]
            n_exposed = len(keys) - len(held)
            sum_tau, sum_y1 = math.fsum(tau[k] for k in keys), sum(y1[k] for k in keys)
            baseline = sum_y1 - sum_tau
            held_set = set(held)
            out.append(
                {
                    "campaign_id": campaign_id,
                    "advertiser_id": self.campaign_advertiser[campaign_id],
                    "holdout_share": self.cfg.holdout_share,
                    "lift_share": round(self.campaign_lift[campaign_id], 6),
                    "zero_lift": self.campaign_lift[campaign_id] == 0.0,
                    "window_ms": CLICK_WINDOW_MS,
                    "exposed_users": n_exposed,
                    "holdout_users": len(held),
                    "exposed_conversions": sum(observed[k] for k in keys if k not in held_set),
                    "holdout_conversions": sum(observed[k] for k in held),
                    "true_incremental": round(n_exposed * sum_tau / len(keys), 6) if keys else 0.0,
                    "true_baseline": round(n_exposed * baseline / len(keys), 6) if keys else 0.0,
                    "true_lift": round(sum_tau / baseline, 6) if baseline > 0 else None,
                }
            )
        return out


def _last_touch(
    engagements: Sequence[tuple[int, str, str]], ts: int, position: dict[str, int]
) -> dict[str, str] | None:
    """Last click within 30 days before ``ts``, else last view within 1 day, else None.

    >>> e = [(10, "view", "i1"), (20, "click", "c1"), (30, "view", "i2")]
    >>> _last_touch(e, 40, {"i1": 0, "c1": 1, "i2": 2})
    {'engagement_id': 'c1', 'engagement_type': 'click'}
    """
    for kind, window in (("click", CLICK_WINDOW_MS), ("view", VIEW_WINDOW_MS)):
        best = None
        for e_ts, e_kind, e_id in engagements:
            if e_kind == kind and ts - window <= e_ts <= ts:
                rank = (e_ts, position[e_id])
                if best is None or rank > best[0]:
                    best = (rank, e_id)
        if best is not None:
            return {"engagement_id": best[1], "engagement_type": kind}
    return None


def _event_names(rng: random.Random, vertical: str, add_to_cart_rate: float) -> list[str]:
    """The conversion events one visit reports, in order."""
    if vertical == "ecommerce":
        if rng.random() >= 0.7:
            return ["AddToCart"]
        return ["AddToCart", "Purchase"] if rng.random() < add_to_cart_rate else ["Purchase"]
    if vertical == "leadgen":
        return ["Lead" if rng.random() < 0.8 else "CompleteRegistration"]
    return ["Subscribe" if rng.random() < 0.6 else "StartTrial"]


def _conversion_value(rng: random.Random, adv: _Advertiser, name: str) -> float:
    if name == "Purchase":
        return round(adv.aov * rng.lognormvariate(-0.125, 0.5), 2)
    if name == "AddToCart":
        return round(0.4 * adv.aov * rng.lognormvariate(-0.125, 0.5), 2)
    if name == "Subscribe":
        return rng.choice((9.99, 14.99, 99.0))
    return 0.0


# --- public API --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Generated:
    """One generated data set: the replay, a truth row per conversion, one per campaign, and
    who sent each site event (its key -> user id, None for a stranger)."""

    lines: list[ReplayLine]
    truth: list[TruthRow]
    campaigns: list[CampaignTruthRow]
    site_senders: dict[str, str | None] = field(default_factory=dict)


def generate_all(config: GeneratorConfig | None = None) -> Generated:
    """:func:`generate`, with the per-campaign truth of :meth:`_World._campaign_truth` too.

    >>> g = generate_all(GeneratorConfig(users=80, days=3, seed=2))
    >>> sorted(g.campaigns[0])[:4]
    ['advertiser_id', 'campaign_id', 'exposed_conversions', 'exposed_users']
    >>> any(line["value"].get("holdout") for line in g.lines if line["topic"] == "impressions")
    True
    """
    return _World(config or GeneratorConfig()).run()


def generate(config: GeneratorConfig | None = None) -> tuple[list[ReplayLine], list[TruthRow]]:
    """Simulate the world of ``config``: (replay lines in arrival order, truth rows by ts).

    Replay lines are ``{"topic", "value"}`` sorted by arrival (event ts + delivery delay), ties in
    generation order. One truth row per conversion key: ``kind`` is why the conversion happened
    (``click_through``: caused by a click, so the last touch is a click; ``view_through``: by a view
    less than a day earlier, so there is a last touch; ``organic``: no ad caused it, though the
    user may still have a last touch; ``stranger``: not a platform user). ``last_touch`` is the
    rule of :data:`CLICK_WINDOW_MS`/:data:`VIEW_WINDOW_MS` over the converter's engagements with
    that advertiser, equal timestamps going to the later line of the replay. ``linkable``: one of
    the conversion's identifiers (merged over its copies) was sighted for the converter in
    impressions, clicks or identity at or before the conversion ts (ghost impressions count:
    the request came from the user's device). ``last_touch`` never names a ghost impression.
    ``graph_hops``: the fewest links, through the advertiser's events on the conversions topic
    (site events and conversions, none older than 30 days, none after the conversion), from one
    of the conversion's own identifiers (browser id included, the address not) to an identifier
    sighted for the converter by then, at most 3 (:mod:`convstream.synth.reach`), else None;
    ``graph_linkable``: ``linkable`` or ``graph_hops`` is not None, the ceiling of a graph with
    that reach. Site events (``PageView``, ``ViewContent``, ``Login``: :func:`is_site_event`)
    are not conversions and have no truth row.

    Incrementality: ``campaign_id`` is the campaign whose (ghost) impression drove the visit
    (ad-driven visits, and held-out users' visits that happened anyway, which are ``organic``),
    else the last touch's campaign, else None; ``holdout`` whether the converter is in that
    campaign's holdout; ``incremental_probability`` the probability that the ads caused the
    conversion: the visit's lift share for an exposed user's click- or view-through, else 0.

    >>> lines, truth = generate(GeneratorConfig(users=50, days=2, seed=1))
    >>> {line["topic"] for line in lines} >= {"impressions", "clicks", "identity", "conversions"}
    True
    >>> len(truth) == len({row["conversion_key"] for row in truth})
    True
    """
    generated = generate_all(config)
    return generated.lines, generated.truth


def campaign_truth_path(truth_path: str | Path) -> Path:
    """Where the per-campaign truth goes, next to the truth file.

    >>> str(campaign_truth_path("out/truth.jsonl")), str(campaign_truth_path("t"))
    ('out/truth.campaigns.jsonl', 't.campaigns.jsonl')
    """
    path = Path(truth_path)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.campaigns.jsonl")


def _write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            n += 1
    return n


def write_replay(path: str | Path, lines: Iterable[ReplayLine]) -> int:
    """Write ``{"topic", "value"}`` lines as JSON Lines; return the number written."""
    return _write_jsonl(path, lines)


def write_truth(path: str | Path, rows: Iterable[TruthRow]) -> int:
    """Write truth rows as JSON Lines; return the number written."""
    return _write_jsonl(path, rows)


def summarize(lines: Sequence[ReplayLine], truth: Sequence[TruthRow]) -> dict[str, Any]:
    """Headline numbers of a generated data set (for the CLI and for sanity checks).

    >>> s = summarize(*generate(GeneratorConfig(users=50, days=2, seed=1)))
    >>> s["conversion_keys"] > 0 and 0.0 <= s["stranger_share"] <= 1.0
    True
    """
    topics = {topic: 0 for topic in TOPICS}
    sources: dict[str, set[str]] = {}
    raw_pii = 0
    ip_users: dict[str, set[str]] = {}
    platform_events = null_ip = relay_ip = ghosts = 0
    site_events: dict[str, int] = dict.fromkeys(SITE_EVENT_NAMES, 0)
    for line in lines:
        topic, v = line["topic"], line["value"]
        topics[topic] = topics.get(topic, 0) + 1
        ghosts += topic == "impressions" and bool(v.get("holdout"))
        if is_site_event(line):
            site_events[v["event_name"]] += 1
        elif topic == "conversions":
            key = f"{v['advertiser_id']}:{v['event_name']}:{v['event_id']}"
            sources.setdefault(key, set()).add(v["source"])
            ud = v["user_data"]
            raw_pii += sum(1 for f in ("em", "ph") if ud[f] and not _is_hex64(ud[f]))
        elif topic in ("impressions", "clicks", "identity"):
            platform_events += 1
            ip = v["ip"]
            if ip is None:
                null_ip += 1
            else:
                relay_ip += ip.startswith(RELAY_PREFIX)
                ip_users.setdefault(ip, set()).add(v["user_id"])
    n = len(truth)
    platform = [row for row in truth if row["user_id"] is not None]
    n_ips = len(ip_users)
    return {
        "lines": len(lines),
        "topics": topics,
        "conversion_keys": n,
        "stranger_share": _ratio(n - len(platform), n),
        "site_events": site_events,
        "linkable_share": _ratio(sum(row["linkable"] for row in platform), len(platform)),
        "graph_linkable_share": _ratio(
            sum(row["graph_linkable"] for row in platform), len(platform)
        ),
        "last_touch_share": _ratio(
            sum(row["last_touch"] is not None for row in platform), len(platform)
        ),
        "kinds": {k: sum(row["kind"] == k for row in truth) for k in KINDS},
        "dedupe_pair_share": _ratio(sum(len(s) == 2 for s in sources.values()), len(sources)),
        "raw_pii_values": raw_pii,
        "impression_share": _ratio(topics["impressions"], platform_events),
        "ghost_impression_share": _ratio(ghosts, topics["impressions"]),
        "null_ip_share": _ratio(null_ip, platform_events),
        "relay_ip_share": _ratio(relay_ip, platform_events),
        "mean_users_per_ip": _ratio(sum(len(u) for u in ip_users.values()), n_ips),
    }


def is_site_event(line: ReplayLine) -> bool:
    """Whether a replay line is a site event (not a conversion, no truth row: graph input).

    >>> is_site_event({"topic": "conversions", "value": {"event_name": "PageView"}})
    True
    """
    return line["topic"] == "conversions" and line["value"].get("event_name") in SITE_EVENT_NAMES


def _ratio(num: float, den: float) -> float:
    return round(num / den, 4) if den else 0.0


def _is_hex64(v: str) -> bool:
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)
