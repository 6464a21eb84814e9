"""Identifiers agent (key identifier): the identifier index, and lookups gated on watermarks.

A lookup for a conversion at event time T waits until every users partition has reported, on
the lookup's own cs-ident partition, a watermark at or past T (so every sighting up to T is in
the index), or that it is idle (read to its end, nothing new for a while): see
:mod:`convstream.core.lookup_gate`. Then it is answered from the index as of T. Lookups of an
email, phone or external id also wait for the decisions of earlier conversions that carried
it, for the links those make (convstream/stream/agents/conversions.py).

Parked lookups are also kept in the ``parked-lookups`` table, by identifier, until they are
answered: their cs-ident offsets are committed while they wait, and a worker that dies or loses
the partition would otherwise take them along. The partition's next owner (the same worker
restarted, or another) parks them again before it reads its first batch. With coalesced writes
(the default), a lookup answered within a commit interval of its parking costs no write.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from convstream.core import messages
from convstream.core.index import add_sighting, expire, lookup
from convstream.core.lookup_gate import LookupGate
from convstream.core.partitioning import partition_for
from convstream.core.resolve import LINKED_KINDS
from convstream.stream import metrics

log = logging.getLogger(__name__)


def register(rt: Any, channel: Any) -> None:
    s = rt.settings
    index = rt.tables["identifiers"]
    # One actor reads every cs-ident partition this worker owns; watermarks are kept per
    # partition, because only a partition's own messages say which sightings it already holds.
    gate = LookupGate(
        s.partitions,
        idle_valid_s=s.idle_report_valid_s,
        turn_timeout_s=s.key_turn_timeout_s,
        ordered=tuple(f"{kind}:" for kind in LINKED_KINDS),
    )

    parked = rt.tables["parked"]  # identifier key -> [[conversion key, round, ts], ...]
    restored: set[int] = set()  # cs-ident partitions whose parked lookups are in the gate

    def hold(partition: int, request: messages.Lookup, now: float) -> None:
        gate.park(partition, request, now)
        moot = gate.take_moot()  # an earlier round's, or this one: never answered
        for old in moot:
            settle(old)
        if request in moot:
            return
        rows = list(parked.get(request.key) or ())
        row = [request.conversion_key, request.round, request.ts]
        if row not in rows:
            parked[request.key] = [*rows, row]

    def settle(request: messages.Lookup) -> None:
        row = [request.conversion_key, request.round, request.ts]
        rows = [r for r in parked.get(request.key) or () if r != row]
        if rows:
            parked[request.key] = rows
        else:
            parked.pop(request.key, None)

    def restore(now: float) -> None:
        """Park again what the table holds for partitions new here (a start, a rebalance)."""
        active = rt.active_partitions("cs-ident")
        new = active - restored
        if new:
            held = len(gate)
            for key, rows in list(parked.items()):
                partition = partition_for(key, s.partitions)
                if partition in new:
                    for conversion_key, round_, ts in rows:
                        request = messages.Lookup(key, conversion_key, round_, ts)
                        gate.park(partition, request, now)
            for old in gate.take_moot():
                settle(old)
            if len(gate) > held:
                log.warning("partitions taken up: %d parked lookups parked again", len(gate) - held)
        restored.clear()
        restored.update(active)

    @rt.app.on_partitions_revoked.connect
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == s.topic("cs-ident"):
                gate.forget_partition(tp.partition)
                restored.discard(tp.partition)

    async def answer(request: messages.Lookup) -> None:
        settle(request)
        reply = lookup(
            index.get(request.key),
            request.key,
            conversion_ts=request.ts,
            lookback_ms=s.lookback_ms,
            top_k=s.top_k,
        )
        answer = messages.LookupAnswer(request.conversion_key, request.round, reply)
        await rt.send_keyed("cs-answer", request.conversion_key, messages.encode(answer))

    async def release() -> None:
        # Collect before the first await: the timer and the agent both release, and a lookup
        # parked while the other one is sending must not be lost.
        before = gate.turns_expired
        for request in gate.due(time.monotonic()):
            await answer(request)
        metrics.count_turns_expired(gate.turns_expired - before)
        metrics.set_lookups_parked(*gate.waiting())

    # Expiry keeps what any admissible conversion's lookback can still see: one up to
    # max_conversion_age_ms behind the clock is answered as of its own time, and its answer
    # must not depend on how far the clock ran before its lookup was read.
    ttl_ms = max(s.identifier_ttl_ms, s.lookback_ms + s.max_conversion_age_ms)

    def apply_sightings(rows: list[messages.Sighting], clock: int | None) -> None:
        touched: dict[str, Any] = {}
        for row in rows:
            entry = touched[row.key] if row.key in touched else index.get(row.key)
            touched[row.key] = add_sighting(
                entry,
                row.user_id,
                row.last_ts,
                count=row.seen,
                first_ts=row.first_ts,
                max_users=s.max_users_per_identifier,
                families=row.families,
            )
        for key, entry in touched.items():
            if clock is not None:
                entry = expire(entry, clock, ttl_ms)
            if entry is None:
                index.pop(key, None)
            else:
                index[key] = entry

    def forget(user_id: str, keys: list[str]) -> None:
        """Remove a deleted user from the entries of every identifier they were seen on."""
        for key in keys:
            entry = index.get(key)
            if entry is None or user_id not in entry["u"]:
                continue
            users = {u: row for u, row in entry["u"].items() if u != user_id}
            if users:
                index[key] = {"u": users, "d": entry.get("d", 0)}
            else:
                index.pop(key, None)

    @rt.app.agent(channel, name="identifiers")
    async def identifiers_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, s.batch_within_s):
            metrics.observe_batch("identifiers", len(events))
            now = time.monotonic()
            restore(now)
            rows: list[messages.Sighting] = []
            for event in events:
                message = messages.decode(event.message.value)
                if isinstance(message, messages.Sightings):
                    rows.extend(message.rows)
                    gate.observe(event.message.partition, message.marks, now, message.idle)
                elif isinstance(message, messages.Lookup):
                    hold(event.message.partition, message, now)
                elif isinstance(message, messages.Decided):
                    gate.decided(message.key, message.conversion_key)
                    for old in gate.take_moot():
                        settle(old)
                elif isinstance(message, messages.IndexLink):
                    link = messages.Sighting(
                        message.key, message.user_id, message.ts, message.ts, 1
                    )
                    rows.append(link)
                elif isinstance(message, messages.Forget):
                    apply_sightings(rows, clock())
                    rows = []
                    forget(message.user_id, message.keys)
                else:
                    raise TypeError(f"{type(message).__name__} on cs-ident")
            apply_sightings(rows, clock())
            await release()

    def clock() -> int | None:
        """Event-time clock for identifier expiry: the least advanced known watermark."""
        marks = [m for m in map(gate.watermark, range(s.partitions)) if m is not None]
        return min(marks, default=None)

    @rt.app.timer(interval=0.5)
    async def release_expired() -> None:
        if len(gate):
            await release()
