"""Suite-wide settings: property tests draw the same examples on every run, so CI is repeatable
(a new failing example is found by running with HYPOTHESIS_PROFILE=explore).

Neither profile times anything: a deadline or the "input generation is slow" health check
measures the machine's load, not the code (a fresh clone on a busy 2-core machine failed the
first draw of ``st.text()``, which builds Hypothesis's character tables, at 2.3 s).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("repeatable", derandomize=True, print_blob=True, **UNTIMED)
settings.register_profile("explore", derandomize=False, **UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
