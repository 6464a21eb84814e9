"""Advertiser site events of the synthetic world: browsers, first-party cookies, page views.

A person's devices run one browser each, some a second one; each browser keeps a first-party
``_fbp``-style cookie per advertiser domain (``fb.1.<creation ms>.<random>``), refreshed by
every visit and lost when cleared, after 90 days without a visit, or after 7 days without one
in a browser that caps script-set cookies (Safari's ITP). On the conversions topic the site
sends ``PageView`` (a landing after an ad click carries the click id as ``fbc``,
``fb.1.<ms>.<click id>``), ``ViewContent`` and ``Login`` (with the hashed email, the phone
sometimes, the advertiser's external id when it sends one), through pixel and CAPI, in today's
shape with Meta's ``fbp`` and ``fbc`` fields; the conversions of the same browser get its
``fbp`` too. Every draw here comes from a site stream of each person's own (seeded by the world's
seed and the person), never the world's: the rest of the traffic is the same with site events
or without, and one person's site events do not change when another's clicks do (a holdout).

>>> jar = CookieJar(lifetime_ms=7 * DAY_MS)
>>> first = jar.touch(adv=0, ts=0, make=lambda ts: f"fb.1.{ts}.1")
>>> jar.touch(adv=0, ts=6 * DAY_MS, make=lambda ts: f"fb.1.{ts}.2") == first
True
>>> jar.touch(adv=0, ts=14 * DAY_MS, make=lambda ts: f"fb.1.{ts}.3")  # 8 days since the last
'fb.1.1209600000.3'
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convstream.core.units import DAY_MS, MINUTE_MS, SECOND_MS

if TYPE_CHECKING:
    from convstream.synth.generate import _Device, _Person, _World

#: The events the site sends that are not conversions by default: they only feed the graph.
SITE_EVENT_NAMES = ("PageView", "ViewContent", "Login")
#: Cookie lifetime without a visit: fbp's default expiry, and Safari's cap on script cookies.
COOKIE_LIFETIME_MS = 90 * DAY_MS
ITP_LIFETIME_MS = 7 * DAY_MS


def _is_itp_ua(ua: str) -> bool:
    """Safari on macOS or iOS (WebKit without Chrome): script-set cookies live 7 days.

    >>> _is_itp_ua("Mozilla/5.0 (iPhone; ...) Version/17.2 Mobile/15E148 Safari/604.1")
    True
    >>> _is_itp_ua("Mozilla/5.0 (Windows NT 10.0) ... Chrome/121.0.0.0 Safari/537.36")
    False
    """
    return "Safari/" in ua and "Chrome/" not in ua and "Android" not in ua


@dataclass(slots=True)
class CookieJar:
    """One browser's first-party cookies, one per advertiser domain, and when it was cleared."""

    lifetime_ms: int
    clears: list[int] = field(default_factory=list)  # sorted clear times
    cookies: dict[int, tuple[str, int]] = field(default_factory=dict)  # adv -> (value, last set)

    def touch(self, adv: int, ts: int, make: Callable[[int], str]) -> str:
        """The cookie a visit at ``ts`` sends (made anew if expired or cleared), refreshed."""
        held = self.cookies.get(adv)
        if held is not None and ts < held[1]:
            return held[0]  # a page of the same session read a little out of order
        if held is not None:
            value, last = held
            cleared = bisect.bisect_right(self.clears, ts) > bisect.bisect_right(self.clears, last)
            if ts - last > self.lifetime_ms or cleared:
                held = None
        value = make(ts) if held is None else held[0]
        self.cookies[adv] = (value, ts)
        return value


@dataclass(slots=True)
class Browser:
    ua: str
    jar: CookieJar


@dataclass(slots=True, frozen=True)
class Touch:
    """A moment the person is on an advertiser's site, noted by the world without a draw.

    ``kind`` is ``landing`` (just after an ad click, ``click_id`` set), ``visit`` (the start of
    a conversion visit) or ``conversion`` (``copies``: the conversion's emitted events, which
    get the browser's fbp).
    """

    kind: str
    ts: int
    person: _Person
    device: _Device
    adv: int
    ip: str | None
    ua: str | None
    click_id: str | None = None
    copies: tuple[dict[str, Any], ...] = ()


class SiteSimulator:
    """Turns the world's touches (and browsing sessions of its own) into site events."""

    def __init__(self, world: _World) -> None:
        self.world = world
        self.cfg = world.cfg
        self.rng = random.Random(0)  # each person's stream, set by run()
        self.browsers: dict[str, list[Browser]] = {}  # device id -> its browsers
        #: (advertiser_id, ts, node keys) of every event the site sent: the truth's graph.
        self.observations: list[tuple[str, int, tuple[str, ...]]] = []
        #: Who sent each site event: its key (advertiser:name:event_id) -> user id (None: a
        #: stranger).
        self.senders: dict[str, str | None] = {}

    def _browsers(self, device: _Device) -> list[Browser]:
        found = self.browsers.get(device.device_id)
        if found is None:
            rng, cfg = self.rng, self.cfg
            found = []
            for i in range(2 if not device.mobile and rng.random() < cfg.extra_browser_rate else 1):
                # A second browser on a desktop is another brand: it may not cap cookies.
                itp = _is_itp_ua(device.ua) if i == 0 else False
                if not itp and rng.random() < cfg.strict_cookie_share:
                    itp = True
                jar = CookieJar(ITP_LIFETIME_MS if itp else COOKIE_LIFETIME_MS)
                t = self.cfg.start_ms - 30 * DAY_MS
                end = self.world.end_ms + 8 * DAY_MS
                rate = cfg.cookie_clear_per_day / DAY_MS
                while rate > 0:
                    t += int(rng.expovariate(rate)) + 1
                    if t >= end:
                        break
                    jar.clears.append(t)
                found.append(Browser(device.ua, jar))
            self.browsers[device.device_id] = found
        return found

    def _browser(self, device: _Device) -> Browser:
        browsers = self._browsers(device)
        if len(browsers) > 1 and self.rng.random() < 0.3:
            return browsers[1]
        return browsers[0]

    def _fbp(self, browser: Browser, adv: int, ts: int) -> str:
        def make(created: int) -> str:
            return f"fb.1.{created}.{self.rng.randrange(10**9, 10**10)}"

        return browser.jar.touch(adv, ts, make)

    def _event_id(self, person: _Person) -> str:
        return f"se-{person.number:x}-{self.rng.getrandbits(48):012x}"

    def _send(
        self,
        name: str,
        touch: Touch,
        ts: int,
        fbp: str,
        fbc: str | None,
        identity: dict[str, str | None] | None = None,
    ) -> None:
        """One site event by pixel, CAPI or both; its nodes go to the observations."""
        cfg, rng, world = self.cfg, self.rng, self.world
        adv = world.advertisers[touch.adv]
        identity = identity or {}
        event_id = self._event_id(touch.person)
        self.senders[f"{adv.advertiser_id}:{name}:{event_id}"] = touch.person.user_id
        both = rng.random() < cfg.site_capi_rate
        capi_only = name == "Login" and rng.random() < 0.5  # logins are often server-side only
        channels = ("capi",) if capi_only else (("pixel", "capi") if both else ("pixel",))
        nodes: set[str] = set()
        for source in channels:
            pixel = source == "pixel"
            forward = pixel or rng.random() < cfg.capi_ip_ua_rate
            em, ph = identity.get("em"), identity.get("ph")
            if not pixel and em and rng.random() < cfg.raw_pii_rate:
                em = touch.person.em_raw
            if not pixel and ph and rng.random() < cfg.raw_pii_rate:
                ph = touch.person.ph_raw
            user_data: dict[str, str | None] = {
                "em": em,
                "ph": ph,
                "external_id": identity.get("external_id") if not pixel else None,
                "click_id": None,
                "client_ip_address": touch.ip if forward else None,
                "client_user_agent": touch.ua if forward else None,
                "device_id": None,
                "fbp": fbp if pixel or rng.random() < cfg.capi_fbp_rate else None,
                "fbc": fbc,
            }
            if pixel:
                delay = rng.randrange(200, 5 * SECOND_MS + 1)
            else:
                delay = capi_delay_ms(rng, cfg.capi_delay_min_s, cfg.capi_delay_max_s)
            event = conversion_event(event_id, name, source, ts, adv.advertiser_id, user_data)
            world._emit("conversions", ts + delay, event)
            nodes |= set(event_nodes(user_data, touch.person))
        self.observations.append((adv.advertiser_id, ts, tuple(sorted(nodes))))

    def _identity(self, touch: Touch) -> dict[str, str | None]:
        """What a login sends: the shop email, the phone sometimes, the customer id if kept."""
        p, adv = touch.person, self.world.advertisers[touch.adv]
        out: dict[str, str | None] = {"em": p.em_hash}
        if p.ph_hash and self.rng.random() < 0.3:
            out["ph"] = p.ph_hash
        if adv.sends_external_id:
            # A customer who never converted here gets an id of their own: numbering them in
            # the order the site saw them would tie one person's id to everyone else's clicks.
            known = adv.customers.get(p.number)
            out["external_id"] = known or customer_hash(adv.advertiser_id, f"p{p.number}")
        return out

    def _session(self, touch: Touch, browser: Browser, landing: bool) -> None:
        """A page view (with the click id on a landing), product views, maybe a login."""
        cfg, rng = self.cfg, self.rng
        ts = touch.ts
        fbp = self._fbp(browser, touch.adv, ts)
        fbc = None
        if touch.click_id is not None:
            fbc = f"fb.1.{ts}.{touch.click_id}"
        self._send("PageView", touch, ts, fbp, fbc)
        if rng.random() < cfg.view_content_rate:
            for _ in range(1 + min(4, int(rng.expovariate(1.0)))):
                ts += rng.randrange(10 * SECOND_MS, 4 * MINUTE_MS)
                self._send("ViewContent", touch, ts, self._fbp(browser, touch.adv, ts), fbc)
        if not landing and rng.random() < cfg.site_login_rate:
            ts += rng.randrange(5 * SECOND_MS, 2 * MINUTE_MS)
            fbp = self._fbp(browser, touch.adv, ts)
            self._send("Login", touch, ts, fbp, fbc, self._identity(touch))

    def _conversion(self, touch: Touch, browser: Browser) -> None:
        """The browser's fbp on a conversion's copies: the pixel always sends it."""
        fbp = self._fbp(browser, touch.adv, touch.ts)
        for event in touch.copies:
            if event["source"] == "pixel" or self.rng.random() < self.cfg.capi_fbp_rate:
                event["user_data"]["fbp"] = fbp

    def _browsing(self, p: _Person) -> list[Touch]:
        """Site visits that convert nothing: people browse the advertisers they care about."""
        from convstream.synth.generate import _poisson

        world, rng, cfg = self.world, self.rng, self.cfg
        touches = []
        for _ in range(_poisson(rng, cfg.days / 7 * cfg.browse_sessions_per_week)):
            day = rng.randrange(cfg.days)
            ts = cfg.start_ms + day * DAY_MS + rng.randrange(7 * 3_600_000, DAY_MS)
            device = rng.choice(p.devices)
            adv = rng.choice(p.interests)
            ip = world._ip_at(p, device, ts, rng)
            ua = world._ua(device, ts, rng)
            touches.append(Touch("visit", ts, p, device, adv, ip, ua))
        return touches

    def run(self, touches: list[Touch]) -> None:
        """Each person's touches and browsing, in event-time order (cookies live forward in
        time), from the person's own stream."""
        cfg = self.cfg
        mine: dict[int, list[Touch]] = {}
        for touch in touches:
            mine.setdefault(touch.person.number, []).append(touch)
        for p in self.world.people:
            rng = self.rng = random.Random(f"{cfg.seed}:site:{p.number}")
            todo = mine.get(p.number, []) + self._browsing(p)
            todo.sort(key=lambda t: (t.ts, t.kind, t.adv))
            for touch in todo:
                if touch.ts >= self.world.end_ms:
                    continue
                browser = self._browser(touch.device)
                if touch.kind == "conversion":
                    self._conversion(touch, browser)
                elif touch.kind == "landing":
                    if rng.random() < cfg.landing_page_view_rate:
                        self._session(touch, browser, landing=True)
                else:
                    self._session(touch, browser, landing=False)


def event_nodes(user_data: dict[str, Any], person: _Person) -> list[str]:
    """The truth graph's node keys of one event: every identifier but the address.

    Raw emails and phones (CAPI sends a few unhashed) are the person's hashes.

    >>> class P: em_hash, ph_hash = "e1", "p1"
    >>> event_nodes({"em": "A@B.CO", "fbp": "fb.1.5.7", "fbc": "fb.1.5.k1", "ph": None}, P)
    ['em:e1', 'click:k1', 'fbp:fb.1.5.7']
    """
    nodes = []
    if user_data.get("click_id"):
        nodes.append(f"click:{user_data['click_id']}")
    if user_data.get("em"):
        nodes.append(f"em:{person.em_hash}")
    if user_data.get("ph"):
        nodes.append(f"ph:{person.ph_hash}")
    if user_data.get("device_id"):
        nodes.append(f"dev:{user_data['device_id']}")
    if user_data.get("external_id"):
        nodes.append(f"ext:{user_data['external_id']}")
    fbc = user_data.get("fbc")
    if fbc and not user_data.get("click_id"):
        nodes.append(f"click:{fbc.split('.', 3)[3]}")
    if user_data.get("fbp"):
        nodes.append(f"fbp:{user_data['fbp']}")
    return nodes


def customer_hash(advertiser_id: str, n: int | str) -> str:
    """The advertiser's ``n``-th customer id, hashed as CAPI sends it."""
    return hashlib.sha256(f"{advertiser_id}:customer:{n}".encode()).hexdigest()


def capi_delay_ms(rng: random.Random, lo_s: float, hi_s: float) -> int:
    """Log-uniform between the bounds (seconds): CAPI batches arrive hours later."""
    delay_s = math.exp(rng.uniform(math.log(lo_s), math.log(hi_s)))
    return min(int(hi_s * SECOND_MS), max(math.ceil(lo_s * SECOND_MS), int(delay_s * SECOND_MS)))


def conversion_event(
    event_id: str,
    name: str,
    source: str,
    ts: int,
    advertiser_id: str,
    user_data: dict[str, str | None],
    *,
    value: float | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """One copy on the conversions topic, a site event's (no value) or a conversion's; its field
    order is the replay's bytes (pinned by the generator's digests).

    >>> list(conversion_event("e", "Login", "capi", 0, "adv-0", {}))
    ['event_id', 'event_name', 'source', 'ts', 'advertiser_id', 'value', 'currency', 'user_data']
    """
    return {
        "event_id": event_id,
        "event_name": name,
        "source": source,
        "ts": ts,
        "advertiser_id": advertiser_id,
        "value": value,
        "currency": currency,
        "user_data": user_data,
    }
