from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs on 2 cores with other work beside it: no wall-clock deadlines.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
