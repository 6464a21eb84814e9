"""docker-compose.yml, Dockerfile and .dockerignore agree with each other and with the CLI."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from convstream.stream.cli import build_parser
from convstream.stream.settings import INPUT_TOPICS, INTERNAL_TOPICS, OUTPUT_TOPICS, Settings
from tests.deploy.promql import PROMETHEUS_CONFIG, REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

SUBCOMMANDS = {"worker", "broker", "generate", "replay", "labels", "evaluate", "demo", "quality"}
# Every field of convstream.stream.settings.Settings is read from CONVSTREAM_<FIELD>.
SETTINGS = {f"CONVSTREAM_{f.name.upper()}" for f in dataclasses.fields(Settings)}
TOPICS = {*INPUT_TOPICS, *INTERNAL_TOPICS, *OUTPUT_TOPICS}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def dockerfile_entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    assert match, "Dockerfile has no exec-form ENTRYPOINT"
    return yaml.safe_load(match[1])


def convstream_services(services) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services.items()
        if "build" in service or str(service.get("image", "")).startswith("convstream")
    }


def convstream_invocations(service: dict[str, Any]) -> list[list[str]]:
    """The argv of every `convstream ...` the service runs."""
    entrypoint = as_list(service.get("entrypoint")) or dockerfile_entrypoint()
    command = as_list(service.get("command"))
    if Path(entrypoint[0]).name in {Path(s).name for s in SHELLS}:
        script = "\n".join(entrypoint[1:] + command)
        script = script.replace("\\\n", " ")
        return [
            shlex.split(line.strip())
            for line in re.split(r"\n|&&|;", script)
            if line.strip().startswith("convstream")
        ]
    return [entrypoint + command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_expected_services(services):
    assert {"kafka", "topic-init", "worker", "replay", "prometheus", "grafana"} <= set(services)
    assert convstream_services(services).keys() == {"worker", "replay"}


def test_every_convstream_command_is_a_real_subcommand(services):
    for name, service in convstream_services(services).items():
        invocations = convstream_invocations(service)
        assert invocations, f"{name} runs no convstream command"
        for argv in invocations:
            assert argv[0] == "convstream", f"{name}: {argv}"
            assert len(argv) > 1 and argv[1] in SUBCOMMANDS, f"{name}: unknown subcommand {argv}"
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{name}: the convstream CLI rejects {argv}")


def test_replay_job_generates_then_replays(services):
    replay = services["replay"]
    assert replay["profiles"] == ["demo"]
    assert convstream_invocations(replay) == [
        ["convstream", "generate", "-o", "/data/replay.jsonl", "--truth", "/data/truth.jsonl"],
        ["convstream", "replay", "/data/replay.jsonl"],
    ]
    assert any(volume.endswith(":/data") for volume in replay["volumes"])


def test_environment_names_are_settings(services):
    for name, service in convstream_services(services).items():
        unknown = set(environment(service)) - SETTINGS
        assert not unknown, f"{name} sets {unknown}, not convstream settings"
        assert environment(service)["CONVSTREAM_BROKER"] == "kafka://kafka:9092"


def test_worker_is_scalable_and_health_checked(services):
    worker = services["worker"]
    env = environment(worker)
    assert convstream_invocations(worker) == [["convstream", "worker"]]
    assert "container_name" not in worker and "ports" not in worker
    # Bound to every interface, or Prometheus cannot scrape the replicas.
    assert env["CONVSTREAM_METRICS_HOST"] == env["CONVSTREAM_WEB_HOST"] == "0.0.0.0"
    port = env["CONVSTREAM_METRICS_PORT"]
    probe = " ".join(as_list(worker["healthcheck"]["test"]))
    assert "python" in probe and "urllib" in probe
    assert f"http://localhost:{port}/metrics" in probe
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "topic-init": {"condition": "service_completed_successfully"},
    }
    # Prometheus finds the replicas on the same port.
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    dns = [sd for job in scrape for sd in job.get("dns_sd_configs", [])]
    assert dns == [{"names": ["worker"], "type": "A", "port": int(port), "refresh_interval": "15s"}]


def test_kafka_runs_kraft_with_a_health_check(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka-broker-api-versions.sh" in " ".join(as_list(kafka["healthcheck"]["test"]))


def test_topic_init_creates_every_topic(services):
    init = services["topic-init"]
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    env = environment(init)
    assert set(env["TOPICS"].split()) == TOPICS
    assert env["PARTITIONS"] == "${CONVSTREAM_PARTITIONS:-6}"
    assert env["PREFIX"] == "${CONVSTREAM_TOPIC_PREFIX:-}"
    script = " ".join(as_list(init["command"]))
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    for flag in ("--create", "--if-not-exists", '--partitions "$$PARTITIONS"'):
        assert flag in script


def test_monitoring_mounts_exist(services):
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_dir(), f"{name} mounts missing {source}"
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    mounted = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {p["options"]["path"] for p in provider["providers"]} <= mounted


def test_dockerfile_installs_the_project():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    installed = re.search(r'pip install "\.\[([\w,]+)\]"', text)
    assert installed, "the image must install the project with its extras"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    # The image can run CONVSTREAM_STORE=rocksdb://, which compose lets an operator choose.
    assert set(installed.group(1).split(",")) == {"rocksdb"} and "rocksdb" in extras
    assert dockerfile_entrypoint() == ["convstream"]
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git"} <= ignored
    assert not ignored & {"convstream", "pyproject.toml", "README.md"}


@pytest.mark.needs("docker-compose")
def test_docker_compose_config_is_valid():
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
