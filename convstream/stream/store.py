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

Memory is bounded by settings, not by state: Faust opens every database (one per table and
partition) with three 64 MiB memtables and a 2 GiB block cache of its own, so a table smaller
than its memtables never leaves memory. Here each database has ``rocksdb_write_buffer_mb``
memtables (two) and all of a worker's databases share one ``rocksdb_cache_mb`` block cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.stores.rocksdb import RocksDBOptions

from convstream.core.partitioning import partition_for

SCHEME = "rocksdb"
MIB = 1 << 20
_shared_caches: dict[int, Any] = {}


def table_options(write_buffer_mb: int, cache_mb: int) -> dict[str, Any]:
    """``Table(options=...)`` for a RocksDB-backed table: bounded memtables, shared cache."""
    return {
        "write_buffer_size": write_buffer_mb * MIB,
        "max_write_buffer_number": 2,
        "block_cache_size": cache_mb * MIB,
    }


class BoundedOptions(RocksDBOptions):
    """Faust's options, with one block cache of ``block_cache_size`` for every database."""

    def as_options(self) -> Any:
        import rocksdict

        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        cache = _shared_caches.get(self.block_cache_size)
        if cache is None:
            cache = _shared_caches[self.block_cache_size] = rocksdict.Cache(self.block_cache_size)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)  # index and filters count against it too
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store with partitions picked by key (Kafka's default partitioner)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rocksdb_options = BoundedOptions(**self.options, use_rocksdict=True)

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
