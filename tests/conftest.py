"""Suite-wide settings: property tests draw the same examples on every run, so CI is repeatable
(a new failing example is found by running with HYPOTHESIS_PROFILE=explore)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
