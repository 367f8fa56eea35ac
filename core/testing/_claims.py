"""The waiting side of a store: claims, admission order and waits on the event log, which the
state machine (nothing in it waits) does not reach."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..errors import ConflictError, NotFoundError, StoreError
from ..ids import new_id
from ..store import RunRecord, SessionRecord, Store
from ..types import Ping

__all__ = ["ClaimContract"]


class ClaimContract:
    """The waiting side of a store, which the state machine (claims with ``wait=False``,
    event waits that need not wait) does not reach: claims first come first served,
    timeouts, cancelled waiters, releases by others, deleted sessions; claims granted in
    admission order; ``wait_events`` woken by an append, timing out, ended by a deleted
    session or a closed store. Subclass it in a test module with a class whose name starts
    with ``Test`` and an async ``open_store`` returning a fresh, empty store::

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

    # --- admission order ------------------------------------------------------------------

    def test_claims_are_granted_in_admission_order(self) -> None:
        """Whatever order the admitted runs claim in, they get the session in the order
        they were admitted, and a claimant never admitted comes after them."""

        async def scenario(store: Store) -> None:
            first, second, third = [await _admit(store) for _ in range(3)]
            order: list[str] = []

            async def take_turn(holder: str) -> None:
                assert await store.claim_session("s", holder)
                order.append(holder)
                await store.release_session("s", holder)

            turns = []
            for holder in (third.id, second.id, "never-admitted", first.id):
                turns.append(asyncio.create_task(take_turn(holder)))
                await asyncio.sleep(0.02)  # let each one queue before the next
            await asyncio.gather(*turns)
            assert order == [first.id, second.id, third.id, "never-admitted"]

        self._run(scenario)

    def test_an_admitted_run_claims_at_once_only_first_in_line(self) -> None:
        async def scenario(store: Store) -> None:
            first, second = await _admit(store), await _admit(store)
            assert not await store.claim_session("s", second.id, wait=False)
            assert not await store.claim_session("s", "never-admitted", wait=False)
            late = asyncio.create_task(store.claim_session("s", "never-admitted"))
            await asyncio.sleep(0.02)
            assert await store.claim_session("s", first.id, wait=False)
            await store.release_session("s", first.id)
            # Refused without waiting, it kept its place, before the claim that waits.
            assert await store.claim_session("s", second.id, wait=False)
            assert not late.done()
            await store.release_session("s", second.id)
            assert await late

        self._run(scenario)

    def test_a_place_given_up_before_its_claim_lets_the_queue_go_on(self) -> None:
        """An admitted run that releases without claiming (its executor gave up) is out of
        the line, wherever it was in it."""

        async def scenario(store: Store) -> None:
            first, second, third = [await _admit(store) for _ in range(3)]
            await store.release_session("s", second.id)  # from the middle of the line
            assert await store.claim_session("s", first.id)
            await store.release_session("s", first.id)
            assert await store.claim_session("s", third.id, wait=False)
            await store.release_session("s", third.id)
            last = await _admit(store)
            await store.release_session("s", last.id)  # first in line, the session free
            assert await store.claim_session("s", "never-admitted", wait=False)

        self._run(scenario)

    def test_a_run_aborted_while_queued_still_gets_its_turn(self) -> None:
        """Its claim is granted when its turn comes, and it cannot start."""

        async def scenario(store: Store) -> None:
            first, second = await _admit(store), await _admit(store)
            assert (await store.abort_run(second.id)).status == "aborted"
            assert await store.claim_session("s", first.id)
            turn = asyncio.create_task(store.claim_session("s", second.id))
            await asyncio.sleep(0.02)
            assert not turn.done()
            await store.release_session("s", first.id)
            assert await turn
            try:
                await store.start_run(second.id)
            except ConflictError:
                pass
            else:
                raise AssertionError("starting an aborted run should raise ConflictError")
            await store.release_session("s", second.id)
            assert await store.claim_session("s", "next", wait=False)

        self._run(scenario)

    # --- waits on the event log -----------------------------------------------------------

    def test_an_append_wakes_the_waits_on_the_log(self) -> None:
        async def scenario(store: Store) -> None:
            waiters = [
                asyncio.create_task(store.wait_events("s", after=0, timeout=self.WAIT))
                for _ in range(2)
            ]
            await asyncio.sleep(0.05)
            assert not any(waiter.done() for waiter in waiters)
            last_seq = await store.append_events("s", "run", [Ping(), Ping()])
            assert await asyncio.gather(*waiters) == [last_seq, last_seq]
            # What is there already is answered at once (not after the timeout).
            assert await store.wait_events("s", after=1, timeout=self.WAIT) == last_seq

        self._run(scenario)

    def test_a_wait_on_the_log_times_out_with_its_last_seq(self) -> None:
        async def scenario(store: Store) -> None:
            last_seq = await store.append_events("s", "run", [Ping()])
            assert await store.wait_events("s", after=last_seq, timeout=0.05) == last_seq
            assert await store.wait_events("s", after=last_seq + 5, timeout=0) == last_seq

        self._run(scenario)

    def test_a_cancelled_wait_on_the_log_leaves_nothing_behind(self) -> None:
        async def scenario(store: Store) -> None:
            waiter = asyncio.create_task(store.wait_events("s", after=0, timeout=self.WAIT))
            await asyncio.sleep(0.05)
            waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("a cancelled wait_events should raise CancelledError")
            after = asyncio.create_task(store.wait_events("s", after=0, timeout=self.WAIT))
            await asyncio.sleep(0.05)
            assert await store.append_events("s", "run", [Ping()]) == 1
            assert await after == 1

        self._run(scenario)

    def test_deleting_a_session_ends_the_waits_on_its_log(self) -> None:
        async def scenario(store: Store) -> None:
            waiter = asyncio.create_task(store.wait_events("s", after=0, timeout=self.WAIT))
            await asyncio.sleep(0.05)
            await store.delete_session("s")
            for wait in (waiter, store.wait_events("s", after=0, timeout=self.WAIT)):
                try:
                    await wait
                except NotFoundError:
                    continue
                raise AssertionError("a wait on a deleted session should raise NotFoundError")

        self._run(scenario)

    def test_closing_the_store_ends_the_waits_on_its_logs(self) -> None:
        async def scenario(store: Store) -> None:
            waiter = asyncio.create_task(store.wait_events("s", after=0, timeout=self.WAIT))
            await asyncio.sleep(0.05)
            await store.close()
            try:
                await waiter
            except StoreError:
                return
            raise AssertionError("a wait on a closed store should raise StoreError")

        self._run(scenario)


async def _admit(store: Store) -> RunRecord:
    """Admit a new run to session ``s``; :returns: it as stored."""
    admission = await store.admit_run(RunRecord(id=new_id(), session_id="s", status="queued"))
    return admission.run
