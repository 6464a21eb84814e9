"""Keep a broker outage from flooding the worker's log.

While the broker is unreachable, aiokafka retries every 100 ms and logs each failure: about 80
lines a second, the same four messages with different numbers. :class:`RepeatFilter` lets the
first record of each message template through, then at most one per ``interval_s``, which says
how many it stood for. Only the Kafka client's and Faust's loggers are thinned; convstream's own
records always pass.

>>> now = [0.0]
>>> f = RepeatFilter(interval_s=10, clock=lambda: now[0])
>>> def record(n):
...     return logging.LogRecord("aiokafka.conn", logging.ERROR, "", 0, "node %s down", (n,), None)
>>> [f.filter(record(n)) for n in range(3)]
[True, False, False]
>>> now[0] = 11.0
>>> r = record(3)
>>> f.filter(r), r.getMessage()
(True, 'node 3 down (2 more like this in the last 11 s)')

Faust formats some messages before logging them (``f"producer buffer full size {n}"``), so
the numbers are in the template itself; they are left out of what counts as "the same":

>>> def full(n):
...     msg = f"producer buffer full size {n}"
...     return logging.LogRecord("faust.transport.producer", logging.WARNING, "", 0, msg, (), None)
>>> [f.filter(full(n)) for n in (101, 180, 240)]
[True, False, False]
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

THINNED = ("aiokafka", "faust", "mode")
_NUMBER = re.compile(r"\d+(\.\d+)?")


class RepeatFilter(logging.Filter):
    """Pass each (logger, level, template) once per ``interval_s``; count what it drops."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(THINNED):
            return True
        key = (record.name, record.levelno, _NUMBER.sub("#", str(record.msg)))
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            since = now - seen[0]
            record.msg = f"{record.msg} ({seen[1]} more like this in the last {since:.0f} s)"
        self._last[key] = (now, 0)
        return True


def thin_repeats(logger: logging.Logger, interval_s: float = 10.0) -> RepeatFilter:
    """Install one :class:`RepeatFilter` on every handler of ``logger`` (the root, usually)."""
    repeat = RepeatFilter(interval_s)
    for handler in logger.handlers:
        handler.addFilter(repeat)
    return repeat
