from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from hypothesis import HealthCheck, settings

# CI runs on 2 cores with other work beside it: no wall-clock deadlines.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: The variable naming the PostgreSQL server of the tests (``.ci/run`` sets it).
POSTGRES_URL_VARIABLE = "WINGSPAN_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """``$WINGSPAN_TEST_POSTGRES_URL``, the PostgreSQL server the PostgreSQL store is tested
    against; without it the calling module is skipped (with one reason for all of them)."""
    import pytest

    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if not url:
        pytest.skip("WINGSPAN_TEST_POSTGRES_URL is not set, so the PostgreSQL store is not "
                    "tested (e.g. WINGSPAN_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1"
                    ":5432/test; .ci/run sets it)", allow_module_level=True)
    return url


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL of the test server (:func:`postgres_url`) on a new schema of its own, so
    that parallel tests never meet; the schema is dropped afterwards."""
    import asyncpg

    import wingspan

    url = postgres_url()
    schema = f"wingspan_test_{wingspan.new_id().lower()}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())
