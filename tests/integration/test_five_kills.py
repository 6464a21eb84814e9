"""SIGKILL at five random points of a replay (issue 23 item 3): every conversion is labelled
without the redrive, and a label delivered twice is the same label.

The worker is killed five times while the replay is produced and read, each time at a random
moment of its work (after its match-model replicas started), and a new one starts at once.
What it must come back with, from its tables alone:

- each match-model replica as of its last commit (model, learning queue and clock are one
  checkpoint, written at every commit: ``Lifecycle.checkpoint``);
- the lookups parked in the identifiers agent (the ``parked-lookups`` table), whose cs-ident
  offsets were committed while they waited;
- what the dead worker had decided or sent but may not have delivered: labels decided after
  its last checkpoint go out again (the same labels), and rounds in flight start again
  (``Lifecycle.resume``).

The redrive (rounds started again ``redrive_after_s`` after a restart) is set past the end of
the test, so a lookup lost with a worker would leave its conversion unlabelled.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest

from convstream.stream.kafka import produce
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration

KILLS = 5
#: Seconds a worker works (from its first match-model replica) before it is killed: drawn from
#: this range.
WORKING_S = (0.5, 6.0)
#: Each sixth of the replay is produced over about this many seconds.
SLICE_S = 6.0


def _working(log: Path, timeout: float = 90.0) -> None:
    """Wait until the worker writing ``log`` handles conversions: its replicas have started."""
    deadline = time.monotonic() + timeout
    while "match model of partition" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{log.name}: no replica started in {timeout} s"
        time.sleep(0.2)


def _why(missing: set[str], expected: int, logs: dict[int, str]) -> str:
    """What a failure needs to be understood later: the keys, and what each worker warned."""
    lines = [f"{len(missing)} of {expected} keys unlabelled: {sorted(missing)}"]
    for i, text in logs.items():
        noted = [
            line
            for line in text.splitlines()
            if ("WARNING" in line or "ERROR" in line) and "producer buffer full" not in line
        ]
        lines += [f"--- run-{i}: the last 15 warnings and errors of {len(noted)}:", *noted[-15:]]
    return "\n".join(lines)


def _content(label: dict) -> str:
    """Every field of a label but the wall-clock moment it was sent."""
    return repr(sorted((k, v) for k, v in label.items() if k != "emitted_at"))


def test_five_kills_lose_no_conversion_and_change_no_label(settings, start_worker, tmp_path):
    # Faust's own commit cadence, not the worker's default (40,000 messages or 30 s): a worker
    # works 0.5-6 s before its kill, and must commit in that time for kills to land between
    # commits.
    settings = settings.replace(redrive_after_s=3600.0, commit_interval_s=2.8, commit_every=10_000)
    # The heavy-sharing profile: the most lookups per conversion, so the most parked at a kill.
    # Without site events: every conversions-topic line is then a conversion to wait for.
    lines, truth = generate(
        config_from_args("heavy-sharing", seed=47, users=1500, days=5, site_events=False)
    )
    expected = {row["conversion_key"] for row in truth}
    rng = random.Random(2312)
    size = -(-len(lines) // (KILLS + 1))
    # Conversions a sixth of the replay ahead of the engagements: their lookups wait for the
    # engagement watermark across commits, so kills find lookups parked with their offsets
    # committed (which only the parked-lookups table brings back).
    ahead = {"conversions", "feedback"}
    lines = [
        line
        for _, _, line in sorted(
            (i - size * (line["topic"] in ahead), i, line) for i, line in enumerate(lines)
        )
    ]
    slices = [lines[i : i + size] for i in range(0, len(lines), size)]
    worked = []

    worker = start_worker(settings, "run-0")
    for i, part in enumerate(slices):
        paced = produce(settings, part, rate=len(part) / SLICE_S)
        producing = threading.Thread(target=asyncio.run, args=(paced,))
        producing.start()
        if i < KILLS:
            # Killed at a random moment of its work: mid-slice, with lookups parked, rounds in
            # flight and examples waiting in the replicas' queues.
            _working(tmp_path / f"run-{i}.log")
            worked.append(rng.uniform(*WORKING_S))
            time.sleep(worked[-1])
            worker.kill()
            worker = start_worker(settings, f"run-{i + 1}")
        producing.join(timeout=120)
        assert not producing.is_alive()

    labels = wait_for_labels(settings, expected, timeout=300, settle=10)
    assert worker.alive()
    logs = {i: (tmp_path / f"run-{i}.log").read_text(errors="replace") for i in range(KILLS + 1)}
    missing = expected - {lab["conversion_key"] for lab in labels}
    assert not missing, _why(missing, len(expected), logs)

    # At-least-once: a label may come twice after a kill, but one revision has one content.
    contents: dict[tuple[str, int], set[str]] = {}
    for lab in labels:
        contents.setdefault((lab["conversion_key"], lab["revision"]), set()).add(_content(lab))
    changed = {key: v for key, v in contents.items() if len(v) > 1}
    assert not changed, f"{len(changed)} revisions delivered with two contents: {changed}"

    # Nothing needed the redrive, and the replicas came back from their checkpoints.
    for i, text in logs.items():
        assert "cut by a rebalance: started again" not in text, f"run-{i} redrove a round"
    assert any("resumed from its checkpoint" in text for text in logs.values())
    taken_up = [line for text in logs.values() for line in text.splitlines() if "taken up" in line]
    print(*taken_up, sep="\n")
    print(
        f"{len(labels)} labels for {len(expected)} keys; killed after working "
        f"{[round(t, 1) for t in worked]} s"
    )
