from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs on 2 cores with other work beside it: no wall-clock deadlines.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def postgres_url() -> str:
    """``$WINGSPAN_TEST_POSTGRES_URL``, the PostgreSQL server the PostgreSQL store is tested
    against; without it the calling module is skipped (with one reason for all of them)."""
    import pytest

    url = os.environ.get("WINGSPAN_TEST_POSTGRES_URL", "")
    if not url:
        pytest.skip("WINGSPAN_TEST_POSTGRES_URL is not set, so the PostgreSQL store is not "
                    "tested (e.g. WINGSPAN_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1"
                    ":5432/test; .ci/run sets it)", allow_module_level=True)
    return url
