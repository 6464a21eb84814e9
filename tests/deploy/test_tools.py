"""A test that needs prometheus, promtool or docker-compose skips when the tool is missing on a
developer's machine, and fails, naming the package to install, under `make test` and CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/deploy/test_rules.py::test_promtool_check_rules"


def run_without_tools(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """pytest on one promtool test, with a PATH on which no tool is found."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "CONVSTREAM_REQUIRE_ALL")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", TEST],
        cwd=REPO, env={**clean, "PATH": str(tmp_path), **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("variable", ["CONVSTREAM_REQUIRE_ALL", "CI"])
def test_a_missing_tool_fails_when_all_tests_are_required(tmp_path: Path, variable: str):
    result = run_without_tools(tmp_path, **{variable: "1"})
    assert result.returncode == 1, result.stdout
    assert "promtool not installed: sudo apt-get install prometheus" in result.stdout
    assert "1 error" in result.stdout  # failed in setup, before promtool runs


def test_a_missing_tool_skips_with_the_install_command_otherwise(tmp_path: Path):
    result = run_without_tools(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "promtool not installed: sudo apt-get install prometheus" in result.stdout
