"""Units of event time: every timestamp and duration in convstream is in milliseconds.

>>> DAY_MS == 24 * HOUR_MS == 1_440 * MINUTE_MS
True
"""

from __future__ import annotations

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
