"""``convstream offline``: a replay's labels without a broker, as ``convstream labels`` writes
them."""

from __future__ import annotations

import subprocess
import sys

import orjson

from convstream.core.engine import run_offline
from convstream.core.matching.model import MatchModel
from convstream.stream.settings import Settings
from convstream.synth.generate import config_from_args, generate


def test_offline_writes_the_engines_labels_with_the_workers_settings(tmp_path):
    lines, _ = generate(config_from_args("default", users=300, days=5, seed=2))
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    out = tmp_path / "labels.jsonl"
    env = {"CONVSTREAM_PARTITIONS": "3", "CONVSTREAM_ALLOWED_LATENESS_MS": "60000", "PATH": ""}
    run = subprocess.run(
        [sys.executable, "-m", "convstream.stream.cli", "offline", str(replay), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    written = [orjson.loads(row) for row in out.read_bytes().splitlines()]
    settings = Settings(partitions=3, allowed_lateness_ms=60_000)
    expected = run_offline(lines, MatchModel, **settings.offline_options())
    assert written == orjson.loads(orjson.dumps(expected)) and len(written) > 50
    assert f"{len(written):,} labels" in run.stderr
    # The settings reached the engine: with the defaults the labels differ.
    assert expected != run_offline(lines, MatchModel)
