"""Records Faust takes from aiokafka but does not deliver are read again, not lost.

Faust 0.15.3's ``Consumer.getmany`` asks aiokafka (in the consumer thread) for the records of
its *active* partitions, then drops, without a word, every record whose partition is no longer
active when it gets to it, or all the rest of the batch when a rebalance starts. aiokafka has
already moved its position past them. After a rebalance Faust seeks each partition back to its
committed offset, which reads them again; a partition nobody has committed yet is not seeked
(aiokafka's ``seek_to_committed`` skips it), so its records are gone for good and its commit
stops at the first of them.

It happens: Faust hands the thread its live set of active partitions, and aiokafka reads an
empty set as "every partition". Between the end of table recovery (changelogs paused) and the
resume of the stream partitions the set is empty, and a fetch in flight returns the records of
every partition, which Faust then drops. ``tests/integration/test_recovery.py`` lost up to a
quarter of its conversions after a restart this way (their partitions had no commit yet).

The end of a rebalance has a second hole: Faust resumes the stream partitions, awaits the seek
to their commits (one request per partition), then clears every agent's queue. Records that
reached a queue while the seek was running are cleared after aiokafka moved past them.

Here every record drained but not delivered, and every record cleared from an agent's queue,
sends its partition back to the first such offset (if the partition is still assigned and
aiokafka is past it), so it is fetched again. Records delivered twice are the at-least-once
duplicates the pipeline already absorbs (dedupe, revisioned labels).

The rewind for a cleared queue waits for the fetch loop, and until it is done no record of that
partition at or past the rewind point is delivered. Faust's fetch loop drops every record below
the last offset it delivered (``Consumer._read_offset``, which ``seek`` resets): a rewind that
ran beside the loop, while it went on delivering the rest of a batch fetched before the seek,
pushed that offset back past the rewind point, and the records read again were dropped. The
cleared records were lost and the partition's commit stuck below them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import Consumer
from mode.utils.queues import ThrowableQueue

log = logging.getLogger(__name__)


def undelivered(records: dict[Any, list[Any]], delivered: dict[Any, int]) -> dict[Any, int]:
    """For each partition of a fetched batch, the first offset that was not delivered.

    >>> from collections import namedtuple
    >>> R = namedtuple("R", "offset")
    >>> batch = {"a": [R(5), R(6), R(7)], "b": [R(1)], "c": [R(9)]}
    >>> undelivered(batch, {"a": 6, "c": 9})
    {'a': 7, 'b': 1}
    """
    out = {}
    for tp, batch in records.items():
        last = delivered.get(tp)
        for record in batch:
            if last is None or record.offset > last:
                out[tp] = record.offset
                break
    return out


def install() -> None:
    """Patch Faust's Consumer (idempotent)."""
    if getattr(Consumer, "_convstream_fetch_guard", False):
        return
    original_wait = Consumer._wait_next_records
    original_getmany = Consumer.getmany

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        records, active = await original_wait(self, timeout)
        self._convstream_batch = records
        return records, active

    async def getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        self._convstream_batch = None
        async for tp, message in deliver(self, original_getmany(self, timeout)):
            yield tp, message

    original_clear = ThrowableQueue.clear

    def clear(self: Any) -> None:
        firsts: dict[Any, int] = {}
        consumer = None
        for event in list(self._queue):
            message = getattr(event, "message", None)
            if message is None or not hasattr(event, "app"):
                continue
            consumer = event.app.consumer
            firsts[message.tp] = min(message.offset, firsts.get(message.tp, message.offset))
        original_clear(self)
        if firsts and consumer is not None:
            request_rewind(consumer, firsts)

    Consumer._wait_next_records = _wait_next_records
    Consumer.getmany = getmany
    ThrowableQueue.clear = clear
    Consumer._convstream_fetch_guard = True


def request_rewind(consumer: Any, offsets: dict[Any, int]) -> None:
    """Have the fetch loop rewind each partition to ``offset`` (the lowest one asked wins)."""
    pending = consumer.__dict__.setdefault("_convstream_rewinds", {})
    for tp, offset in offsets.items():
        pending[tp] = min(offset, pending.get(tp, offset))


async def deliver(consumer: Any, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass on a fetched batch, withholding what a rewind will read again, then rewind.

    ``consumer._convstream_batch`` holds the records the batch was made of once ``messages``
    is exhausted (``_wait_next_records`` puts them there).
    """
    pending = consumer.__dict__.setdefault("_convstream_rewinds", {})
    delivered: dict[Any, int] = {}
    async for tp, message in messages:
        target = pending.get(tp)
        if target is not None and message.offset >= target:
            continue
        delivered[tp] = message.offset
        yield tp, message
    records, consumer._convstream_batch = consumer._convstream_batch, None
    missed = undelivered(records, delivered) if records else {}
    consumer._convstream_rewinds = {}
    for tp, offset in pending.items():
        missed[tp] = min(offset, missed.get(tp, offset))
    if missed:
        await _seek_back(consumer, missed)


async def _seek_back(consumer: Any, offsets: dict[Any, int]) -> None:
    """Rewind each still-assigned partition to ``offset``; never move a position forward."""
    assigned = consumer.assignment()
    for tp, offset in offsets.items():
        if tp not in assigned:
            continue
        try:
            position = await consumer.position(tp)
            if position is not None and position <= offset:
                continue
            await consumer.seek(tp, offset)
        except IllegalStateError:  # revoked meanwhile: its next owner reads from the commit
            continue
        except Exception as exc:  # noqa: BLE001 - the consumer is stopping
            log.debug("not re-reading %s: %r", tp, exc)
            continue
        log.warning("re-reading %s from offset %d: fetched but not delivered", tp, offset)
