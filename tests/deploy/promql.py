"""Check deploy/ against a real Prometheus: list the PromQL of the dashboards and alert rules,
run Debian's `prometheus` on loopback against one scrape target, and query it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from string import Template
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
TEST_CONFIG_TEMPLATE = PROMETHEUS_DIR / "prometheus-test.yml.tmpl"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# What Grafana puts in for its interval macros when the check runs the expressions.
INTERVAL_MACROS = ("$__rate_interval", "$__interval", "$__range")
MACRO_VALUE = "1m"

CONVSTREAM_METRIC = re.compile(r"\bconvstream_[a-z_]+")
UP_SELECTOR = re.compile(r"(?<![\w:])up(?=\s*[{\[])")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*$", re.S)


class PromQLError(RuntimeError):
    """Prometheus answered a query with an error."""


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: convstream_* names, and `up`.

    >>> sorted(metric_names('sum(rate(convstream_events_in_total[1m])) and up{job="x"}'))
    ['convstream_events_in_total', 'up']
    """
    names = set(CONVSTREAM_METRIC.findall(expr))
    if UP_SELECTOR.search(expr):
        names.add("up")
    return names


def defined_metric_names() -> set[str]:
    """Every series name that convstream.stream.metrics.REGISTRY can expose (without `_created`)."""
    from convstream.stream.metrics import REGISTRY

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") in ("query", "custom", "interval", "textbox", "constant"):
            values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def resolve(expr: str, variables: Mapping[str, str]) -> str:
    """Put in Grafana's interval macros and the dashboard's template variables.

    >>> resolve('rate(x{a=~"$adv"}[$__rate_interval])', {"adv": ".*"})
    'rate(x{a=~".*"}[1m])'
    """
    for macro in INTERVAL_MACROS:
        expr = expr.replace(macro, MACRO_VALUE)

    def substitute(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise KeyError(f"template variable ${name} is not defined in the dashboard")
        return variables[name]

    return _VARIABLE.sub(substitute, expr)


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(resolved: bool = True) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and query variable of the dashboards."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        exprs = []
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    where = f"{path.name}: panel {panel.get('title')!r} {target.get('refId')}"
                    exprs.append((where, target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable.get("query")
                query = query.get("query", "") if isinstance(query, dict) else query or ""
                match = _LABEL_VALUES.match(query)
                where = f"{path.name}: variable {variable['name']}"
                exprs.append((where, match[1] if match else query))
        if resolved:
            variables = _dashboard_variables(dashboard)
            exprs = [(where, resolve(expr, variables)) for where, expr in exprs]
        found += exprs
    return found


def rule_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every alerting and recording rule."""
    rules = yaml.safe_load(ALERT_RULES.read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            found.append((f"{ALERT_RULES.name}: {name}", rule["expr"]))
    return found


def labelled_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression of the dashboards and the rules, runnable."""
    return dashboard_expressions() + rule_expressions()


def all_expressions() -> list[str]:
    """Every PromQL expression of the dashboards and the rules, ready to run."""
    return [expr for _, expr in labelled_expressions()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _get_json(url: str, timeout: float = 5.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        # The HTTP API puts the reason of a 4xx/5xx in a JSON body.
        return json.load(error)


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping one target every second, with the alert
    rules loaded; storage in a temporary directory removed by stop()."""

    def __init__(
        self, target: str, *, rule_files: Iterable[Path] = (ALERT_RULES,), binary: str | None = None
    ) -> None:
        self.target = target
        self._rule_files = [str(Path(path).resolve()) for path in rule_files]
        self._binary = binary or prometheus_binary()
        if self._binary is None:
            raise FileNotFoundError("prometheus is not installed (Debian package `prometheus`)")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Prometheus:
        self._tmp = tempfile.TemporaryDirectory(prefix="convstream-prometheus-")
        workdir = Path(self._tmp.name)
        config = workdir / "prometheus.yml"
        config.write_text(
            Template(TEST_CONFIG_TEMPLATE.read_text()).substitute(
                target=self.target, rule_files=json.dumps(self._rule_files)
            )
        )
        self.port = free_port()
        self._log = open(workdir / "prometheus.log", "wb")  # closed in stop()
        self._process = subprocess.Popen(
            [
                self._binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through /api/v1/query; the result list (vector or matrix)."""
        params = urllib.parse.urlencode({"query": expr})
        body = _get_json(f"{self.url}/api/v1/query?{params}")
        if body.get("status") != "success":
            raise PromQLError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else [result]

    def rules(self) -> list[dict[str, Any]]:
        body = _get_json(f"{self.url}/api/v1/rules")
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def wait_for_scrapes(self, n: int = 2, timeout: float = 30.0, job: str = "convstream") -> None:
        """Wait until the target has been scraped successfully `n` times."""
        expr = f'sum_over_time(up{{job="{job}"}}[5m])'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) >= n:
                return
            time.sleep(0.25)
        raise TimeoutError(f"{self.target} not scraped {n} times in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_prometheus(target: str, **kwargs: Any) -> Prometheus:
    """Start Prometheus scraping `target` ("127.0.0.1:PORT"); call .stop() when done."""
    return Prometheus(target, **kwargs).start()
