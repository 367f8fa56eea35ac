"""The memory store passes the store contract suite, and serves claims in order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

import wingspan
from wingspan.testing import ClaimContract, make_runtime, store_state_machine


async def _open() -> wingspan.Store:
    return await make_runtime().open_store("memory://")


TestMemoryStoreContract = store_state_machine(_open).TestCase
TestMemoryStoreContract.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestMemoryStoreClaims(ClaimContract):
    open_store = staticmethod(_open)


async def test_bad_urls_and_limits_are_clear_errors() -> None:
    runtime = make_runtime()
    with pytest.raises(wingspan.ConfigError, match="memory://"):
        await runtime.open_store("memory://somewhere")
    with pytest.raises(wingspan.ConfigError, match="no store plugin handles 'nope://x'"):
        await runtime.open_store("nope://x")
    store = await runtime.open_store("memory://")
    with pytest.raises(wingspan.ConfigError, match="limit"):
        await store.list_sessions(limit=0)


async def test_a_credential_keeps_its_type_and_base_url() -> None:
    store = await _open()
    credential = wingspan.Credential(type="oauth", key="tok", base_url="http://localhost:8080/v1")
    await store.set_credential("openai", credential)
    assert await store.get_credential("openai") == credential
    assert await store.list_credentials() == {"openai": "oauth"}
    assert "tok" not in repr(credential) and "localhost:8080" in repr(credential)
