"""The identity graph's nodes: an advertiser's identifiers, one key each, from one event.

A node key is ``<advertiser>|<kind>:<value>``: the same email at two advertisers is two nodes,
so no path crosses advertisers. Values are the hashed identifiers of ingestion
(``convstream/core/identity.py``); a browser id (Meta's ``fbp``, ``fb.1.<ms>.<random>``) is
hashed here. Addresses are never nodes: an IP is shared by a household, an office, a relay.

>>> ud = {"em": "e1", "click_id": ["k1", "k2"], "client_ip_address": "10.1.1.1"}
>>> keys = event_nodes("a", ud, fbp="fb.1.1700000000000.123")
>>> keys[:3], [node_kind(k) for k in keys], node_advertiser(keys[3])
(['a|click:k1', 'a|click:k2', 'a|em:e1'], ['click', 'click', 'em', 'browser'], 'a')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from convstream.core.identity import sha256_hex

NodeKey = str  # advertiser|kind:value

#: Node kinds, and the user_data field each is read from (browser: the event's fbp).
KINDS = ("click", "em", "ph", "external_id", "device", "browser")
_FIELDS = (
    ("click", "click_id"),
    ("em", "em"),
    ("ph", "ph"),
    ("external_id", "external_id"),
    ("device", "device_id"),
)
#: Kinds whose links are certain when two of them arrive in one event. A device id is not: a
#: family tablet's advertising id is shared, and users reset it.
DETERMINISTIC_KINDS = frozenset({"click", "em", "ph", "external_id", "browser"})


def node_key(advertiser_id: str, kind: str, value: str) -> NodeKey:
    """``advertiser|kind:value``.

    >>> node_key("adv-1", "em", "ab")
    'adv-1|em:ab'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown node kind {kind!r}")
    return f"{advertiser_id}|{kind}:{value}"


def node_kind(key: NodeKey) -> str:
    return key.split("|", 1)[1].split(":", 1)[0]


def node_advertiser(key: NodeKey) -> str:
    return key.split("|", 1)[0]


def browser_id(fbp: object) -> str | None:
    """The hashed browser id of an ``fbp`` value, None when it is not one.

    >>> browser_id("fb.1.1700000000000.1234567890") == sha256_hex("fb.1.1700000000000.1234567890")
    True
    >>> browser_id("fb.1.x"), browser_id(None), browser_id(7)
    (None, None, None)
    """
    if not isinstance(fbp, str):
        return None
    parts = fbp.strip().split(".")
    if len(parts) != 4 or parts[0] != "fb" or not parts[2].isdigit() or not parts[3]:
        return None
    return sha256_hex(fbp.strip())


def _values(v: Any) -> Iterable[str]:
    if v is None:
        return ()
    return [x for x in v if x] if isinstance(v, list | tuple) else [v] if v else ()


def event_nodes(
    advertiser_id: str, user_data: dict[str, Any], *, fbp: object = None
) -> list[NodeKey]:
    """The node keys of one event (``user_data`` as ingestion hashed it), in a stable order."""
    keys = []
    for kind, field in _FIELDS:
        for value in _values(user_data.get(field)):
            key = node_key(advertiser_id, kind, value)
            if key not in keys:
                keys.append(key)
    bid = browser_id(fbp)
    if bid is not None:
        keys.append(node_key(advertiser_id, "browser", bid))
    return keys


def is_deterministic(a: NodeKey, b: NodeKey) -> bool:
    """Whether a co-occurrence of ``a`` and ``b`` is a certain link (no device id in it).

    >>> is_deterministic("a|em:1", "a|browser:2"), is_deterministic("a|em:1", "a|device:2")
    (True, False)
    """
    return node_kind(a) in DETERMINISTIC_KINDS and node_kind(b) in DETERMINISTIC_KINDS
