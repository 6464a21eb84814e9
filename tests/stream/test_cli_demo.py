"""The demo's pieces that need no broker: a fresh work directory per run, the progress line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from convstream.stream.demo import OUTPUTS, fresh_workdir
from convstream.stream.errors import UserError
from convstream.stream.runner import ProgressLine, WaitStatus


def test_a_new_run_removes_the_last_runs_files_and_only_those(tmp_path: Path):
    workdir = tmp_path / "demo-out"
    (workdir / "state" / "tables").mkdir(parents=True)
    for name in OUTPUTS:
        (workdir / name).write_text("last run\n")
    (workdir / "notes.txt").write_text("mine\n")
    fresh_workdir(workdir)
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]


def test_a_workdir_that_is_a_file_is_a_user_error(tmp_path: Path):
    (tmp_path / "demo-out").write_text("")
    with pytest.raises(UserError, match="exists and is not a directory"):
        fresh_workdir(tmp_path / "demo-out")


def test_progress_in_a_log_is_a_line_every_interval_not_a_redraw():
    out = io.StringIO()
    line = ProgressLine("[demo] worker", stream=out, every_s=3600)
    line(WaitStatus(labelled=10, expected=40, lag=1200, rate=350.0, elapsed=5))
    line(WaitStatus(labelled=20, expected=40, lag=600, rate=350.0, elapsed=6))
    line.done()
    assert out.getvalue() == (
        "[demo] worker [######------------------] labelled 10/40 conversions, "
        "worker lag 1,200 records, 350 records/s, 5 s\n"
    )
