"""Suite-wide settings: property tests draw the same examples on every run, so CI is repeatable
(a new failing example is found by running with HYPOTHESIS_PROFILE=explore).

Neither profile times anything: a deadline or the "input generation is slow" health check
measures the machine's load, not the code (a fresh clone on a busy 2-core machine failed the
first draw of ``st.text()``, which builds Hypothesis's character tables, at 2.3 s).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from shutil import which

import pytest
from hypothesis import HealthCheck, settings

UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("repeatable", derandomize=True, print_blob=True, **UNTIMED)
settings.register_profile("explore", derandomize=False, **UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


# --- outside tools ------------------------------------------------------------------------------
#: Tools some tests run, with the Debian package that has each.
TOOLS = {"prometheus": "prometheus", "promtool": "prometheus", "docker-compose": "docker-compose"}


def tools_required(env: Mapping[str, str] = os.environ) -> bool:
    """`make test` and CI set this: a missing tool then fails its tests instead of skipping."""
    return any(env.get(name, "") not in ("", "0") for name in ("CI", "CONVSTREAM_REQUIRE_ALL"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(tool): runs an outside tool (prometheus, promtool, docker-compose); skipped when "
        "it is missing, failed instead when CI or CONVSTREAM_REQUIRE_ALL is set (make test)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    missing = sorted(
        {tool for mark in item.iter_markers("needs") for tool in mark.args if not which(tool)}
    )
    if not missing:
        return
    packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
    message = (
        f"{', '.join(missing)} not installed: sudo apt-get install {packages} "
        "(make test installs it when run as root with apt-get)"
    )
    if tools_required():
        pytest.fail(message + "; CI or CONVSTREAM_REQUIRE_ALL is set, so this fails", False)
    pytest.skip(message)
