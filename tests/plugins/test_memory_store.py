"""The memory store passes the store contract suite, and serves claims in order."""

from __future__ import annotations

import asyncio

import pytest

import wingspan
from wingspan.testing import ClaimContract, make_runtime, store_state_machine

#: Seconds any wait of these tests may last.
WAIT = 10.0


async def _open() -> wingspan.Store:
    return await make_runtime().open_store("memory://")


TestMemoryStoreContract = store_state_machine(_open).TestCase


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


async def test_closing_the_store_ends_the_waits_on_it() -> None:
    store = await _open()
    await store.create_session(wingspan.SessionRecord(id="s"))
    assert await store.claim_session("s", "holder")
    waiter = asyncio.create_task(store.claim_session("s", "waiting"))
    await asyncio.sleep(0.05)  # let it queue
    await store.close()
    with pytest.raises(wingspan.StoreError, match="closed"):
        await asyncio.wait_for(waiter, WAIT)


async def test_the_holder_claims_again_while_others_wait() -> None:
    store = await _open()
    await store.create_session(wingspan.SessionRecord(id="s"))
    assert await store.claim_session("s", "holder")
    waiter = asyncio.create_task(store.claim_session("s", "next"))
    await asyncio.sleep(0.05)
    assert await store.claim_session("s", "holder", wait=False)  # it holds it already
    assert not await store.claim_session("s", "other", wait=False)
    await store.release_session("s", "holder")
    assert await asyncio.wait_for(waiter, WAIT)  # then the queue goes on, in order
    await store.close()

