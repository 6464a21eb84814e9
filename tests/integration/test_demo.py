"""``convstream demo`` end to end, as a new user runs it on a busy machine: it must finish with
full coverage however slow the worker is, and stop with one line soon after progress stops.

Smaller traffic than the demo's default (which takes minutes on 2 cores), same code path.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procfs import busy_loops

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = [sys.executable, "-m", "convstream.stream.cli", "demo", "--users", "600", "--days", "5"]


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two busy-loop processes competing for the (two) cores, stopped at teardown."""
    with busy_loops(2):
        yield


@pytest.mark.alone  # its two busy loops are the load; other tests must not add to it
def test_demo_on_busy_cores_labels_everything_and_exits_0(tmp_path: Path, busy_cores: None):
    result = subprocess.run(
        [*DEMO, "--workdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=1800, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "  coverage 1.000   missing 0" in result.stdout
    assert "what the figures mean" in result.stdout
    report = tmp_path / "out" / "report.html"
    assert f"[demo] report: {report}" in result.stdout and report.stat().st_size > 1000
    assert (tmp_path / "out" / "worker.log").read_text().startswith("convstream worker starting")


def test_demo_with_its_worker_frozen_stops_with_one_line_within_the_stall_timeout(tmp_path: Path):
    stall = 20.0
    demo = subprocess.Popen(
        [*DEMO, "--workdir", str(tmp_path / "out"), "--stall-timeout", str(stall)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        worker = None
        for line in demo.stdout:
            found = re.search(r"worker started \(pid (\d+)", line)
            if found:
                worker = int(found.group(1))
            if line.startswith("[demo] waiting for the worker"):
                break
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)  # alive, but makes no progress: a hung worker
        frozen = time.monotonic()
        out, err = demo.communicate(timeout=stall + 120)
        took = time.monotonic() - frozen
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    assert demo.returncode == 1
    stalled = [line for line in out.splitlines() if "stalled" in line]
    assert len(stalled) == 1 and stalled[0].startswith(
        f"[demo] stalled: no new label and no input consumed by the worker for {stall:.0f} s"
    ), out
    assert "Traceback" not in out + err
    # the stall timeout, a poll or two, and stopping the worker and the broker
    assert took < stall + 60, took
