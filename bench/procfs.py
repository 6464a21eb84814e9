"""Process and machine facts from ``/proc`` (psutil is not a dependency).

>>> peak_rss_mib(os.getpid()) > 0
True
>>> machine_facts()["cores"] >= 1
True
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a live process, in MiB; None once it is gone."""
    kib = _status_kib(pid, "VmHWM")
    return kib / 1024 if kib is not None else None


def rss_mib(pid: int) -> float | None:
    """Current resident set size (``VmRSS``) in MiB."""
    kib = _status_kib(pid, "VmRSS")
    return kib / 1024 if kib is not None else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (``/proc/<pid>/stat`` fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return platform.processor() or "unknown"


def tansu_version() -> str:
    from convstream.stream.broker import tansu_binary

    try:
        out = subprocess.run(
            [str(tansu_binary()), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or out.stderr.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_facts() -> dict[str, object]:
    """What a reader needs to compare runs: cores, memory, CPU, Python and tansu versions."""
    from importlib.metadata import version

    return {
        "cores": os.cpu_count() or 1,
        "mem_gib": round(_mem_total_gib(), 1),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "tansu": tansu_version(),
        "faust": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
    }


@contextmanager
def busy_loops(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on a core each while the block runs (issue 20's contention
    target: two of them beside the worker); all stopped and reaped on the way out.

    >>> with busy_loops(1) as loops:
    ...     cpu_seconds(loops[0].pid) is not None
    True
    >>> loops[0].poll() is not None
    True
    """
    loops = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the caller does not print its traceback
        )
        for _ in range(count)
    ]
    try:
        yield loops
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()
