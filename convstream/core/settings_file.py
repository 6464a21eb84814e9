"""Per-advertiser attribution settings from a TOML file, reloaded when the file changes.

The file has a ``[default]`` table and one ``[advertiser."<id>"]`` table per override; an
override inherits every field it does not set from ``[default]``::

    [default]
    model = "last_touch"          # last_touch | first_touch | linear | time_decay | position_based
    click_window_days = 30        # or click_window_ms; same for view_window and half_life
    view_window_days = 1
    half_life_days = 7
    position_weights = [0.4, 0.2, 0.4]
    site_events = ["PageView", "ViewContent", "Login"]  # no label: they feed the identity graph
    # conversion_events = ["Purchase", "Lead"]         # if set, only these get labels

    [advertiser."adv-7"]
    model = "time_decay"
    half_life_days = 3
    conversion_events = ["Purchase"]  # AddToCart and the rest feed the graph only

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "attribution.toml"
>>> _ = path.write_text('[advertiser."adv-7"]\\nmodel = "time_decay"\\nhalf_life_days = 3\\n')
>>> config = load_attribution_config(path)
>>> config.for_advertiser("adv-7").half_life_ms == 3 * DAY_MS, config.default.model
(True, 'last_touch')
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convstream.core.attribution import AttributionConfig, AttributionSettings
from convstream.core.units import DAY_MS

_DURATIONS = ("click_window", "view_window", "half_life")
_NAME_LISTS = ("conversion_events", "site_events")
_ALLOWED_KEYS = frozenset(
    {"model", "position_weights", *_NAME_LISTS}
    | {f"{name}_{unit}" for name in _DURATIONS for unit in ("days", "ms")}
)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return value


def _settings_fields(table: Any, where: str) -> dict[str, Any]:
    """AttributionSettings keyword arguments from one TOML table."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - _ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    fields: dict[str, Any] = {}
    if "model" in table:
        fields["model"] = table["model"]
    if "position_weights" in table:
        weights = table["position_weights"]
        if not isinstance(weights, list):
            raise ValueError(f"{where}.position_weights must be an array of three numbers")
        fields["position_weights"] = tuple(_number(w, f"{where}.position_weights") for w in weights)
    for name in _NAME_LISTS:
        if name in table:
            names = table[name]
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{where}.{name} must be an array of event names")
            fields[name] = tuple(names)
    for name in _DURATIONS:
        days, ms = table.get(f"{name}_days"), table.get(f"{name}_ms")
        if days is not None and ms is not None:
            raise ValueError(f"{where}: set {name}_days or {name}_ms, not both")
        if days is not None:
            value = _number(days, f"{where}.{name}_days")
            if value < 0:
                raise ValueError(f"{where}.{name}_days must not be negative, got {days!r}")
            fields[f"{name}_ms"] = round(value * DAY_MS)
        elif ms is not None:
            value = _number(ms, f"{where}.{name}_ms")
            if value < 0:
                raise ValueError(f"{where}.{name}_ms must not be negative, got {ms!r}")
            fields[f"{name}_ms"] = round(value)
    return fields


def _settings(base: AttributionSettings, table: Any, where: str) -> AttributionSettings:
    fields = _settings_fields(table, where)
    try:
        return dataclasses.replace(base, **fields)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_attribution_config(text: str, source: str = "<string>") -> AttributionConfig:
    """An :class:`AttributionConfig` from TOML text; ValueError naming the bad field.

    >>> parse_attribution_config('[default]\\nmodel = "linear"').default.model
    'linear'
    >>> parse_attribution_config('[default]\\nmodel = "lifo"')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: <string> [default]: unknown attribution model 'lifo'; ...
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: invalid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"default", "advertiser"})
    if unknown:
        raise ValueError(f"{source}: unknown tables {unknown}; expected [default], [advertiser]")
    default = _settings(AttributionSettings(), doc.get("default", {}), f"{source} [default]")
    advertisers = doc.get("advertiser", {})
    if not isinstance(advertisers, dict):
        raise ValueError(f'{source}: advertiser must be tables [advertiser."<id>"]')
    overrides = {
        adv: _settings(default, table, f"{source} [advertiser.{adv!r}]")
        for adv, table in advertisers.items()
    }
    return AttributionConfig(default=default, overrides=overrides)


def load_attribution_config(path: str | os.PathLike[str]) -> AttributionConfig:
    """Read and validate the TOML file at ``path`` (OSError if unreadable, else ValueError)."""
    text = Path(path).read_text(encoding="utf-8")
    return parse_attribution_config(text, source=str(path))


Signature = tuple[int, int, int]


class AttributionConfigWatcher:
    """The config of a file, re-read when its mtime (or size or inode) changes.

    A worker calls :meth:`current` per conversion. A file that becomes invalid or disappears
    keeps the previous config and sets :attr:`last_error`; the next good version clears it. The
    first load happens in the constructor and raises, so a worker does not start on a bad file.
    ``min_check_interval_s`` bounds how often the file is stat-ed (``clock`` is for tests).

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "attribution.toml"
    >>> _ = path.write_text('[default]\\nmodel = "linear"\\n')
    >>> watcher = AttributionConfigWatcher(path)
    >>> _ = path.write_text('[default]\\nmodel = "bogus"\\n')
    >>> os.utime(path, ns=(0, 10**9))
    >>> watcher.current().default.model, watcher.last_error is not None
    ('linear', True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        min_check_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.min_check_interval_s = min_check_interval_s
        self.last_error: str | None = None
        self.reloads = 0
        self._clock = clock
        self._signature = self._stat()
        self._config = load_attribution_config(self.path)
        self._checked_at = clock()

    def _stat(self) -> Signature | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> AttributionConfig:
        """The latest valid config, re-reading the file if it changed since the last check."""
        now = self._clock()
        if now - self._checked_at < self.min_check_interval_s:
            return self._config
        self._checked_at = now
        signature = self._stat()
        if signature == self._signature:
            return self._config
        self._signature = signature
        try:
            self._config = load_attribution_config(self.path)
        except (OSError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        else:
            self.last_error = None
            self.reloads += 1
        return self._config
