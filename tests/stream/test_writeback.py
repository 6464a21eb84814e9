"""The write-back cache in front of the worker's tables (convstream/stream/writeback.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from convstream.stream.settings import Settings
from convstream.stream.writeback import FlushOnCommit, WriteBack


class CountingTable(dict):
    """A dict that counts writes and deletes, as a changelog would hold them."""

    name = "counting"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writes: Counter[str] = Counter()

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes[key] += 1
        super().__setitem__(key, value)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.writes[key] += 1
        return super().pop(key, *default)


def test_a_hot_key_is_written_once_per_flush_with_its_last_value():
    table = CountingTable()
    cache = WriteBack(table)
    for batch in range(50):
        entry = cache.get("ip:10.0.0.1") or {"n": 0}
        cache["ip:10.0.0.1"] = {"n": entry["n"] + 1}
        cache[f"user-{batch}"] = {"batch": batch}
    assert table == {}  # nothing written before the commit
    assert cache.flush() == 51
    assert table.writes["ip:10.0.0.1"] == 1
    assert table["ip:10.0.0.1"] == {"n": 50}
    assert cache.flush() == 0  # nothing new: no writes at all


def test_reads_see_writes_and_deletes_before_the_flush():
    table = CountingTable({"a": 1, "b": 2})
    cache = WriteBack(table)
    cache["a"] = 10
    del cache["b"]
    cache["c"] = 3
    assert (cache.get("a"), cache.get("b"), cache.get("b", "gone"), cache["c"]) == (
        10,
        None,
        "gone",
        3,
    )
    assert "b" not in cache and "a" in cache and "c" in cache
    with pytest.raises(KeyError):
        cache["b"]
    with pytest.raises(KeyError):
        del cache["b"]
    assert dict(cache.items()) == {"a": 10, "c": 3}
    assert sorted(cache) == ["a", "c"]
    assert len(cache) == 2
    assert cache.pop("c") == 3 and cache.pop("c", None) is None
    cache.flush()
    assert table == {"a": 10}
    assert table.writes == {"a": 1, "b": 1}  # "c" came and went between commits: never written


def test_deleting_while_iterating_items_is_safe():
    cache = WriteBack(CountingTable({f"k{i}": i for i in range(10)}))
    cache["new"] = 99
    for key, value in cache.items():
        if value % 2:
            del cache[key]
    assert dict(cache) == {f"k{i}": i for i in range(0, 10, 2)}


def test_the_commit_sensor_flushes_every_cache():
    tables = [CountingTable(), CountingTable()]
    caches = [WriteBack(t) for t in tables]
    caches[0]["x"] = 1
    caches[1]["y"] = 2
    FlushOnCommit(caches).on_commit_initiated(consumer=None)
    assert tables == [{"x": 1}, {"y": 2}]
    assert all(c.dirty == 0 for c in caches)


def test_coalescing_is_a_setting_read_from_the_environment():
    assert Settings.from_env({}).coalesce_writes is True
    assert Settings.from_env({"CONVSTREAM_COALESCE_WRITES": "1"}).coalesce_writes is True
    assert Settings.from_env({"CONVSTREAM_COALESCE_WRITES": "0"}).coalesce_writes is False
    assert Settings.from_env({"CONVSTREAM_COALESCE_WRITES": "False"}).coalesce_writes is False
    with pytest.raises(ValueError, match="CONVSTREAM_COALESCE_WRITES"):
        Settings.from_env({"CONVSTREAM_COALESCE_WRITES": "maybe"})


def test_the_worker_caches_every_table(tmp_path):
    from convstream.stream.app import create_app

    _, rt = create_app(Settings.from_env({}, data_dir=str(tmp_path)))
    cached = {name for name, table in rt.tables.items() if isinstance(table, WriteBack)}
    # The conversion state too: the agent flushes a labelled state before its label
    # (test_conversions_agent.py).
    assert cached == {"users", "identifiers", "conversions", "models", "clocks", "parked"}
    _, rt = create_app(
        Settings.from_env({}, coalesce_writes=False, data_dir=str(tmp_path / "through"))
    )
    assert not any(isinstance(table, WriteBack) for table in rt.tables.values())


def test_the_worker_commits_by_count_and_by_time_only_when_told(tmp_path):
    """By count by default (a fixed amount of work per commit, whatever the machine's speed);
    ``commit_every=0`` is by time only, which Faust cannot be told with None: it reads that as
    its default of 10,000 messages, a commit about every 2 s of a backlog."""
    from convstream.stream.app import create_app

    app, _ = create_app(Settings.from_env({}, data_dir=str(tmp_path)))
    assert (app.conf.broker_commit_every, app.conf.broker_commit_interval) == (40_000, 30.0)
    env = {"CONVSTREAM_COMMIT_INTERVAL_S": "10", "CONVSTREAM_COMMIT_EVERY": "0"}
    app, _ = create_app(Settings.from_env(env, data_dir=str(tmp_path / "time")))
    assert app.conf.broker_commit_interval == 10.0
    assert app.conf.broker_commit_every > 10**12
