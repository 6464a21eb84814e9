"""Short, human-readable reasons for a match decision (the label's ``match_explanation``).

>>> _age(math.log1p(5400))
'1.5h'
>>> probabilistic_reasons({"ipua": 1.0, "ip": 1.0, "ip_logdeg": 0.0, "ip_age": math.log1p(60),
...                        "adv": 1.0, "adv_click": 1.0, "adv_age": math.log1p(7200)}, 3, 0.42)
... # doctest: +NORMALIZE_WHITESPACE
['same ip+ua (ip degree 1)', 'on ip 1.0m before', 'clicked advertiser 2.0h before',
 '3 candidates, margin 0.42']
>>> probabilistic_reasons({"ip": 1.0, "ipfam": 1.0, "ipfam_inv": 0.25, "ip_logdeg": math.log(40),
...                        "ip_age": LONG_AGO}, 2, 0.1)[0]
'same ip and ua family, other version (ip degree 40, 4 of family)'
"""

from __future__ import annotations

import math

from convstream.core.matching.features import LONG_AGO, Features


def _age(log_seconds: float) -> str:
    s = math.expm1(log_seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def probabilistic_reasons(f: Features, n_candidates: int, margin: float) -> list[str]:
    """What drove a model decision: identifier overlap, degree, recency, ad engagement."""
    degree = round(math.exp(f.get("ip_logdeg", 0.0)))
    out = []
    if f.get("ipua"):
        out.append(f"same ip+ua (ip degree {degree})")
    elif f.get("ip") and f.get("ipfam"):
        family = round(1.0 / f["ipfam_inv"]) if f.get("ipfam_inv") else degree
        out.append(f"same ip and ua family, other version (ip degree {degree}, {family} of family)")
    elif f.get("ip"):
        out.append(f"same ip, other ua (ip degree {degree})")
    if f.get("ip") and f.get("ip_age", LONG_AGO) < LONG_AGO:
        out.append(f"on ip {_age(f['ip_age'])} before")
    if f.get("adv"):
        verb = "clicked" if f.get("adv_click") else "saw"
        out.append(f"{verb} advertiser {_age(f.get('adv_age', LONG_AGO))} before")
    else:
        out.append("no engagement with advertiser")
    out.append(f"{n_candidates} candidates, margin {margin:.2f}")
    return out


def deterministic_reasons(kinds: tuple[str, ...], cell: str, rivals: int) -> list[str]:
    """What backs a deterministic decision.

    >>> deterministic_reasons(("em", "ph"), "em+ph", 0)
    ['em match', 'agrees: ph']
    """
    out = [f"{kinds[0]} match"]
    if len(kinds) > 1:
        out.append("agrees: " + ", ".join(kinds[1:]))
    if rivals:
        out.append(f"{rivals} other user(s) on deterministic ids")
    if cell.endswith(":contested") and not rivals:
        out.append("shared identifier")
    return out
