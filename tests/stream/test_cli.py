"""Every ordinary mistake of a new user, run through the real ``convstream`` command: exit 2,
one line on stderr, no traceback; and the flags a person looks for (--version, help)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from convstream.synth.generate import GeneratorConfig, generate, write_replay, write_truth


def convstream(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convstream.stream.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small replay and its truth, a labels file made from the truth, and broken files."""
    d = tmp_path_factory.mktemp("cli")
    lines, truth = generate(GeneratorConfig(users=400, days=5, seed=3))
    write_replay(d / "replay.jsonl", lines)
    write_truth(d / "truth.jsonl", truth)
    labels = [
        {"conversion_key": row["conversion_key"], "user_id": row["user_id"], "revision": 0,
         "match_confidence": 0.9, "match_method": "click", "credits": []}
        for row in truth
    ]  # fmt: skip
    (d / "labels.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in labels))
    (d / "half-labels.jsonl").write_bytes(
        b"".join(orjson.dumps(x) + b"\n" for x in labels[: len(labels) // 2])
    )
    other = [{**x, "conversion_key": "zz:" + x["conversion_key"]} for x in labels]
    (d / "other-labels.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in other))
    (d / "empty-labels.jsonl").write_bytes(b"")
    good = (d / "replay.jsonl").read_bytes().splitlines()
    (d / "bad-replay.jsonl").write_bytes(b"\n".join([*good[:3], b"", b'{"topic": "cl', *good[3:5]]))
    (d / "odd-topic.jsonl").write_bytes(
        b'{"topic": "clicks", "value": {}}\n{"topic": "x", "value": 1}\n'
    )
    return d


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound without listen, so nobody takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


#: (command line, what its one line of stderr must say)
MISTAKES = {
    "replay: missing file": ("replay nope.jsonl", "nope.jsonl: no such file"),
    "replay: malformed": ("replay bad-replay.jsonl", "bad-replay.jsonl:5: not valid JSON"),
    "replay: a truth file": ("replay truth.jsonl", "truth.jsonl:1: this is a truth file"),
    "replay: unknown topic": ("replay odd-topic.jsonl", "odd-topic.jsonl:2: unknown topic 'x'"),
    "generate: unknown profile": ("generate --profile nope", "invalid choice: 'nope'"),
    "demo: unknown profile": ("demo --profile nope", "invalid choice: 'nope'"),
    "evaluate: missing labels": (
        "evaluate --labels no.jsonl --truth truth.jsonl",
        "no.jsonl: no such file",
    ),
    "evaluate: labels as truth": (
        "evaluate --labels labels.jsonl --truth labels.jsonl",
        "labels.jsonl:1: this is a labels file",
    ),
    "evaluate: replay as labels": (
        "evaluate --labels replay.jsonl --truth truth.jsonl",
        "replay.jsonl:1: this is a replay file",
    ),
    "evaluate: truth as replay": (
        "evaluate --labels labels.jsonl --truth truth.jsonl --replay truth.jsonl",
        "truth.jsonl:1: this is a truth file",
    ),
    "labels: not a broker url": ("labels --broker localhost", "'localhost' is not kafka://"),
    "worker: not a number": ("worker --metrics-port x", "invalid int value: 'x'"),
    "no command": ("", "the following arguments are required: COMMAND"),
    "generate: no such directory": (
        "generate -o no/such/dir/replay.jsonl",
        "no/such/dir/replay.jsonl: No such file or directory",
    ),
    "labels: output is a directory": ("labels -o .", "error: .: Is a directory"),
    "lift: oracle without truth": (
        "lift --replay replay.jsonl --oracle",
        "--oracle takes the converters from the truth: give --truth too",
    ),
    "lift: truth as replay": ("lift --replay truth.jsonl", "truth.jsonl:1: this is a truth file"),
    "lift: no campaign truth": (
        "lift --replay replay.jsonl --truth truth.jsonl",
        "truth.campaigns.jsonl: no such file",
    ),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_an_ordinary_mistake_is_one_line_and_exit_2(files: Path, name: str):
    command, expected = MISTAKES[name]
    result = convstream(*command.split(), cwd=files)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize("command", ["quality", "labels", "replay replay.jsonl", "worker"])
def test_an_unreachable_broker_is_one_line_and_exit_2(files: Path, closed_port: int, command):
    result = convstream(*command.split(), "--broker", f"kafka://127.0.0.1:{closed_port}", cwd=files)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"convstream {command.split()[0]}: error: cannot connect to the Kafka broker at "
        f"127.0.0.1:{closed_port} without authentication: the broker is unreachable, or it "
        "requires SASL (set CONVSTREAM_SASL_USERNAME and CONVSTREAM_SASL_PASSWORD)"
    ]


def test_a_broker_port_in_use_is_one_line(files: Path, busy_port: int):
    result = convstream("broker", "--port", str(busy_port), cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"convstream broker: error: port 127.0.0.1:{busy_port} is in use (Address already in "
        "use): a broker may already run there; pick another --port, or --port 0 for a free one"
    )


def test_a_bad_environment_variable_is_one_line(files: Path):
    result = convstream("labels", cwd=files, env={"CONVSTREAM_PARTITIONS": "four"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "convstream labels: error: CONVSTREAM_PARTITIONS='four' is not a valid int"
    )


def test_debug_shows_the_traceback(files: Path):
    result = convstream("--debug", "replay", "nope.jsonl", cwd=files)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "nope.jsonl: no such file" in result.stderr


def test_evaluate_warns_and_exits_1_on_partial_coverage(files: Path):
    result = convstream(
        "evaluate", "--labels", "half-labels.jsonl", "--truth", "truth.jsonl", cwd=files
    )
    assert result.returncode == 1
    n = len((files / "truth.jsonl").read_bytes().splitlines())
    assert f"coverage {(n // 2) / n:.3f} is under 0.99: {n // 2} of {n}" in result.stderr
    assert "labels vs truth" in result.stdout  # the table is still printed


def test_evaluate_warns_and_exits_1_on_no_labels(files: Path):
    result = convstream(
        "evaluate", "--labels", "empty-labels.jsonl", "--truth", "truth.jsonl", cwd=files
    )
    assert result.returncode == 1
    assert "warning: no labels at all" in result.stderr


def test_evaluate_warns_and_exits_1_on_files_that_do_not_belong_together(files: Path):
    result = convstream(
        "evaluate", "--labels", "other-labels.jsonl", "--truth", "truth.jsonl", cwd=files
    )
    assert result.returncode == 1
    assert "do not belong together" in result.stderr


def test_evaluate_of_matching_files_is_quiet_and_exits_0(files: Path):
    result = convstream("evaluate", "--labels", "labels.jsonl", "--truth", "truth.jsonl", cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_version(files: Path):
    result = convstream("--version", cwd=files)
    assert result.returncode == 0
    assert result.stdout.strip() == "convstream 0.1.0"


def test_help_shows_defaults_and_choices(files: Path):
    demo = convstream("demo", "--help", cwd=files).stdout
    assert "{default,heavy-sharing,strangers,ip-loss,hard,ua-drift,cookie-churn}" in demo
    assert "(default: demo-out)" in " ".join(demo.split())
    assert "(default: 180.0)" in " ".join(demo.split())
    worker = " ".join(convstream("worker", "--help", cwd=files).stdout.split())
    assert "default: kafka://127.0.0.1:9092" in worker and "default: 9400" in worker


def test_every_comparison_row_names_a_figure_of_the_report():
    from dataclasses import fields

    from convstream.core.evaluation import EvalReport
    from convstream.stream.evaluate_cli import COLUMNS

    names = {f.name for f in fields(EvalReport)}
    assert [key for key, _ in COLUMNS if key not in names] == []


def test_evaluate_replay_prints_a_figure_in_every_model_row(files: Path):
    command = "evaluate --labels labels.jsonl --truth truth.jsonl --replay replay.jsonl"
    result = convstream(*command.split(), cwd=files)
    assert result.returncode == 0, result.stderr
    # The side-by-side table; the sections after it (lift, incrementality) have their own tests.
    blocks = [b.splitlines() for b in result.stdout.split("\n\n")]
    table = next(b for b in blocks if b and b[0].split()[:1] == ["worker"])
    assert table[0].split() == ["worker", "model", "offline", "rule", "baseline", "deterministic"]
    assert "incrementality of the offline labels" in result.stdout
    rows = {line[:26].strip(): line[26:].split() for line in table[1:]}
    for title in ("match precision", "match recall", "coverage", "ECE (matched)"):
        assert len(rows[title]) == 4 and "-" not in rows[title], (title, rows[title])


SERVE = """
import sys, urllib.request
from convstream.stream.worker import serve_metrics
port = serve_metrics("127.0.0.1", int(sys.argv[1]), span=int(sys.argv[2]))
with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
    print(port, r.status)
"""


def test_a_busy_metrics_port_moves_the_worker_to_the_next_one(tmp_path: Path, busy_port: int):
    result = subprocess.run(
        [sys.executable, "-c", SERVE, str(busy_port), "10"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    port, status = map(int, result.stdout.split())
    assert busy_port < port < busy_port + 10 and status == 200
    assert f"metrics port 127.0.0.1:{busy_port} is in use" in result.stderr
    assert f"serving metrics on 127.0.0.1:{port} instead" in result.stderr


def test_no_free_metrics_port_says_which_flag_to_use(tmp_path: Path, busy_port: int):
    result = subprocess.run(
        [sys.executable, "-c", SERVE, str(busy_port), "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "are all in use: start this worker with --metrics-port N" in result.stderr


def test_evaluate_warns_when_the_replay_is_not_the_truths(files: Path, tmp_path: Path):
    other, _ = generate(GeneratorConfig(users=400, days=5, seed=99))
    write_replay(tmp_path / "other-replay.jsonl", other)
    command = (
        f"evaluate --labels labels.jsonl --truth truth.jsonl --replay {tmp_path}/other-replay.jsonl"
    )
    result = convstream(*command.split(), cwd=files)
    assert result.returncode == 1
    assert "other-replay.jsonl: the offline labels and the truth do not belong together" in (
        result.stderr
    )


@pytest.fixture(scope="module")
def lift_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``convstream generate`` output (replay, truth, campaign truth) and labels naming the true
    converters, as a perfect worker would."""
    d = tmp_path_factory.mktemp("lift")
    made = convstream(
        *"generate -o r.jsonl --truth t.jsonl --users 500 --days 5 --seed 8".split(), cwd=d
    )
    assert made.returncode == 0, made.stderr
    assert "campaigns' true lift to t.campaigns.jsonl" in made.stdout
    truth = [orjson.loads(x) for x in (d / "t.jsonl").read_bytes().splitlines()]
    labels = [
        {"conversion_key": row["conversion_key"], "advertiser_id": row["advertiser_id"],
         "ts": row["ts"], "user_id": row["user_id"], "revision": 0, "match_confidence": 1.0,
         "match_method": "deterministic:click", "credits": []}
        for row in truth
    ]  # fmt: skip
    (d / "l.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in labels))
    return d


def test_lift_prints_a_row_per_campaign_and_the_truths_summary(lift_files: Path):
    campaigns = [
        orjson.loads(x) for x in (lift_files / "t.campaigns.jsonl").read_bytes().splitlines()
    ]
    result = convstream(*"lift --replay r.jsonl --truth t.jsonl --labels l.jsonl".split(),
                        cwd=lift_files)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "converters from the labels of l.jsonl" in lines[0]
    assert lines[1].split()[:2] == ["campaign", "advertiser"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.startswith("cmp-")}
    seen = {c["campaign_id"]: c for c in campaigns if c["exposed_users"] + c["holdout_users"]}
    assert set(rows) == set(seen)
    for cid, c in seen.items():  # perfect labels: the truth's own counts
        assert rows[cid][2:4] == [str(c["exposed_users"]), str(c["holdout_users"])]
    assert any(line.startswith("lift vs truth:") for line in lines)


def test_lift_json_oracle_equals_perfect_labels(lift_files: Path):
    oracle = convstream(*"lift --replay r.jsonl --truth t.jsonl --oracle --json".split(),
                        cwd=lift_files)  # fmt: skip
    labelled = convstream(*"lift --replay r.jsonl --truth t.jsonl --labels l.jsonl --json".split(),
                          cwd=lift_files)  # fmt: skip
    a, b = orjson.loads(oracle.stdout), orjson.loads(labelled.stdout)
    assert a["converters"] == "truth converters (oracle)"
    assert a["campaigns"] == b["campaigns"] and a["score"] == b["score"]
    assert a["score"]["zero_lift_campaigns"] > 0
    assert 0.0 <= a["score"]["coverage"] <= 1.0


def test_lift_warns_and_exits_1_when_the_truth_is_of_another_replay(lift_files: Path):
    other, _ = generate(GeneratorConfig(users=60, days=2, seed=1, advertisers=2))
    write_replay(lift_files / "other.jsonl", other)
    result = convstream(*"lift --replay other.jsonl --truth t.jsonl --oracle".split(),
                        cwd=lift_files)  # fmt: skip
    assert result.returncode == 1
    assert "campaigns of the truth are not in the replay" in result.stderr


def test_evaluate_with_a_replay_and_campaign_truth_scores_the_lift(lift_files: Path):
    command = "evaluate --labels l.jsonl --truth t.jsonl --replay r.jsonl --json"
    result = convstream(*command.split(), cwd=lift_files)
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    lift = out["lift"]
    assert lift["campaigns"] > 0 and lift["zero_lift_campaigns"] > 0
    # The given labels have no incremental fields: the offline model's are scored instead.
    inc = out["incrementality"]
    assert inc["source"] == "offline labels" and inc["attributed"] > 0
    assert inc["oracle_qini"] is not None and inc["true_incremental"] > 0
    assert {"coverage", "zero_lift_not_significant", "mean_abs_lift_error"} <= set(lift)
    table = convstream(*command.split()[:-1], cwd=lift_files).stdout
    assert "campaign lift from the labels' converters" in table and "lift vs truth:" in table


def test_generate_no_site_events_writes_the_traffic_before_them(tmp_path: Path):
    """The flag gives main's bytes before site events (the digest pinned in
    tests/synth/test_site_events.py); without it the same world gains site events."""
    import hashlib

    from tests.synth.test_site_events import BEFORE_SITE_EVENTS

    common = ("generate", "--users", "300", "--days", "4", "--seed", "7")
    off = convstream(
        *common, "--no-site-events", "-o", "off.jsonl", "--truth", "t.jsonl", cwd=tmp_path
    )
    assert off.returncode == 0, off.stderr
    digest = hashlib.sha256((tmp_path / "off.jsonl").read_bytes()).hexdigest()
    assert digest == BEFORE_SITE_EVENTS["default"]
    on = convstream(*common, "-o", "on.jsonl", "--truth", "t2.jsonl", cwd=tmp_path)
    assert on.returncode == 0, on.stderr
    assert b'"event_name":"PageView"' in (tmp_path / "on.jsonl").read_bytes()


def test_lift_scores_the_offline_labels_incremental_probabilities(lift_files: Path):
    result = convstream(*"lift --replay r.jsonl --truth t.jsonl --json".split(), cwd=lift_files)
    assert result.returncode == 0, result.stderr
    inc = orjson.loads(result.stdout)["incrementality"]
    assert inc["attributed"] == inc["scored"] + inc["unscored"] > 0
    assert inc["label_weight"] > inc["incremental_weight"] >= 0.0
    assert inc["oracle_qini"] is not None
    text = convstream(*"lift --replay r.jsonl --truth t.jsonl".split(), cwd=lift_files).stdout
    assert "incremental_probability:" in text and "Qini q" in text
