"""The claims on a store's sessions, for a store used by one process (:class:`ClaimQueue`,
re-exported by :mod:`wingspan.storekit`)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

import attrs

from .errors import NotFoundError, StoreError

__all__ = ["ClaimQueue"]


@attrs.define(eq=False)
class _Place:
    """A holder's place in a session's queue. ``future`` is ``None`` while no claim waits in
    it (a place :meth:`ClaimQueue.reserve` took), else what the claim waits on."""

    holder: str
    future: asyncio.Future[None] | None = None


class ClaimQueue:
    """The claims on a store's sessions, for a store used by one process.

    A store calls :meth:`claim` from ``claim_session`` (after checking that the session
    exists), :meth:`release` from ``release_session``, :meth:`reserve` from ``admit_run``,
    :meth:`delete_session` from ``delete_session`` and :meth:`close` from ``close``. What it
    guarantees is what the store contract (``wingspan.testing.ClaimContract``) checks:

    - one holder per session; claiming again as that holder is granted at once;
    - waiters are served first come, first served, as each holder releases; a holder whose
      place was reserved (an admitted run) is served in that place, so claims are granted in
      admission order, and others queue behind the places reserved before them;
    - a wait that times out, or is cancelled, leaves the queue (a claim granted just as the
      wait was cancelled is handed on to the next waiter);
    - deleting the session makes its waiters raise :class:`~wingspan.NotFoundError`, and
      closing the store makes every waiter raise :class:`~wingspan.StoreError`.

    Waits are futures of the event loop they run on: use a store built on it from one event
    loop at a time.
    """

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}
        self._waiters: dict[str, collections.deque[_Place]] = {}

    def __repr__(self) -> str:
        waiting = sum(len(queue) for queue in self._waiters.values())
        return f"<ClaimQueue held={len(self._holders)} waiting={waiting}>"

    def reserve(self, session_id: str, holder: str) -> bool:
        """Give ``holder`` its place in ``session_id``'s queue now, for its :meth:`claim` to
        come: that claim is served in this place, not behind the claims made meanwhile.
        When its turn comes before its claim does, the place holds the session for it: the
        claim is then granted at once, and a :meth:`release` hands the session on.

        Every reserved place must be claimed or released: a place never claimed holds up
        the queue until it is released, its session deleted or the queue closed. A no-op
        when ``holder`` already holds the session or has a place in its queue.

        :returns: whether ``holder`` holds the session now.
        """
        if self._holders.get(session_id) == holder:
            return True
        if self._place(session_id, holder):
            return False
        if session_id not in self._holders:
            self._holders[session_id] = holder  # nobody in line: its turn is now
            return True
        self._waiters.setdefault(session_id, collections.deque()).append(_Place(holder))
        return False

    async def claim(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        """Make ``holder`` the holder of ``session_id``'s claim, waiting for its turn if
        ``wait`` (up to ``timeout`` seconds; ``None``: forever), in the place
        :meth:`reserve` gave it if it did. Without ``wait``, a claim that is refused keeps
        that place.

        :returns: whether the claim was granted.
        :raises NotFoundError: when the session is deleted while waiting.
        :raises StoreError: when the queue is closed while waiting.
        """
        current = self._holders.get(session_id)
        if current == holder or (current is None and not self._waiters.get(session_id)):
            self._holders[session_id] = holder
            return True
        if not wait:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        place = self._place(session_id, holder, reserved=True)
        if place is None:
            place = _Place(holder)
            self._waiters.setdefault(session_id, collections.deque()).append(place)
        place.future = future
        try:
            # shield: a timeout must not cancel the future a release may be completing.
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if future.done():  # granted (or ended) just as the wait ran out
                future.result()
                return True
            self._leave(session_id, place)
            return False
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(session_id, holder)  # it was granted: hand it on
            else:
                self._leave(session_id, place)
            raise
        return True

    def release(self, session_id: str, holder: str) -> None:
        """Give the claim up, granting it to the first in line, or give up the place
        :meth:`reserve` gave ``holder`` and no claim waits in yet; a no-op if ``holder``
        has neither."""
        if self._holders.get(session_id) != holder:
            place = self._place(session_id, holder, reserved=True)
            if place is not None:
                self._leave(session_id, place)
            return
        queue = self._waiters.get(session_id)
        while queue:
            place = queue.popleft()
            if place.future is None or not place.future.done():
                self._holders[session_id] = place.holder
                if place.future is not None:
                    place.future.set_result(None)
                break
        else:
            del self._holders[session_id]
        if not queue:
            self._waiters.pop(session_id, None)

    def delete_session(self, session_id: str) -> None:
        """Forget a deleted session: its claim and places go, and its waiters raise
        :class:`~wingspan.NotFoundError`."""
        self._holders.pop(session_id, None)
        self._end(self._waiters.pop(session_id, ()), NotFoundError,
                  f"session {session_id!r} was deleted while waiting for its claim")

    def close(self) -> None:
        """Drop every claim and place; every waiter raises :class:`~wingspan.StoreError`."""
        self._holders.clear()
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            self._end(queue, StoreError, "the store was closed while waiting for a claim")

    def _place(self, session_id: str, holder: str, *, reserved: bool = False) -> _Place | None:
        """``holder``'s place in the session's queue (only one no claim waits in yet, if
        ``reserved``)."""
        for place in self._waiters.get(session_id, ()):
            if place.holder == holder and not (reserved and place.future is not None):
                return place
        return None

    def _leave(self, session_id: str, place: _Place) -> None:
        queue = self._waiters.get(session_id)
        if queue is not None and place in queue:
            queue.remove(place)
            if not queue:
                del self._waiters[session_id]

    @staticmethod
    def _end(queue: Iterable[_Place], error: type[Exception], message: str) -> None:
        for place in queue:
            if place.future is not None and not place.future.done():
                place.future.set_exception(error(message))
