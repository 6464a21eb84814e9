"""Coalesced table writes: a Faust table behind a write-back cache flushed at every commit.

Every write to a Faust table is a changelog message. A hot key (a carrier-NAT address seen by
64 users, a busy user, a conversion going through its rounds) used to be rewritten in every
batch: the identifiers table alone took more changelog writes than there were input events.
:class:`WriteBack` keeps the entries written since the last commit in memory and writes each to
the table, once, when Faust commits offsets.

Offsets never run ahead of state: Faust commits an input offset only in
``Consumer.force_commit``, which first calls every sensor's ``on_commit_initiated``. The
:class:`FlushOnCommit` sensor writes the dirty entries there, synchronously, so their changelog
messages are in the producer's buffer before Faust picks the offsets to commit, and Faust
flushes that producer before it commits them; a crash loses only writes whose records are read
again. A rebalance commits (Faust waits for the agents, then commits) before the revoke signal,
where the caches are flushed once more and emptied: an entry whose partition moves away is then
read from the table, which its new owner rebuilds from the changelog.

Every table is behind a cache (``convstream/stream/app.py``), the conversion state too, with
one exception to the flush at a commit: a conversion state that records a label as sent is
written before that label goes out (``ConversionsAdapter.send_labels`` flushes those keys, then
the producer, then sends the labels). Otherwise the record would reach the changelog only at
the next commit, and a kill in between would replay the conversion from older state and could
send the same revision again with other content (seen in ``tests/integration/test_crash.py`` on
``rocksdb://`` when the whole state was cached). The rounds before a decision (lookups, answers,
probes: most of the state's writes) wait for the commit like the other tables: what a kill
loses of them is rebuilt from the records read again, and ``Lifecycle.resume`` starts again the
rounds in flight. ``coalesce_writes`` is on by default since the whole suite, the determinism
test's loaded run among it, passed with it on (2026-12-03); ``CONVSTREAM_COALESCE_WRITES=0``
writes through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import faust

#: A key deleted since the last flush.
_GONE: Any = object()


class WriteBack(MutableMapping[str, Any]):
    """``table`` with its writes held until :meth:`flush`; reads see them at once.

    >>> backing = {"a": 1}
    >>> cache = WriteBack(backing, name="example")
    >>> cache["a"] = 2; cache["b"] = 3; del cache["a"]
    >>> backing, dict(cache), cache.dirty
    ({'a': 1}, {'b': 3}, 2)
    >>> cache.flush(), backing
    (2, {'b': 3})
    """

    def __init__(self, table: MutableMapping[str, Any], name: str | None = None) -> None:
        self.table = table
        self.name = name if name is not None else table.name  # type: ignore[attr-defined]
        self._dirty: dict[str, Any] = {}

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def __getitem__(self, key: str) -> Any:
        if key not in self._dirty:
            return self.table[key]
        value = self._dirty[key]
        if value is _GONE:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._dirty:
            value = self._dirty[key]
            return default if value is _GONE else value
        return self.table.get(key, default)

    def __contains__(self, key: object) -> bool:
        if key in self._dirty:
            return self._dirty[key] is not _GONE  # type: ignore[index]
        return key in self.table

    def __setitem__(self, key: str, value: Any) -> None:
        self._dirty[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._dirty[key] = _GONE

    def pop(self, key: str, default: Any = _GONE) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            if default is _GONE:
                raise KeyError(key)
            return default
        self._dirty[key] = _GONE
        return value

    def __iter__(self) -> Iterator[str]:
        for key, _ in self.items():
            yield key

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Live entries, the table's then the new ones; safe to write to while iterating."""
        for key, value in list(self.table.items()):
            if key not in self._dirty:
                yield key, value
        for key, value in list(self._dirty.items()):
            if value is not _GONE:
                yield key, value

    def __len__(self) -> int:
        """Entries, counted as the table counts them plus what was written since the flush."""
        size = len(self.table)
        for key, value in self._dirty.items():
            stored = key in self.table
            size += (not stored and value is not _GONE) - (stored and value is _GONE)
        return size

    def flush(self, keys: Iterable[str] | None = None) -> int:
        """Write every dirty entry (or those of ``keys``) to the table, a changelog message
        each; returns how many.

        >>> cache = WriteBack({}, name="example")
        >>> cache["a"] = 1; cache["b"] = 2
        >>> cache.flush(["a", "c"]), cache.table, cache.dirty
        (1, {'a': 1}, 1)
        """
        if keys is None:
            dirty, self._dirty = self._dirty, {}
        else:
            dirty = {key: self._dirty.pop(key) for key in keys if key in self._dirty}
        for key, value in dirty.items():
            if value is _GONE:
                self.table.pop(key, None)
            else:
                self.table[key] = value
        return len(dirty)


class FlushOnCommit(faust.Sensor):
    """At every commit, before Faust chooses the offsets: runs ``before`` (writers of state that
    must be as of those offsets, such as the model replicas' checkpoints), then flushes
    ``caches``."""

    def __init__(
        self,
        caches: list[WriteBack] | None = None,
        before: list[Callable[[], Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.caches = caches if caches is not None else []
        self.before = before if before is not None else []

    def flush(self) -> int:
        for write in self.before:
            write()
        return sum(cache.flush() for cache in self.caches)

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.flush()
        return super().on_commit_initiated(consumer)


def commit_hook(app: faust.App) -> FlushOnCommit:
    """The app's one :class:`FlushOnCommit` sensor (made on first use): flushed at every
    commit of ``app`` and at every revoke."""
    for sensor in app.sensors:
        if isinstance(sensor, FlushOnCommit):
            return sensor
    sensor = FlushOnCommit()
    app.sensors.add(sensor)

    @app.on_partitions_revoked.connect
    async def _flush_on_revoke(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Faust committed (and so flushed) before this signal; what timers wrote since then
        # goes out too, and nothing stays cached for a partition another worker now owns.
        sensor.flush()

    return sensor


def on_commit(app: faust.App, write: Callable[[], Any]) -> None:
    """Call ``write`` at every commit of ``app`` (and revoke), before its caches are flushed."""
    commit_hook(app).before.append(write)


def install(app: faust.App, tables: dict[str, Any]) -> dict[str, WriteBack]:
    """Put each of ``tables`` behind a :class:`WriteBack` flushed at every commit of ``app``
    and at every revoke; returns the caches, by the same names."""
    caches = {name: WriteBack(table) for name, table in tables.items()}
    commit_hook(app).caches.extend(caches.values())
    return caches
