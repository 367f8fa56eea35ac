"""The memory store passes the store contract suite, and serves claims in order."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, settings

import wingspan
from wingspan.plugins.memory import MemoryStore
from wingspan.testing import make_runtime, store_state_machine


async def _open() -> wingspan.Store:
    return await make_runtime().open_store("memory://")


TestMemoryStoreContract = store_state_machine(_open).TestCase
TestMemoryStoreContract.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def test_claims_are_first_come_first_served() -> None:
    store = MemoryStore()
    await store.create_session(wingspan.SessionRecord(id="s"))
    assert await store.claim_session("s", "first")
    order: list[str] = []

    async def wait_turn(holder: str) -> None:
        assert await store.claim_session("s", holder)
        order.append(holder)
        await store.release_session("s", holder)

    waiters = []
    for holder in ("second", "third", "fourth"):
        waiters.append(asyncio.create_task(wait_turn(holder)))
        await asyncio.sleep(0)  # queue them in this order
    assert not await store.claim_session("s", "late", wait=False)
    await store.release_session("s", "first")
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert order == ["second", "third", "fourth"]


async def test_claim_wait_times_out_and_leaves_the_queue() -> None:
    store = MemoryStore()
    await store.create_session(wingspan.SessionRecord(id="s"))
    assert await store.claim_session("s", "holder")
    assert not await store.claim_session("s", "patient", timeout=0.01)
    await store.release_session("s", "holder")
    assert await store.claim_session("s", "next", wait=False)


async def test_bad_urls_and_limits_are_clear_errors() -> None:
    runtime = make_runtime()
    with pytest.raises(wingspan.ConfigError, match="memory://"):
        await runtime.open_store("memory://somewhere")
    with pytest.raises(wingspan.ConfigError, match="no store plugin handles 'nope://x'"):
        await runtime.open_store("nope://x")
    store = await runtime.open_store("memory://")
    with pytest.raises(wingspan.ConfigError, match="limit"):
        await store.list_sessions(limit=0)
