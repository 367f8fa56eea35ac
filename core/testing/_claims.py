"""The waiting side of a store's claims, which the state machine does not reach."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..errors import NotFoundError
from ..store import SessionRecord, Store

__all__ = ["ClaimContract"]


class ClaimContract:
    """The waiting side of ``claim_session``, which the state machine (claims with
    ``wait=False``) does not reach: first come first served, timeouts, cancelled waiters,
    releases by others, deleted sessions. Subclass it in a test module with a class whose name
    starts with ``Test`` and an async ``open_store`` returning a fresh, empty store::

        class TestMyStoreClaims(ClaimContract):
            @staticmethod
            async def open_store():
                return await open_my_store("my://...")

    Each test runs on its own event loop, so no asyncio plugin for pytest is needed.
    """

    #: Seconds any wait of these tests may last.
    WAIT = 10.0

    @staticmethod
    async def open_store() -> Store:
        raise NotImplementedError("subclass ClaimContract and define open_store")

    def _run(self, scenario: Callable[[Store], Awaitable[None]]) -> None:
        async def main() -> None:
            store = await self.open_store()
            try:
                await store.create_session(SessionRecord(id="s"))
                await asyncio.wait_for(scenario(store), self.WAIT)
            finally:
                await store.close()

        asyncio.run(main())

    def test_claims_are_first_come_first_served(self) -> None:
        async def scenario(store: Store) -> None:
            assert await store.claim_session("s", "first")
            order: list[str] = []

            async def wait_turn(holder: str) -> None:
                assert await store.claim_session("s", holder)
                order.append(holder)
                await store.release_session("s", holder)

            waiters = []
            for holder in ("second", "third", "fourth"):
                waiters.append(asyncio.create_task(wait_turn(holder)))
                await asyncio.sleep(0.02)  # let each one queue before the next
            assert not await store.claim_session("s", "late", wait=False)
            await store.release_session("s", "first")
            await asyncio.gather(*waiters)
            assert order == ["second", "third", "fourth"]

        self._run(scenario)

    def test_a_wait_times_out_and_leaves_the_queue(self) -> None:
        async def scenario(store: Store) -> None:
            assert await store.claim_session("s", "holder")
            assert not await store.claim_session("s", "patient", timeout=0.05)
            await store.release_session("s", "holder")
            assert await store.claim_session("s", "next", wait=False)

        self._run(scenario)

    def test_a_cancelled_waiter_leaves_the_queue(self) -> None:
        async def scenario(store: Store) -> None:
            assert await store.claim_session("s", "holder")
            waiter = asyncio.create_task(store.claim_session("s", "impatient"))
            await asyncio.sleep(0.05)
            waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("a cancelled claim_session should raise CancelledError")
            await store.release_session("s", "holder")
            assert await store.claim_session("s", "next", wait=False)

        self._run(scenario)

    def test_a_release_by_a_non_holder_does_nothing(self) -> None:
        async def scenario(store: Store) -> None:
            assert await store.claim_session("s", "holder")
            await store.release_session("s", "someone-else")
            await store.release_session("missing-session", "holder")
            assert not await store.claim_session("s", "other", wait=False)
            assert await store.claim_session("s", "holder", wait=False)  # the holder again

        self._run(scenario)

    def test_deleting_a_session_ends_its_waits(self) -> None:
        async def scenario(store: Store) -> None:
            assert await store.claim_session("s", "holder")
            waiter = asyncio.create_task(store.claim_session("s", "waiting"))
            await asyncio.sleep(0.05)
            await store.delete_session("s")
            try:
                await waiter
            except NotFoundError:
                return
            raise AssertionError("a wait on a deleted session should raise NotFoundError")

        self._run(scenario)
