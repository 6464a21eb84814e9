"""``CONVSTREAM_STORE=rocksdb://``: Faust's RocksDB store (rocksdict) for tables written by key.

Faust's RocksDB store puts a write in the database of the partition of the event being
processed, and asserts there is one. convstream's tables are ``use_partitioner=True``: an entry
lives on the partition Kafka's partitioner picks for its key (the changelog's partition), and it
is written from batches (``take_events``), timers and rebalance callbacks, where there is no
current event. This store picks the database from the key instead, with the same murmur2 as the
producer, so a key has one home whoever writes it, and reads go straight there instead of
probing every partition's database.

It also counts entries from RocksDB's own estimate: Faust's ``len(table)`` scans every key,
and the worker's health timer asks for it every 5 seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb

from models.partitioning import partition_for

SCHEME = "rocksdb"


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store with partitions picked by key (Kafka's default partitioner)."""

    def _partition(self, key: bytes) -> int:
        return partition_for(key, self.table.partitions)

    def _db_for_key(self, key: bytes) -> Any:
        return self._db_for_partition(self._partition(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_key(key).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        return self._db_for_key(key).get(key)

    def _contains(self, key: bytes) -> bool:
        return self._db_for_key(key).get(key) is not None

    def _dbs_for_key(self, key: bytes) -> Iterable[Any]:
        return [self._db_for_key(key)]

    def _size(self) -> int:
        return sum(
            db.property_int_value("rocksdb.estimate-num-keys") or 0
            for db in self._dbs_for_actives()
        )


def install() -> None:
    """Make ``rocksdb://`` mean :class:`Store` (idempotent)."""
    STORES.aliases[SCHEME] = f"{__name__}:Store"
