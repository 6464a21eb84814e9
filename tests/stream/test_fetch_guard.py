"""The fetch guard rewinds a partition to its first undelivered record, and never forward."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

from aiokafka.errors import IllegalStateError
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from convstream.stream import fetch_guard
from convstream.stream.fetch_guard import _seek_back, deliver, request_rewind, undelivered

Record = namedtuple("Record", "offset")
Message = namedtuple("Message", "tp offset")


class Positions:
    """The three calls ``_seek_back`` makes on Faust's consumer, over a dict of positions."""

    def __init__(self, positions: dict[str, int], *, revoked: str | None = None) -> None:
        self.positions = dict(positions)
        self.revoked = revoked

    def assignment(self) -> set[str]:
        return set(self.positions)

    async def position(self, tp: str) -> int:
        if tp == self.revoked:
            raise IllegalStateError(f"{tp} is not assigned")
        return self.positions[tp]

    async def seek(self, tp: str, offset: int) -> None:
        self.positions[tp] = offset


def test_undelivered_tail_of_a_batch_is_found_per_partition():
    batch = {"p0": [Record(150), Record(151), Record(152)], "p1": [Record(7)]}
    assert undelivered(batch, {"p0": 150}) == {"p0": 151, "p1": 7}
    assert undelivered(batch, {"p0": 152, "p1": 7}) == {}


async def test_seek_back_rewinds_only_partitions_that_moved_past_the_records():
    consumer = Positions({"p0": 203, "p1": 151, "p2": 90})
    # p0 was drained to 203 but 151 onwards never delivered: rewind. p1 is already at 151.
    # p2 was seeked back to its commit (90) after the batch: moving it to 151 would skip 90-150.
    await _seek_back(consumer, {"p0": 151, "p1": 151, "p2": 151, "gone": 5})
    assert consumer.positions == {"p0": 151, "p1": 151, "p2": 90}


async def test_seek_back_skips_a_partition_revoked_while_it_runs():
    consumer = Positions({"p0": 203, "p1": 40}, revoked="p0")
    await _seek_back(consumer, {"p0": 151, "p1": 12})
    assert consumer.positions == {"p0": 203, "p1": 12}


async def test_a_rewind_asked_mid_batch_withholds_the_rest_of_that_partition():
    """Faust drops records below the last offset it delivered: delivering p0's 100-104 after
    the rewind to 98 was asked would have made it drop 98-99 when they were read again."""
    batch = {"p0": [Record(o) for o in range(95, 105)], "p1": [Record(7), Record(8)]}
    consumer = Positions({"p0": 105, "p1": 9})
    consumer._convstream_batch = batch

    async def fetched():
        for tp in ("p0", "p1"):
            for record in batch[tp]:
                if (tp, record.offset) == ("p0", 100):
                    request_rewind(consumer, {"p0": 98})  # a queue holding 98-99 was cleared
                yield tp, Message(tp, record.offset)

    got = [(tp, m.offset) for tp, m in [pair async for pair in deliver(consumer, fetched())]]
    assert got == [("p0", o) for o in range(95, 100)] + [("p1", 7), ("p1", 8)]
    assert consumer.positions == {"p0": 98, "p1": 9}
    assert consumer._convstream_rewinds == {}


async def test_a_pending_rewind_keeps_the_records_below_it():
    # After a rebalance seeked p0 back to its commit (90), a rewind to 93 asked before it
    # still lets 90-92 through; the position (96) is past 93, so p0 is read again from 93.
    consumer = Positions({"p0": 96})
    consumer._convstream_batch = {"p0": [Record(o) for o in range(90, 96)]}
    request_rewind(consumer, {"p0": 95})
    request_rewind(consumer, {"p0": 93})

    async def fetched():
        for record in consumer._convstream_batch["p0"]:
            yield "p0", Message("p0", record.offset)

    got = [m.offset async for _, m in deliver(consumer, fetched())]
    assert got == [90, 91, 92]
    assert consumer.positions == {"p0": 93}


def test_clearing_an_agent_queue_asks_its_consumer_to_rewind():
    fetch_guard.install()
    consumer = SimpleNamespace()
    app = SimpleNamespace(consumer=consumer)
    queue = ThrowableQueue(flow_control=FlowControlEvent())
    for tp, offset in [("p0", 41), ("p0", 40), ("p1", 3)]:
        queue.put_nowait(SimpleNamespace(app=app, message=Message(tp, offset)))
    queue.clear()
    assert queue.empty()
    assert consumer._convstream_rewinds == {"p0": 40, "p1": 3}
