"""Waiting for a session's events (``wait_events``): who waits, and how they are woken.

An append of this store wakes the waiters of its session as soon as it commits
(:meth:`LogWatch.appended`). Other processes cannot wake them: while anyone waits, one poll
every :data:`POLL_INTERVAL` asks the reader thread whether the database changed at all
(``PRAGMA data_version``, which reads no page) and, if it did, reads the ``last_seq`` of
every session waited on in one query. The events that recovering a claim appends (an
interrupted run's) reach this store's waiters through the poll too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from wingspan import NotFoundError, WingspanError

from ._worker import notify

#: Seconds between two looks at the database while someone waits on a log.
POLL_INTERVAL = 0.025

#: ``(known version, session ids) -> (version, {session id: (pk, last_seq)} | None)``
#: (``_events.last_seqs`` in the reader thread).
ReadSeqs: TypeAlias = Callable[
    [int | None, Sequence[str]], Awaitable[tuple[int, dict[str, tuple[int, int]] | None]]
]


class _Waiter:
    """One ``wait_events`` call: woken with the session's ``last_seq`` once it passes
    ``after``. ``pk`` is the session's row once the call has looked (a session deleted and
    created again is another row: its waiters raise :class:`~wingspan.NotFoundError`)."""

    __slots__ = ("after", "future", "pk", "polled")

    def __init__(self, after: int, future: asyncio.Future[int]) -> None:
        self.after = after
        self.future = future
        self.pk: int | None = None
        self.polled = False  # whether a poll has read its session since it looked

    def settle(self, value: int | None, error: Exception | None) -> None:
        if not self.future.done():
            notify(self.future.get_loop(), [(self.future, value, error)])


def _deleted(session_id: str) -> NotFoundError:
    return NotFoundError(f"session {session_id!r} was deleted while waiting for its events")


class LogWatch:
    """The ``wait_events`` calls of one store, and the poll that serves them.

    :param read_seqs: reads the ``last_seq`` of sessions (see :data:`ReadSeqs`).
    """

    def __init__(self, read_seqs: ReadSeqs, interval: float = POLL_INTERVAL) -> None:
        self._read_seqs = read_seqs
        self._interval = interval
        self._waiters: dict[str, set[_Waiter]] = {}
        self._lock = threading.Lock()  # appends are heard in the writer thread
        self._poll: asyncio.Task[None] | None = None

    async def wait(
        self,
        session_id: str,
        after: int,
        timeout: float,
        look: Callable[[], Awaitable[tuple[int, int]]],
    ) -> int:
        """Wait until the ``last_seq`` of ``session_id`` passes ``after``, or ``timeout``
        seconds pass. ``look`` reads ``(pk, last_seq)`` of the session.

        :returns: its ``last_seq`` then.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(after, loop.create_future())
        # Waiting before looking: an append committed from now on wakes it.
        with self._lock:
            self._waiters.setdefault(session_id, set()).add(waiter)
        try:
            pk, last_seq = await look()
            if last_seq > after or timeout <= 0:
                return last_seq
            waiter.pk = pk
            with self._lock:
                if self._poll is None or self._poll.done():
                    self._poll = loop.create_task(self._polling())
            try:
                return await asyncio.wait_for(waiter.future, timeout)
            except TimeoutError:
                return (await look())[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(session_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[session_id]

    def appended(self, session_id: str, pk: int, last_seq: int) -> None:
        """Session ``session_id`` (row ``pk``) has events up to ``last_seq`` (called in the
        writer thread once they are committed)."""
        with self._lock:
            waiters = list(self._waiters.get(session_id, ()))
        for waiter in waiters:
            if waiter.pk not in (None, pk):
                waiter.settle(None, _deleted(session_id))
            elif last_seq > waiter.after:
                waiter.settle(last_seq, None)

    def end(self, session_id: str, error: Exception) -> None:
        """End the waits on ``session_id`` with ``error``."""
        with self._lock:
            waiters = list(self._waiters.get(session_id, ()))
        for waiter in waiters:
            waiter.settle(None, error)

    async def close(self, error: Exception) -> None:
        """End every wait with ``error``, and the poll."""
        with self._lock:
            waiters = [w for session in self._waiters.values() for w in session]
            poll, self._poll = self._poll, None
        for waiter in waiters:
            waiter.settle(None, error)
        if poll is not None and poll.get_loop() is asyncio.get_running_loop():
            poll.cancel()
            await asyncio.wait([poll])  # does not raise what it ended with

    async def _polling(self) -> None:
        """Look for other processes' appends while anyone waits."""
        version: int | None = None
        while True:
            await asyncio.sleep(self._interval)
            with self._lock:
                if not self._waiters:
                    self._poll = None
                    return
                # Those still looking for themselves (no pk yet) are left out.
                watched = {
                    session_id: [w for w in waiters if w.pk is not None]
                    for session_id, waiters in self._waiters.items()
                }
            waiters = [w for session in watched.values() for w in session]
            # A commit between a newcomer's look and the last version read would not
            # change the version again: its session is read whatever the version says.
            known = version if all(w.polled for w in waiters) else None
            try:
                version, seqs = await self._read_seqs(known, list(watched))
            except WingspanError:
                continue  # closed (the waits have ended), or locked for a while: next time
            if seqs is not None:
                for waiter in waiters:
                    waiter.polled = True
                self._settle(watched, seqs)

    @staticmethod
    def _settle(watched: dict[str, list[_Waiter]], seqs: dict[str, tuple[int, int]]) -> None:
        for session_id, waiters in watched.items():
            found = seqs.get(session_id)
            for waiter in waiters:
                if found is None or found[0] != waiter.pk:
                    waiter.settle(None, _deleted(session_id))
                elif found[1] > waiter.after:
                    waiter.settle(found[1], None)
