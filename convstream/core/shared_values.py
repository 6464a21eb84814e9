"""Personal identifier values seen on implausibly many users: dropped, never matched.

An email, a phone, a device id or an advertiser's customer id belongs to one person, a household
at most. A value the index has seen on more distinct users than the limit, within the lookback
before the conversion, is a fallback that a checkout form or a tag fills in for everyone
(``orders@shop.example``, the store's own phone, a test device) that no placeholder list knows.
The lifecycle drops it from the conversion like the junk of the contract (reason ``shared``):
its answer keeps its degree but loses its users, so it neither picks a user nor backs one, and
no identity link is learned from it. Click ids are left alone: each click has its own.

The degree is the index's: distinct platform users on the value in the lookback, from identity
sightings and from links learned from earlier deterministic matches, so a fallback email that
some converters send beside their click id grows past the limit as those matches teach it.

>>> answer = {"key": "em:e1", "kind": "em", "degree": 9, "users": [["u1", 0, 5, 1]]}
>>> kept = drop_shared(answer, limit=8)
>>> kept["users"], kept["shared"], kept["degree"]
([], True, 9)
>>> note_rejections({}, {kept["key"]: kept})
[Rejection(field='em', reason='shared')]
>>> "shared" in drop_shared({"key": "em:e2", "kind": "em", "degree": 8, "users": []}, limit=8)
False
>>> "shared" in drop_shared({"key": "click:k", "kind": "click", "degree": 20, "users": []}, limit=8)
False
"""

from __future__ import annotations

from typing import Any

from convstream.core.identity import Rejection

#: Distinct users one value may have before it is shared junk: more than a household (four in
#: the generator, a few more in real ones), far fewer than an office or a carrier address.
DEFAULT_LIMIT = 8
#: The kinds the rule applies to, and the field a rejection names (as the contract sends it).
FIELD_OF_KIND: dict[str, str] = {
    "em": "em",
    "ph": "ph",
    "dev": "device_id",
    "ext": "external_id",
}
REASON = "shared"


def drop_shared(answer: dict[str, Any], *, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The answer to keep for a conversion: a shared value's, without its users and flagged
    ``shared``; the flag is all that :func:`note_rejections` needs to name its rejection."""
    if answer.get("kind", "") not in FIELD_OF_KIND or answer.get("degree", 0) <= limit:
        return answer
    return {**answer, "users": [], "shared": True}


def shared_keys(answers: dict[str, dict[str, Any]]) -> set[str]:
    """The keys of a round's answers that :func:`drop_shared` dropped.

    >>> shared_keys({"em:e1": {"shared": True}, "ph:p1": {"users": []}})
    {'em:e1'}
    """
    return {key for key, ans in answers.items() if ans.get("shared")}


def note_rejections(conv: dict[str, Any], answers: dict[str, dict[str, Any]]) -> list[Rejection]:
    """Add the shared values among ``answers`` to ``conv["rejected_identifiers"]``; returns the
    rejections that are new to it (each field and reason is counted once per conversion).

    >>> conv = {"rejected_identifiers": [["ph", "placeholder"]]}
    >>> answers = {"em:e1": {"kind": "em", "shared": True}, "em:e2": {"kind": "em", "shared": True}}
    >>> note_rejections(conv, answers), conv["rejected_identifiers"]
    ([Rejection(field='em', reason='shared')], [['ph', 'placeholder'], ['em', 'shared']])
    >>> note_rejections(conv, answers)
    []
    """
    noted = conv.get("rejected_identifiers") or []
    new: list[Rejection] = []
    for key in sorted(shared_keys(answers)):
        pair = [FIELD_OF_KIND[answers[key]["kind"]], REASON]
        if pair not in noted:
            noted.append(pair)
            new.append(Rejection(pair[0], pair[1]))
    if noted:
        conv["rejected_identifiers"] = noted
    return new
