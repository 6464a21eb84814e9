"""The benchmark harness in smoke mode: every stage completes and reports a positive rate.

No timed assertions: the figures depend on the machine. What must hold anywhere is that the
harness runs end to end on the embedded broker and stops every process it started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.run import run_bench

pytestmark = pytest.mark.integration


def _live_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_smoke_run_reports_positive_rates(tmp_path: Path) -> None:
    before = set(_live_children())
    output = tmp_path / "runs"
    args = ["--smoke", "--workdir", str(tmp_path / "work"), "--output", str(output)]
    # memory:// is the pipeline stages' store already; the growth stage adds RocksDB.
    results = run_bench([*args, "--growth-stores", "rocksdb://"])

    assert results.raw_rate and results.raw_rate > 0
    assert results.faust_rate and results.faust_rate > 0
    assert results.pipeline is not None and results.pipeline.rate > 0
    assert results.pipeline.covered_keys > 0
    assert results.latency is not None and results.latency.summary["n"] > 0
    assert results.pipeline.peak_rss_mib and results.pipeline.peak_rss_mib > 0
    assert results.pipeline.state["users"].entries > 0
    (rocks,) = results.growth
    assert rocks.store == "rocksdb://"
    assert rocks.final[1] == 1_000, "the worker consumed the whole replay"
    assert rocks.final[3] > 0
    assert not output.exists(), "smoke runs never write a run file"
    assert set(_live_children()) <= before, "the bench left a broker or worker running"
