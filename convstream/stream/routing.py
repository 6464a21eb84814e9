"""Records on the partition their producer chose, moved to the project's one for their key.

Every keyed state lives on the partition Kafka's default partitioner (murmur2,
:func:`convstream.core.partitioning.partition_for`) picks for the record's key: user_id for
impressions, clicks, identity and privacy; the conversion key for conversions and feedback.
Producers that partition otherwise (librdkafka's CRC32 default, a round robin, a key of their
own) put records where no state, lookup or probe of theirs will ever be: each such record is
forwarded once, unchanged (value, broker timestamp), to the right partition of its own topic,
and counted in ``convstream_records_rerouted_total{topic}``. A record already on its partition
costs one hash of its key.

A forwarded engagement is read on its partition after records appended there earlier, so the
watermark of its partition cannot vouch for it. The partition it was read from does instead:
its watermark stays below the record's event time until the partition it went to confirms it
(a ``t:"r"`` message on cs-probe, sent once that partition's sightings of it are delivered), or
until ``hold_s`` passes (a worker gone: lookups then wait no longer than their ceiling anyway).
"""

from __future__ import annotations

import time
from typing import Any

from convstream.core.partitioning import partition_for
from convstream.stream import metrics

#: Header of a forwarded record: ``b"<partition read from>:<token>"``, for the confirmation.
HEADER = "cs-rerouted"


def target(event: Any, key: str, partitions: int) -> int | None:
    """The partition ``event`` belongs on for ``key``, when it is not the one it was read from.

    >>> from types import SimpleNamespace as NS
    >>> right = partition_for("user-1", 4)
    >>> target(NS(message=NS(partition=right)), "user-1", 4) is None
    True
    >>> target(NS(message=NS(partition=(right + 1) % 4)), "user-1", 4) == right
    True
    """
    right = partition_for(key, partitions)
    return None if event.message.partition == right else right


async def forward(
    rt: Any, event: Any, topic: str, key: str, partition: int, *, value: bytes | None = None
) -> str:
    """Send ``event``'s record, unchanged (or ``value``: one event of a batch envelope, as its
    own record), to ``partition`` of ``topic`` keyed by ``key``; returns the token its
    confirmation will carry."""
    message = event.message
    token = f"{topic}:{message.partition}:{message.offset}"
    await rt.topics[topic].send(
        key=key,
        value=message.value if value is None else value,
        partition=partition,
        timestamp=message.timestamp or None,
        headers=[(HEADER, f"{message.partition}:{token}".encode())],
    )
    metrics.count_rerouted(topic)
    metrics.count_sent(topic)
    return token


async def reroute(rt: Any, event: Any, topic: str, key: str) -> bool:
    """Forward ``event`` if it is not on the partition of ``key``; True when it was (the caller
    then drops it). The conversions agent's check: its records need no confirmation."""
    right = target(event, key, rt.settings.partitions)
    if right is None:
        return False
    await forward(rt, event, topic, key, right)
    return True


def origin(event: Any) -> tuple[int, str] | None:
    """``(partition read from, token)`` of a record this project forwarded, else None."""
    for name, value in event.message.headers or ():
        if name == HEADER:
            source, _, token = bytes(value).decode("utf-8", "replace").partition(":")
            if source.isdigit() and token:
                return int(source), token
    return None


def broker_ms(event: Any) -> int | None:
    """The record's broker timestamp in epoch milliseconds (Faust gives seconds), if any."""
    stamp = event.message.timestamp
    return int(stamp * 1000) if stamp and stamp > 0 else None


class InFlight:
    """Engagements a partition forwarded and not yet confirmed: how far its watermark may go.

    >>> flight = InFlight(hold_s=10.0)
    >>> flight.add(0, "impressions:0:7", 5_000, now=0.0)
    >>> flight.hold(0, now=1.0), flight.hold(1, now=1.0)
    (5000, None)
    >>> flight.confirm(0, ["impressions:0:7"]); flight.hold(0, now=1.0) is None
    True
    >>> flight.add(0, "clicks:0:9", 6_000, now=0.0); flight.hold(0, now=10.5) is None  # gone
    True
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._pending: dict[int, dict[str, tuple[int, float]]] = {}

    def add(self, partition: int, token: str, ts: int, *, now: float) -> None:
        self._pending.setdefault(partition, {})[token] = (ts, now)

    def confirm(self, partition: int, tokens: list[str]) -> None:
        pending = self._pending.get(partition, {})
        for token in tokens:
            pending.pop(token, None)

    def hold(self, partition: int, *, now: float | None = None) -> int | None:
        """The oldest event time forwarded from ``partition`` and not confirmed (expired ones
        are dropped)."""
        pending = self._pending.get(partition)
        if not pending:
            return None
        now = time.monotonic() if now is None else now
        for token in [t for t, (_, since) in pending.items() if now - since >= self.hold_s]:
            del pending[token]
        return min((ts for ts, _ in pending.values()), default=None)

    def __len__(self) -> int:
        return sum(map(len, self._pending.values()))


def key_on_partition(prefix: str, partition: int, partitions: int) -> str:
    """A table key that Kafka's partitioner sends to ``partition`` (state kept per partition).

    >>> partition_for(key_on_partition("clock:clicks", 3, 8), 8)
    3
    """
    i = 0
    while partition_for(f"{prefix}:{partition}:{i}", partitions) != partition:
        i += 1
    return f"{prefix}:{partition}:{i}"
