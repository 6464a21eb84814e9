"""The fetch guard rewinds a partition to its first undelivered record, and never forward."""

from __future__ import annotations

from collections import namedtuple

from aiokafka.errors import IllegalStateError

from stream.fetch_guard import _seek_back, undelivered

Record = namedtuple("Record", "offset")


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
