"""The run manager: runs belong to the server, not to the request that started them.

Each message starts one asyncio task owned by the server. It drives
:meth:`wingspan.Session.stream` to its end and fans the events out to subscribers (streaming
clients), each with a bounded queue: a subscriber that falls too far behind is disconnected
with an ``error`` frame, never the run. A blocking request waits for the run's outcome; a
client going away never cancels the run. :meth:`RunManager.abort` cancels it, and the
kernel keeps the history valid.

Runs on one session never overlap: the session's store claim serialises them, first come,
first served (across processes for stores that share a database). While a run waits for its
claim it is *queued*; once granted it is *active* (what ``POST .../abort`` cancels).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from typing import Any

import attrs

from wingspan import (
    Agent,
    Done,
    ErrorEvent,
    ErrorInfo,
    Message,
    ProviderError,
    Session,
    Store,
    StreamEvent,
    WingspanError,
    new_id,
)

__all__ = ["Run", "RunManager", "Subscriber", "TrackingStore"]

log = logging.getLogger("wingspan.http")

ABORTED = "aborted"
STOPPING = "server_stopping"
TOO_SLOW = "too_slow"
TIMEOUT = "timeout"

#: The run whose task is running: lets :class:`TrackingStore` see which run claimed.
_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "wingspan_http_run", default=None
)


@attrs.define(eq=False)
class Subscriber:
    """One streaming client of a run."""

    queue: asyncio.Queue[StreamEvent]
    #: Set when the subscriber fell behind: it gets this terminal event instead of the rest.
    dropped: ErrorEvent | None = None
    wakeup: asyncio.Event = attrs.field(factory=asyncio.Event)

    async def next_event(self, timeout: float) -> StreamEvent | None:
        """The next event, or ``None`` after ``timeout`` seconds of silence."""
        event = self.ready()
        if event is not None:
            return event
        self.wakeup.clear()
        try:
            async with asyncio.timeout(timeout):
                await self.wakeup.wait()
        except TimeoutError:
            return None
        return self.ready()

    def ready(self) -> StreamEvent | None:
        """The next event if one is waiting, without waiting: ``None`` if none is."""
        if self.dropped is not None:
            return self.dropped
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def put(self, event: StreamEvent) -> bool:
        """:returns: ``False`` when the queue is full (the subscriber is then dropped)."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        self.wakeup.set()
        return True

    def end(self, event: ErrorEvent) -> None:
        """Replace whatever is pending with a terminal ``event``."""
        self.dropped = event
        self.wakeup.set()


@attrs.define(eq=False)
class Run:
    """One message being run on a session."""

    session_id: str
    agent_id: str | None
    buffer: int
    #: The run's id (the kernel's RunStream and RunRecord use the same).
    run_id: str = attrs.field(factory=new_id)
    active: bool = False
    task: asyncio.Task[None] | None = None
    outcome: Done | ErrorEvent | None = None
    subscribers: set[Subscriber] = attrs.field(factory=set)
    finished: asyncio.Event = attrs.field(factory=asyncio.Event)
    #: Why the run was cancelled, when it was (``aborted``, ``server_stopping``).
    cancel_reason: str | None = None

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(queue=asyncio.Queue(self.buffer))
        if self.outcome is not None:
            subscriber.put(self.outcome)
        else:
            self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, event: StreamEvent) -> bool:
        """Queue ``event`` for every subscriber, dropping those whose queue is full.

        :returns: whether a subscriber has a backlog (an eighth of its buffer or more), so
            that the run should let the streaming clients catch up before going on.
        """
        behind = False
        backlog = max(1, self.buffer // 8)
        for subscriber in list(self.subscribers):
            if not subscriber.put(event):
                self.subscribers.discard(subscriber)
                subscriber.end(_error(
                    TOO_SLOW,
                    "this client fell too far behind the run and was disconnected; the run "
                    "goes on and is saved (GET the session for its history)",
                ))
            elif subscriber.queue.qsize() >= backlog:
                behind = True
        return behind

    async def wait(self) -> Done | ErrorEvent:
        """The run's outcome; cancelling the waiter never cancels the run."""
        await self.finished.wait()
        assert self.outcome is not None
        return self.outcome


def _error(code: str, message: str) -> ErrorEvent:
    return ErrorEvent(error=ErrorInfo(code=code, message=message))


class TrackingStore:
    """The server's store, seen through a thin wrapper that notes, for the run whose task
    makes the call, when its session claim is granted: a run is *active* (what
    ``POST .../abort`` cancels) from then until it releases the claim, while a queued run
    waits its turn inside :meth:`Session.stream`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def wrapped(self) -> Store:
        return self._store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        granted = await self._store.claim_session(session_id, holder, wait=wait, timeout=timeout)
        run = _current_run.get()
        if granted and run is not None and run.run_id == holder:
            run.active = True
        return granted

    async def release_session(self, session_id: str, holder: str) -> None:
        run = _current_run.get()
        if run is not None and run.run_id == holder:
            run.active = False
        await self._store.release_session(session_id, holder)


@attrs.define(eq=False)
class RunManager:
    """Starts, tracks, aborts and drains the server's runs."""

    buffer: int = 1024
    #: Seconds a run may last before it is stopped (``None``: no limit).
    max_run_time: float | None = None
    _runs: dict[str, list[Run]] = attrs.field(factory=dict, init=False)
    _shutdown: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    stopping: bool = False

    def start(self, session: Session, message: str | Message, agent: Agent) -> Run:
        """Start running ``message`` on ``session`` now; the run waits its turn for the
        session's claim inside its own task."""
        run = Run(session_id=session.id, agent_id=agent.id, buffer=self.buffer)
        context = contextvars.copy_context()
        context.run(_current_run.set, run)
        run.task = asyncio.create_task(self._drive(run, session, message, agent), context=context)
        self._runs.setdefault(session.id, []).append(run)
        return run

    async def _drive(
        self, run: Run, session: Session, message: str | Message, agent: Agent
    ) -> None:
        outcome: Done | ErrorEvent | None = None
        try:
            # The limit counts from admission: a run queued behind others spends its time too.
            async with asyncio.timeout(self.max_run_time), session.stream(
                    message, agent=agent, run_id=run.run_id) as events:
                async for event in events:
                    if type(event) is Done:
                        outcome = event
                    if run.publish(event):
                        # Events that come without a wait (a scripted provider, a burst
                        # from one network read) would otherwise fill the queue of a client
                        # reading as fast as it can before it is ever scheduled. One turn
                        # of the loop lets it send its backlog; a client that really is
                        # slow still falls behind and is dropped, never waited for.
                        await asyncio.sleep(0)
        except TimeoutError:
            outcome = _error(TIMEOUT, f"the run went over this server's limit of "
                             f"{self.max_run_time:g} s (its max_run_time setting) and was "
                             "stopped; every finished step is saved")
            log.warning("run on session %s stopped after %g s", run.session_id,
                        self.max_run_time)
        except asyncio.CancelledError:
            if run.cancel_reason == STOPPING:
                outcome = _error(STOPPING, "the server is stopping; the run was aborted and "
                                 "every finished step is saved")
            else:
                outcome = _error(ABORTED, "the run was aborted; every finished step is saved")
            raise
        except ProviderError as exc:
            outcome = _error("provider_error", str(exc))
        except WingspanError as exc:
            outcome = _error("internal", f"{type(exc).__name__}: {exc}")
            log.warning("run on session %s failed: %s", run.session_id, outcome.error.message)
        except Exception as exc:
            log.exception("run on session %s failed unexpectedly", run.session_id)
            outcome = _error("internal", f"the run failed: {type(exc).__name__}")
        finally:
            if outcome is None:  # pragma: no cover - the loop always ends with Done or raises
                outcome = _error("internal", "the run ended without a result")
            run.outcome = outcome
            run.active = False
            if type(outcome) is ErrorEvent:
                run.publish(outcome)
            run.subscribers.clear()
            run.finished.set()
            runs = self._runs.get(run.session_id, [])
            if run in runs:
                runs.remove(run)
            if not runs:
                self._runs.pop(run.session_id, None)

    def runs_of(self, session_id: str) -> Sequence[Run]:
        return tuple(self._runs.get(session_id, ()))

    def active_run(self, session_id: str) -> Run | None:
        return next((r for r in self._runs.get(session_id, ()) if r.active), None)

    def all_runs(self) -> list[Run]:
        return [run for runs in self._runs.values() for run in runs]

    async def abort(self, run: Run, reason: str = ABORTED) -> None:
        """Cancel ``run`` and wait until it has ended (its history saved valid)."""
        if run.task is not None and not run.task.done():
            run.cancel_reason = reason
            run.task.cancel()
        await run.finished.wait()

    async def abort_session(self, session_id: str) -> None:
        """Cancel every run of a session, queued or active."""
        await asyncio.gather(*(self.abort(run) for run in self.runs_of(session_id)))

    def end_streams(self, event: ErrorEvent) -> None:
        """Tell every streaming client that the server is stopping."""
        for run in self.all_runs():
            for subscriber in list(run.subscribers):
                subscriber.end(event)
            run.subscribers.clear()

    def shutdown(self, grace: float) -> asyncio.Task[None]:
        """Stop taking runs, end every stream with an ``error`` frame saying so, and drain
        the runs within ``grace`` seconds. Idempotent: every call returns the same task."""
        if self._shutdown is None:
            self.stopping = True
            self.end_streams(_error(STOPPING, "the server is stopping; the run goes on for "
                                    "a grace period and is saved either way"))
            self._shutdown = asyncio.create_task(self.drain(grace))
        return self._shutdown

    async def drain(self, grace: float) -> None:
        """Let the runs finish for up to ``grace`` seconds, then abort the rest."""
        runs = self.all_runs()
        if runs:
            waits = [asyncio.ensure_future(run.finished.wait()) for run in runs]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for waiter in pending:
                waiter.cancel()
        left = self.all_runs()
        if left:
            log.warning("aborting %d run(s) still going after %.0f s", len(left), grace)
            await asyncio.gather(*(self.abort(run, STOPPING) for run in left))
