"""The server's side of runs: a thin face on the kernel's (:mod:`wingspan.runs`).

A message is admitted to its session in the store (:meth:`wingspan.Session.start`) and runs
in a task of its own, owned by the kernel, not by the request: a client going away never
cancels it. Streaming clients follow the session's event log in the store, so they can come
back with ``Last-Event-ID`` — to this process or another sharing the store — and get every
event after it. Aborts go through :class:`wingspan.runs.Runs`, which reaches runs of other
processes through the store.

This module adds what only a server has: a limit on how long a run may last
(``max_run_time``), and shut-down (no new runs, streams ended with an ``error`` frame
saying so, runs drained for a grace period).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import attrs

from wingspan import (
    FINISHED_STATUSES,
    Agent,
    ErrorInfo,
    IfBusy,
    Message,
    RunRecord,
    Runtime,
    Session,
    Store,
)
from wingspan.runs import ABORTED, RunHandle

__all__ = ["STOPPING", "TIMEOUT", "RunManager", "runs_of"]

log = logging.getLogger("wingspan.http")

STOPPING = "server_stopping"
TIMEOUT = "timeout"

#: The terminal error of a stream the server ends as it stops.
STREAM_STOPPED = ErrorInfo(
    code=STOPPING,
    message="the server is stopping; the run goes on for a grace period and is saved either "
            "way (follow it again with Last-Event-ID)",
)
RUN_STOPPED = ErrorInfo(
    code=STOPPING, message="the server is stopping; the run was aborted and every finished "
                           "step is saved")


@attrs.define(eq=False)
class RunManager:
    """Admits, limits, aborts and drains the server's runs."""

    runtime: Runtime
    #: Seconds a run may last from its admission before it is stopped (``None``: no limit).
    max_run_time: float | None = None
    stopping: bool = False
    #: Set as the server stops: every stream ends with an ``error`` frame saying so.
    stopped: asyncio.Event = attrs.field(factory=asyncio.Event)
    _shutdown: asyncio.Task[None] | None = attrs.field(default=None, init=False)

    async def admit(
        self, session: Session, message: str | Message, agent: Agent, *, if_busy: IfBusy,
        idempotency_key: str | None, request_hash: str,
    ) -> RunHandle:
        """Admit ``message`` on ``session``; it runs once its turn comes."""
        handle = await session.start(message, agent=agent, if_busy=if_busy,
                                     idempotency_key=idempotency_key,
                                     request_hash=request_hash)
        if handle.task is not None and self.max_run_time is not None:
            limit = self.max_run_time
            reason = ErrorInfo(code=TIMEOUT, message=(
                f"the run went over this server's limit of {limit:g} s (its max_run_time "
                "setting) and was stopped; every finished step is saved"))
            timer = asyncio.get_running_loop().call_later(
                limit, lambda: asyncio.ensure_future(self._time_out(handle, reason)))
            handle.task.add_done_callback(lambda _: timer.cancel())
        return handle

    async def _time_out(self, handle: RunHandle, reason: ErrorInfo) -> None:
        if handle.task is not None and not handle.task.done():
            log.warning("run %s on session %s stopped after %g s", handle.id,
                        handle.session_id, self.max_run_time)
            await handle.abort(reason)

    async def abort(self, store: Store, run_id: str) -> None:
        """Abort a run wherever it executes (see :meth:`wingspan.runs.Runs.abort`)."""
        await self.runtime.runs.abort(store, run_id, ABORTED)

    async def abort_session(self, store: Store, session_id: str) -> None:
        """Abort every unfinished run of a session: those here at once (waiting until they
        have ended), those of other processes through the store."""
        unfinished = [run.id async for run in runs_of(store, session_id)
                      if run.status not in FINISHED_STATUSES]
        await asyncio.gather(*(self.runtime.runs.abort(store, run_id) for run_id in unfinished),
                             return_exceptions=True)  # one that finished meanwhile: fine

    def shutdown(self, grace: float) -> asyncio.Task[None]:
        """Stop taking runs, end every stream with an ``error`` frame saying so, and drain
        the runs within ``grace`` seconds. Idempotent: every call returns the same task."""
        if self._shutdown is None:
            self.stopping = True
            self.stopped.set()
            self._shutdown = asyncio.create_task(self.runtime.runs.drain(grace, RUN_STOPPED))
        return self._shutdown


async def runs_of(store: Store, session_id: str) -> AsyncIterator[RunRecord]:
    """Every run of a session, newest first, page by page."""
    cursor = None
    while True:
        page = await store.list_runs(session_id, limit=500, cursor=cursor)
        for run in page.items:
            yield run
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
