"""Every message on the internal topics, as one declared type shared by producer and consumer.

The three agents talk through four repartition topics: ``cs-ident`` (keyed by identifier: the
index), ``cs-probe`` (keyed by user: engagements), ``cs-answer`` (keyed by conversion: the
lifecycle) and ``cs-learn`` (every partition: learning examples). A message is encoded once
(:func:`encode`) and decoded once (:func:`decode`) into its type; the agents and the offline
engine dispatch on the type and read fields by name.

The wire form is a compact JSON object whose ``t`` names the type (the field names are short
because each is written once per message, millions of times an hour):

>>> raw = encode(Lookup(key="em:ab", conversion_key="a:Purchase:1", round=0, ts=5))
>>> raw
b'{"t":"l","k":"em:ab","ck":"a:Purchase:1","r":0,"ts":5}'
>>> decode(raw)
Lookup(key='em:ab', conversion_key='a:Purchase:1', round=0, ts=5)
>>> decode(encode(Probe("u1", "a:Purchase:1", 2, "a", 5))).user_id
'u1'
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import orjson

ConversionKey = str  # advertiser_id:event_name:event_id
IdentifierKey = str  # kind:value, e.g. "em:<sha256>", "ip:10.0.0.1"
UserId = str
#: A lookup answer (:func:`convstream.core.index.lookup`) and a probe answer
#: (:func:`convstream.core.engagements.probe`): read by the match model's feature code.
IndexAnswer = dict[str, Any]
UserAnswer = dict[str, Any]


class Sighting(NamedTuple):
    """Sightings of one user on one identifier in a users batch, for the identifier index.

    ``families`` (ip keys only) maps user agent families seen to their first time.
    """

    key: IdentifierKey
    user_id: UserId
    first_ts: int
    last_ts: int
    seen: int  # how many sightings
    families: dict[str, int] | None = None

    def to_wire(self) -> list[Any]:
        row = [self.key, self.user_id, self.first_ts, self.last_ts, self.seen]
        return row if self.families is None else [*row, self.families]

    @classmethod
    def from_wire(cls, row: list[Any]) -> Sighting:
        """A row as :meth:`to_wire` wrote it.

        >>> Sighting.from_wire(["ip:1", "u1", 1, 2, 3, {"safari/ios": 1}]).families
        {'safari/ios': 1}
        """
        return cls(row[0], row[1], row[2], row[3], row[4], row[5] if len(row) > 5 else None)


class _Message:
    """Wire codec of a dataclass message: ``WIRE`` maps each field to its short name."""

    TAG: ClassVar[str | None]
    WIRE: ClassVar[dict[str, str]]
    #: The field whose value is the message's Kafka key (its partition); none: sent to one.
    ROUTE: ClassVar[str | None] = None

    @property
    def route(self) -> str:
        assert self.ROUTE is not None, type(self).__name__
        return getattr(self, self.ROUTE)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.TAG is None else {"t": self.TAG}
        for name, short in self.WIRE.items():
            out[short] = getattr(self, name)
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Any:
        return cls(**{name: obj[short] for name, short in cls.WIRE.items()})


def _wire(cls: Any) -> Any:
    """Check that every field of the message has a wire name (a forgotten one would vanish)."""
    names = [f.name for f in fields(cls)]
    assert names == list(cls.WIRE), (cls.__name__, names)
    return cls


# --- cs-ident: keyed by identifier ------------------------------------------------------------


@_wire
@dataclass(frozen=True, slots=True)
class Lookup(_Message):
    """A conversion asks which users were seen on ``key`` as of ``ts`` (answered by
    :class:`LookupAnswer` once the watermark allows, :mod:`convstream.core.lookup_gate`)."""

    TAG: ClassVar[str] = "l"
    WIRE: ClassVar[dict[str, str]] = {
        "key": "k",
        "conversion_key": "ck",
        "round": "r",
        "ts": "ts",
    }
    key: IdentifierKey
    conversion_key: ConversionKey
    round: int
    ts: int

    ROUTE: ClassVar[str] = "key"


@_wire
@dataclass(frozen=True, slots=True)
class Decided(_Message):
    """The conversion that looked ``key`` up has decided (after its links): the key's next
    ordered lookup may go out."""

    TAG: ClassVar[str] = "d"
    WIRE: ClassVar[dict[str, str]] = {"key": "k", "conversion_key": "ck"}
    key: IdentifierKey
    conversion_key: ConversionKey

    ROUTE: ClassVar[str] = "key"


@_wire
@dataclass(frozen=True, slots=True)
class IndexLink(_Message):
    """A deterministic decision ties ``key`` (an email, phone or external id) to ``user_id``."""

    TAG: ClassVar[str] = "x"
    WIRE: ClassVar[dict[str, str]] = {"key": "k", "user_id": "u", "ts": "ts"}
    key: IdentifierKey
    user_id: UserId
    ts: int

    ROUTE: ClassVar[str] = "key"


@_wire
@dataclass(frozen=True, slots=True)
class Forget(_Message):
    """A deleted user leaves the entries of these keys (all on one identifiers partition)."""

    TAG: ClassVar[str] = "f"
    WIRE: ClassVar[dict[str, str]] = {"user_id": "u", "keys": "k"}
    user_id: UserId
    keys: list[IdentifierKey]


@dataclass(frozen=True, slots=True)
class Sightings:
    """One users batch's sightings for one identifiers partition, with the sender's watermarks
    (users partition -> event time) and which of the users partitions it owns are idle (read to
    their end, nothing new for a while: :mod:`convstream.core.lookup_gate`)."""

    TAG: ClassVar[str] = "s"
    rows: list[Sighting] = field(default_factory=list)
    marks: dict[int, int] = field(default_factory=dict)
    idle: dict[int, bool] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": self.TAG,
            "wm": {str(p): m for p, m in self.marks.items()},
            "s": [row.to_wire() for row in self.rows],
            "i": {str(p): flag for p, flag in self.idle.items()},
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Sightings:
        """The message :meth:`to_wire` wrote.

        >>> m = Sightings([Sighting("ip:1", "u1", 1, 2, 1)], {0: 5}, {0: True})
        >>> Sightings.from_wire(orjson.loads(encode(m))) == m
        True
        """
        return cls(
            [Sighting.from_wire(row) for row in obj["s"]],
            {int(p): m for p, m in obj["wm"].items()},
            {int(p): flag for p, flag in obj.get("i", {}).items()},
        )


# --- cs-probe: keyed by user ------------------------------------------------------------------


@_wire
@dataclass(frozen=True, slots=True)
class Probe(_Message):
    """A conversion asks for a candidate's engagements with ``advertiser_id`` as of ``ts``."""

    TAG: ClassVar[str] = "q"
    WIRE: ClassVar[dict[str, str]] = {
        "user_id": "u",
        "conversion_key": "ck",
        "round": "r",
        "advertiser_id": "adv",
        "ts": "ts",
    }
    user_id: UserId
    conversion_key: ConversionKey
    round: int
    advertiser_id: str
    ts: int

    ROUTE: ClassVar[str] = "user_id"


@_wire
@dataclass(frozen=True, slots=True)
class UserLink(_Message):
    """The user's state remembers a linked key, so a deletion reaches its index entry too, and
    a linked email or phone counts as the user's own."""

    TAG: ClassVar[str] = "k"
    WIRE: ClassVar[dict[str, str]] = {"key": "k", "user_id": "u", "ts": "ts"}
    key: IdentifierKey
    user_id: UserId
    ts: int

    ROUTE: ClassVar[str] = "user_id"


@_wire
@dataclass(frozen=True, slots=True)
class Confirmed(_Message):
    """Records this users partition forwarded (:mod:`convstream.stream.routing`) are sighted on
    their own partition: its watermark may pass them (``tokens`` name them)."""

    TAG: ClassVar[str] = "r"
    WIRE: ClassVar[dict[str, str]] = {"tokens": "k"}
    tokens: list[str]


# --- cs-answer: keyed by conversion -----------------------------------------------------------


@_wire
@dataclass(frozen=True, slots=True)
class LookupAnswer(_Message):
    """The index's answer to one :class:`Lookup` (``answer["key"]`` is the identifier)."""

    TAG: ClassVar[str] = "a"
    WIRE: ClassVar[dict[str, str]] = {"conversion_key": "ck", "round": "r", "answer": "a"}
    conversion_key: ConversionKey
    round: int
    answer: IndexAnswer

    ROUTE: ClassVar[str] = "conversion_key"


@_wire
@dataclass(frozen=True, slots=True)
class ProbeAnswer(_Message):
    """A candidate's engagements for one :class:`Probe`."""

    TAG: ClassVar[str] = "p"
    WIRE: ClassVar[dict[str, str]] = {
        "conversion_key": "ck",
        "round": "r",
        "user_id": "u",
        "answer": "a",
    }
    conversion_key: ConversionKey
    round: int
    user_id: UserId
    answer: UserAnswer

    ROUTE: ClassVar[str] = "conversion_key"


# --- cs-learn: to every partition -------------------------------------------------------------


class SharedExample(NamedTuple):
    """A learning example made on one worker, for every match model replica: ``local`` lists
    the partitions of the sending worker that queued it when it was made."""

    ts: int
    conversion_key: ConversionKey
    example: dict[str, Any]
    local: list[int]


@dataclass(frozen=True, slots=True)
class Examples:
    """A chunk of learning examples from worker ``worker`` (its own are queued already)."""

    TAG: ClassVar[str] = "e"
    worker: str
    examples: list[SharedExample]

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TAG, "w": self.worker, "e": [list(x) for x in self.examples]}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Examples:
        return cls(obj["w"], [SharedExample(*row) for row in obj["e"]])


Message = (
    Lookup
    | Decided
    | IndexLink
    | Forget
    | Sightings
    | Probe
    | UserLink
    | Confirmed
    | LookupAnswer
    | ProbeAnswer
    | Examples
)
#: The internal topic each message type travels on.
TOPIC: dict[Any, str] = {
    Lookup: "cs-ident",
    Decided: "cs-ident",
    IndexLink: "cs-ident",
    Forget: "cs-ident",
    Sightings: "cs-ident",
    Probe: "cs-probe",
    UserLink: "cs-probe",
    Confirmed: "cs-probe",
    LookupAnswer: "cs-answer",
    ProbeAnswer: "cs-answer",
    Examples: "cs-learn",
}


#: Each message type by its wire tag.
TYPES: dict[str, Any] = {cls.TAG: cls for cls in TOPIC}


def encode(message: Message) -> bytes:
    return orjson.dumps(message.to_wire())


def decode(raw: bytes | str) -> Message:
    """The typed message of a raw internal record; KeyError/ValueError on a malformed one."""
    obj = orjson.loads(raw)
    return TYPES[obj["t"]].from_wire(obj)
