"""Online lift per campaign from a randomized holdout: exposed vs ghost-exposed users.

Intent to treat, as in ghost-ad experiments (Johnson, Lewis and Nubbemeyer, "Ghost Ads:
Improving the Economics of Measuring Online Ad Effectiveness", Journal of Marketing Research
2017) and Meta's and Google's Conversion Lift: a user enters a campaign's exposed or holdout arm
at their first impression of it (a ghost impression for the holdout), and their outcome is the
weight of their conversions at the campaign's advertiser from then to the end of the attribution
window (the advertiser's longest window, from :class:`AttributionConfig`). Event time drives
every window. Per campaign the state is three sums per arm; per user, one entry per campaign
entered, dropped by :meth:`LiftTracker.expire` once its window has closed. Events are expected
in event-time order per user (a driver over arrival order holds them for the allowed lateness;
``convstream lift`` sorts a replay).

Estimates (:func:`estimate`), with y a user's conversions, m and v the mean and sample variance
per user of an arm, N its users, z = 1.96:

- the difference d = m_E - m_H with the Wald interval d +- z sqrt(v_E / N_E + v_H / N_H);
  incremental conversions, scaled to the exposed group, N_E d with N_E times that interval;
- ``significant``: the two-sided test at 5 % of d = 0 with the variance pooled under that
  null hypothesis, |d| > z sqrt(v (1 / N_E + 1 / N_H)) with v the variance of all users'
  outcomes (the pooled two-proportion z-test, for counts). Not the Wald interval's own test:
  with a few hundred held-out users an arm often has no conversion at all, its variance
  estimate is 0, and the Wald test then calls almost any difference significant;
- the relative lift m_E / m_H - 1, with the delta-method interval on the log of the ratio,
  exp(log(m_E / m_H) +- z sqrt(v_E / (N_E m_E^2) + v_H / (N_H m_H^2))) - 1 (Katz et al.'s log
  risk-ratio interval, 1978, with per-user variances since a user may convert more than once);
  undefined (None) while either arm has no conversion.

>>> t = LiftTracker()
>>> for i in range(200):
...     t.exposure(f"u{i}", "adv", "c1", 1_000, holdout=i % 4 == 0)
>>> for i in range(200):
...     if i % 3 == 0 or (i % 4 and i % 5 == 0):
...         _ = t.conversion(f"u{i}", "adv", 2_000)
>>> e = t.estimate("c1")
>>> e.exposed_users, e.holdout_users, e.exposed_conversions, e.holdout_conversions
(150, 50, 70.0, 17.0)
>>> round(e.lift, 3), round(e.lift_low, 3), round(e.lift_high, 3), e.significant
(0.373, -0.104, 1.102, False)
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from convstream.core.attribution import AttributionConfig

UserId = str
CampaignId = str
AdvertiserId = str

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


@dataclass(slots=True)
class Arm:
    """Sums over one arm's users: how many, their conversions, their squared conversions."""

    users: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, before: float, weight: float) -> None:
        """A user's outcome goes from ``before`` to ``before + weight``."""
        self.total += weight
        self.squares += (before + weight) ** 2 - before**2

    def mean(self) -> float | None:
        return self.total / self.users if self.users else None

    def variance(self) -> float | None:
        """Sample variance of the users' outcomes (None under two users).

        >>> a = Arm(users=4, total=2.0, squares=2.0)  # outcomes 1, 1, 0, 0
        >>> round(a.variance(), 4)
        0.3333
        """
        if self.users < 2:
            return None
        mean = self.total / self.users
        return max(0.0, (self.squares - self.users * mean * mean) / (self.users - 1))


@dataclass(slots=True)
class CampaignState:
    """A campaign's bounded state: its advertiser and one :class:`Arm` per arm."""

    advertiser_id: AdvertiserId
    exposed: Arm = field(default_factory=Arm)
    holdout: Arm = field(default_factory=Arm)


@dataclass(slots=True)
class _Entry:
    """One user in one campaign: since when, which arm, their outcome so far."""

    campaign_id: CampaignId
    first_ts: int
    holdout: bool
    outcome: float = 0.0


@dataclass(frozen=True, slots=True)
class LiftEstimate:
    """One campaign's lift figures; ratios and intervals are None where undefined."""

    campaign_id: CampaignId
    advertiser_id: AdvertiserId
    exposed_users: int
    holdout_users: int
    exposed_conversions: float
    holdout_conversions: float
    exposed_rate: float | None
    holdout_rate: float | None
    incremental: float | None
    incremental_low: float | None
    incremental_high: float | None
    lift: float | None
    lift_low: float | None
    lift_high: float | None
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(campaign_id: CampaignId, state: CampaignState, *, z: float = Z95) -> LiftEstimate:
    """The figures of one campaign's state (module docstring: the methods).

    >>> s = CampaignState("adv", Arm(100, 20.0, 20.0), Arm(100, 10.0, 10.0))
    >>> e = estimate("c", s)
    >>> e.incremental, round(e.incremental_low, 2), round(e.incremental_high, 2), e.significant
    (10.0, 0.15, 19.85, True)
    >>> round(e.lift, 2), round(e.lift_low, 3), round(e.lift_high, 2)
    (1.0, -0.017, 3.07)

    A holdout without a conversion: the Wald interval (variance 0 in the holdout) excludes 0,
    the pooled test does not call it significant, and the lift is undefined.

    >>> e = estimate("c", CampaignState("adv", Arm(242, 9.0, 9.0), Arm(36, 0.0, 0.0)))
    >>> round(e.incremental_low, 2), e.significant, e.lift
    (3.22, False, None)
    """
    ex, ho = state.exposed, state.holdout
    m_e, m_h = ex.mean(), ho.mean()
    v_e, v_h = ex.variance(), ho.variance()
    incremental = low = high = None
    lift = lift_low = lift_high = None
    significant = False
    if m_e is not None and m_h is not None:
        diff = m_e - m_h
        incremental = ex.users * diff
        if v_e is not None and v_h is not None:
            se = math.sqrt(v_e / ex.users + v_h / ho.users)
            low, high = ex.users * (diff - z * se), ex.users * (diff + z * se)
            pooled = Arm(ex.users + ho.users, ex.total + ho.total, ex.squares + ho.squares)
            v = pooled.variance() or 0.0
            se_null = math.sqrt(v * (1.0 / ex.users + 1.0 / ho.users))
            significant = se_null > 0 and abs(diff) > z * se_null
        if m_e > 0 and m_h > 0:
            lift = m_e / m_h - 1.0
            if v_e is not None and v_h is not None:
                se_log = math.sqrt(v_e / (ex.users * m_e**2) + v_h / (ho.users * m_h**2))
                log_ratio = math.log(m_e / m_h)
                lift_low = math.exp(log_ratio - z * se_log) - 1.0
                lift_high = math.exp(log_ratio + z * se_log) - 1.0
    return LiftEstimate(
        campaign_id=campaign_id,
        advertiser_id=state.advertiser_id,
        exposed_users=ex.users,
        holdout_users=ho.users,
        exposed_conversions=ex.total,
        holdout_conversions=ho.total,
        exposed_rate=m_e,
        holdout_rate=m_h,
        incremental=incremental,
        incremental_low=low,
        incremental_high=high,
        lift=lift,
        lift_low=lift_low,
        lift_high=lift_high,
        significant=significant,
    )


class LiftTracker:
    """Exposures and conversions in, per-campaign lift out; updated one event at a time.

    A user whose entry expired and who sees the campaign again enters again, in the same arm
    (assignment is per user and campaign): a new exposure period, counted as a new user.
    """

    def __init__(self, config: AttributionConfig | None = None, *, z: float = Z95) -> None:
        self.config = config or AttributionConfig()
        self.z = z
        self.campaigns: dict[CampaignId, CampaignState] = {}
        self.entries: dict[UserId, dict[AdvertiserId, list[_Entry]]] = {}
        self._ends: list[tuple[int, UserId, AdvertiserId, CampaignId]] = []
        #: Impressions that contradict the arm a user entered with (kept in their first arm).
        self.conflicts = 0

    def window_ms(self, advertiser_id: AdvertiserId) -> int:
        """How long after entering a user's conversions count: the advertiser's longest window.

        >>> LiftTracker().window_ms("adv") // 86_400_000
        30
        """
        s = self.config.for_advertiser(advertiser_id)
        return max(s.click_window_ms, s.view_window_ms)

    def exposure(
        self,
        user_id: UserId,
        advertiser_id: AdvertiserId,
        campaign_id: CampaignId,
        ts: int,
        *,
        holdout: bool,
    ) -> None:
        """An impression (``holdout=False``) or ghost impression (``holdout=True``)."""
        by_adv = self.entries.setdefault(user_id, {})
        entries = by_adv.setdefault(advertiser_id, [])
        for entry in entries:
            if entry.campaign_id == campaign_id:
                self.conflicts += entry.holdout != holdout
                entry.first_ts = min(entry.first_ts, ts)
                return
        state = self.campaigns.get(campaign_id)
        if state is None:
            state = self.campaigns[campaign_id] = CampaignState(advertiser_id)
        (state.holdout if holdout else state.exposed).users += 1
        entries.append(_Entry(campaign_id, ts, holdout))
        end = ts + self.window_ms(advertiser_id)
        heapq.heappush(self._ends, (end, user_id, advertiser_id, campaign_id))

    def conversion(
        self, user_id: UserId, advertiser_id: AdvertiserId, ts: int, weight: float = 1.0
    ) -> int:
        """A conversion of ``user_id`` at ``advertiser_id``: it counts for every campaign of the
        advertiser the user entered at or before ``ts`` and less than a window before; returns
        how many.

        >>> t = LiftTracker()
        >>> t.exposure("u", "a", "c", 10, holdout=False)
        >>> t.conversion("u", "a", 9), t.conversion("u", "a", 10), t.conversion("u", "b", 11)
        (0, 1, 0)
        """
        counted = 0
        for entry in self.entries.get(user_id, {}).get(advertiser_id, ()):
            if entry.first_ts <= ts <= entry.first_ts + self.window_ms(advertiser_id):
                state = self.campaigns[entry.campaign_id]
                (state.holdout if entry.holdout else state.exposed).add(entry.outcome, weight)
                entry.outcome += weight
                counted += 1
        return counted

    def expire(self, now_ts: int) -> int:
        """Forget the entries whose window closed before ``now_ts`` (their sums stay); returns
        how many. Memory then holds only users inside a window.

        >>> t = LiftTracker()
        >>> t.exposure("u", "a", "c", 0, holdout=True)
        >>> t.expire(31 * 86_400_000), t.entries, t.estimate("c").holdout_users
        (1, {}, 1)
        """
        dropped = 0
        while self._ends and self._ends[0][0] < now_ts:
            _, user_id, advertiser_id, campaign_id = heapq.heappop(self._ends)
            by_adv = self.entries.get(user_id, {})
            kept = [e for e in by_adv.get(advertiser_id, ()) if e.campaign_id != campaign_id]
            dropped += len(by_adv.get(advertiser_id, ())) - len(kept)
            if kept:
                by_adv[advertiser_id] = kept
            else:
                by_adv.pop(advertiser_id, None)
            if not by_adv:
                self.entries.pop(user_id, None)
        return dropped

    def estimate(self, campaign_id: CampaignId) -> LiftEstimate:
        return estimate(campaign_id, self.campaigns[campaign_id], z=self.z)

    def estimates(self) -> list[LiftEstimate]:
        """Every campaign's estimate, by campaign id."""
        return [self.estimate(c) for c in sorted(self.campaigns)]
