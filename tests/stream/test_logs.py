"""The log thinning that keeps a broker outage from flooding a worker's log."""

from __future__ import annotations

import logging

from convstream.stream.logs import RepeatFilter


def _record(name: str, msg: str, *args, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_storm_of_one_template_passes_once_per_interval_and_counts_the_rest():
    now = [0.0]
    f = RepeatFilter(interval_s=10, clock=lambda: now[0])
    passed = []
    for tick in range(250):  # 25 s of one failure every 100 ms
        now[0] = tick / 10
        r = _record("aiokafka.conn", "Unable connect to node with id %s: %s", 111, "refused")
        if f.filter(r):
            passed.append(r.getMessage())
    assert len(passed) == 3
    assert passed[0] == "Unable connect to node with id 111: refused"
    assert passed[1].endswith("(99 more like this in the last 10 s)")


def test_templates_loggers_and_levels_are_counted_apart():
    f = RepeatFilter(interval_s=10, clock=lambda: 0.0)
    assert f.filter(_record("aiokafka.conn", "a %s", 1))
    assert f.filter(_record("aiokafka.conn", "b %s", 1))
    assert f.filter(_record("aiokafka.client", "a %s", 1))
    assert f.filter(_record("aiokafka.conn", "a %s", 1, level=logging.WARNING))
    assert not f.filter(_record("aiokafka.conn", "a %s", 2))


def test_convstreams_own_records_are_never_thinned():
    f = RepeatFilter(interval_s=10, clock=lambda: 0.0)
    msg = "match model of partition %s starts untrained"
    assert all(f.filter(_record("convstream.stream.agents.conversions", msg, p)) for p in range(4))
