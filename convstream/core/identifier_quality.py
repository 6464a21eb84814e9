"""Junk identifiers per advertiser and field, and the advice an advertiser can act on.

Fed with each conversion's rejected values (``Conversion.rejected``) and the values it kept; the
``convstream quality`` command prints :meth:`IdentifierTally.table` and :meth:`advice`.

>>> from convstream.core.identity import normalize_user_data
>>> tally = IdentifierTally()
>>> for ph in ("+44 20 7946 0958", "020 7946 0958", "0", "n/a"):
...     ud, rejected, notes = normalize_user_data({"ph": ph}) + (phone_notes(ph),)
...     tally.observe("adv-1", ud, rejected, notes)
>>> tally.advice()
['adv-1: 50 % of your phones are placeholders (n/a, null, 0...): leave the field out', \
'adv-1: 25 % of your phones have no country code (national format): add it, without leading zeros']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convstream.core.identity import Rejection, is_sha256_hex, values_of

#: How a field as sent is named to an advertiser, and the user_data field its kept values are in.
GROUPS: dict[str, str] = {
    "em": "emails",
    "ph": "phones",
    "external_id": "external ids",
    "device_id": "device ids",
    "madid": "device ids",
    "hashed_maids": "device ids",
    "click_id": "click ids",
    "fbc": "click ids",
    "client_ip_address": "IP addresses",
    "client_user_agent": "user agents",
}
_KEPT_FIELD = {
    "emails": "em",
    "phones": "ph",
    "external ids": "external_id",
    "device ids": "device_id",
    "click ids": "click_id",
    "IP addresses": "client_ip_address",
    "user agents": "client_user_agent",
}
ADVICE: dict[str, str] = {
    "placeholder": "are placeholders (n/a, null, 0...): leave the field out",
    "invalid_email": "are not email addresses",
    "invalid_phone": "are not phone numbers",
    "too_short": "have fewer than 7 digits: send the full number with its country code",
    "too_long": "have more than 15 digits",
    "repeated_digits": "repeat one digit or character (a dummy value)",
    "sequence": "are counting runs like 1234567890 (a dummy value)",
    "all_zero": "are all zeros (ad tracking limited on the device): leave them out",
    "md5": "are MD5 hashes: send SHA-256",
    "invalid_fbc": "are not fb.1.<creation ms>.<click id> values",
    "invalid_ip": "are not IP addresses",
    "not_routable": "are loopback or unspecified addresses (a server's, not the user's)",
    "too_many": "came beyond 10 values in one event",
    "shared": "are shared by more users than one household (a fallback value?): leave them out",
    "no_country_code": "have no country code (national format): add it, without leading zeros",
}
_TRUNK_RE = re.compile(r"\s*(?:\(|0[1-9])")


def phone_notes(raw: object) -> tuple[Rejection, ...]:
    """Notes on phones that are kept but unlikely to match: written in national format (a
    trunk ``0`` or an area code in brackets first), so without the country code both platforms
    ask for.

    >>> phone_notes("020 7946 0958"), phone_notes(["+44 20 7946 0958", "(555) 010-0199"])
    ((Rejection(field='ph', reason='no_country_code'),), \
(Rejection(field='ph', reason='no_country_code'),))
    >>> phone_notes("0044 20 7946 0958"), phone_notes("a" * 64)
    ((), ())
    """
    out = []
    for value in values_of(raw):
        if isinstance(value, str) and not is_sha256_hex(value.strip()) and _TRUNK_RE.match(value):
            out.append(Rejection("ph", "no_country_code"))
    return tuple(out)


@dataclass
class IdentifierTally:
    """Values sent and values rejected (or noted) per advertiser and field group."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    flagged: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def observe(
        self,
        advertiser_id: str,
        user_data: Mapping[str, Any],
        rejected: Iterable[Rejection],
        notes: Iterable[Rejection] = (),
    ) -> None:
        rejected = list(rejected)
        for group, name in _KEPT_FIELD.items():
            self.sent[advertiser_id, group] += len(values_of(user_data.get(name)))
        for r in rejected:
            self.sent[advertiser_id, GROUPS.get(r.field, r.field)] += 1
        for r in [*rejected, *notes]:
            self.flagged[advertiser_id, GROUPS.get(r.field, r.field), r.reason] += 1

    def observe_dropped(self, advertiser_id: str, rejections: Iterable[Rejection]) -> None:
        """Values dropped after ingestion (``shared``), already counted as sent there."""
        for r in rejections:
            self.flagged[advertiser_id, GROUPS.get(r.field, r.field), r.reason] += 1

    def table(self) -> list[tuple[str, str, str, int, float]]:
        """``(advertiser, field group, reason, count, share of the group's values)``, by
        advertiser then largest count."""
        rows = [
            (adv, group, reason, n, n / max(self.sent[adv, group], 1))
            for (adv, group, reason), n in self.flagged.items()
        ]
        return sorted(rows, key=lambda r: (r[0], -r[3], r[1], r[2]))

    def advice(self, min_share: float = 0.01) -> list[str]:
        """One line per problem worth fixing (at least ``min_share`` of a field's values)."""
        return [
            f"{adv}: {share:.0%} of your {group} {ADVICE.get(reason, reason)}".replace("%", " %")
            for adv, group, reason, _, share in self.table()
            if share >= min_share
        ]


def format_rejections(tally: IdentifierTally) -> str:
    """The table as text, for ``convstream quality``."""
    rows = tally.table()
    if not rows:
        return "no identifier was rejected"
    lines = [f"{'advertiser':<16} {'field':<13} {'reason':<16} {'count':>7} {'share':>6}"]
    for adv, group, reason, n, share in rows:
        lines.append(f"{adv[:16]:<16} {group:<13} {reason:<16} {n:>7} {share:>6.1%}")
    return "\n".join(lines)
