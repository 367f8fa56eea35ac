"""Runs: admitted to a session in the store, executed by the loop, followed through the log.

A run's events are appended to its session's event log as they happen (:class:`EventLog`,
used by the loop), so any process sharing the store can replay and follow them
(:func:`follow`). :meth:`wingspan.Session.start` admits a run and executes it in a task of
its own, returning a :class:`RunHandle`; :class:`Runs` keeps the handles of one runtime, so
a run can be aborted by id: at once when it runs here, through the store when it runs in
another process (which notices within :data:`ABORT_POLL` seconds, or at once with a store
that tells it: ``wait_run_change``, see :func:`watch_for_abort`).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import logging
import types
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Sequence
from typing import Any

import attrs

from .errors import ConflictError, NotFoundError, ProviderError, StoreError, WingspanError
from .ids import new_id
from .store import RunRecord, Store, utc_now
from .storekit import KeyValueStore
from .types import (
    FINISHED_STATUSES,
    Done,
    ErrorEvent,
    ErrorInfo,
    LogEvent,
    LoggedEvent,
    Message,
    Result,
    Resync,
    RunFinished,
    RunQueued,
    RunStarted,
    RunStatus,
)

__all__ = [
    "ABORTED",
    "ABORT_POLL",
    "EventLog",
    "RunControl",
    "RunFailed",
    "RunHandle",
    "Runs",
    "before_run",
    "follow",
    "one_by_one",
    "run_error",
    "shielded",
]

log = logging.getLogger("wingspan.runs")

#: Seconds between two looks, by the process running a run, at whether another process
#: asked to abort it.
ABORT_POLL = 0.5
#: Seconds a follower of a running run waits for news before it checks that the run's
#: process is still there (a dead one's run is then recorded ``interrupted``).
LIVENESS_POLL = 1.0

#: Events read at first by a replay: few, so that its first frames go out at once, before
#: the rest of a long log is read (in batches of up to ``batch``).
FIRST_BATCH = 32
#: The most events a run's replay reads to tell whether its cursor falls in a pruned range.
MAX_GAP_READ = 1000

#: The terminal error of an aborted run.
ABORTED = ErrorInfo(code="aborted", message="the run was aborted; every finished step is saved")


def run_error(exc: BaseException) -> ErrorInfo:
    """The terminal ``error`` event's content for a run that ended with ``exc``."""
    if isinstance(exc, ProviderError):
        return ErrorInfo(code="provider_error", message=str(exc))
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return ABORTED
    if isinstance(exc, WingspanError):
        return ErrorInfo(code="internal", message=f"{type(exc).__name__}: {exc}")
    return ErrorInfo(code="internal", message=f"the run failed: {type(exc).__name__}: {exc}")


async def shielded(coro: Any) -> Any:
    """Finish ``coro`` even if the surrounding task is cancelled again meanwhile, so that
    clean-up (the history's repair, the run's record) is never half done; when it is,
    ``CancelledError`` is raised once ``coro`` has succeeded (else its own error).

    A coroutine starts at once, here: one that finishes without waiting (a store write
    committed on the event loop, the usual case) costs no task and no turns of the loop;
    only the rest of one that waits goes to a task (a cancellation can reach the caller
    only while it waits, so the first stretch needs no shield).
    """
    if type(coro) is not types.CoroutineType:  # a future, say
        task = asyncio.ensure_future(coro)
    else:
        try:
            waiting = coro.send(None)
        except StopIteration as finished:
            return finished.value
        task = asyncio.ensure_future(_Resumed(coro, waiting))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class _Resumed(collections.abc.Coroutine[Any, Any, Any]):
    """A coroutine started elsewhere, for a task to go on with: the task's first step
    gives it what the coroutine yielded when it stopped (the future it waits for, or
    ``None`` for a bare turn of the loop); every later step, and a cancellation even
    before the first, goes to the coroutine itself."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting: Any = [waiting]  # a list: what it yielded may be None

    def send(self, value: Any) -> Any:
        if self._waiting:
            return self._waiting.pop()
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._waiting = []
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    @property
    def __name__(self) -> str:  # a task's repr names the coroutine
        return getattr(self._coro, "__name__", type(self._coro).__name__)

    def __await__(self) -> Generator[Any, None, Any]:
        thrown: BaseException | None = None
        while True:
            try:
                yielded = self.send(None) if thrown is None else self.throw(thrown)
            except StopIteration as finished:
                return finished.value
            thrown = None
            try:
                yield yielded
            except BaseException as exc:
                thrown = exc


class RunControl:
    """What the owner of a run and its loop tell each other: why the owner cancelled it
    (the terminal error's code and message, e.g. a server's ``timeout``), set just before
    cancelling, and whether the loop is ending already (its clean-up has begun: the run
    records its own end, and a cancel then would only turn a completed run's result into
    an abort), and whether it has begun at all (a task cancelled before its first step
    never runs its loop, so its owner ends the run: ``abandoned`` is that ending)."""

    __slots__ = ("abandoned", "ending", "entered", "reason", "suspended")

    def __init__(self) -> None:
        self.reason: ErrorInfo | None = None
        self.ending = False
        self.entered = False
        self.abandoned: asyncio.Future[None] | None = None
        #: Cancelled to be left as it stands in the store (:meth:`RunHandle.suspend`).
        self.suspended = False


class EventLog:
    """The loop's writer of one run's events to its session's log: group commit.

    :meth:`add` never waits. The first event is written as soon as the loop gets control
    (the run awaits something: a model's next token, a tool); events that come while a
    write is in flight go together in the next one, so a fast stream costs few writes and a
    slow one no delay. :meth:`flush` waits until everything added is stored (the loop calls
    it at the end of each step) and raises what a write raised; a step that ends before
    its first event was written stores all of them with its turn, in one write.
    """

    __slots__ = ("_failure", "_kick", "_pending", "_run_id", "_session_id", "_store",
                 "_writer")

    @property
    def run_id(self) -> str:
        return self._run_id

    def __init__(self, store: Store, session_id: str, run_id: str) -> None:
        self._store = store
        self._session_id = session_id
        self._run_id = run_id
        self._pending: list[LogEvent] = []
        self._writer: asyncio.Task[None] | None = None
        #: The write scheduled for the events added since the last one, not started yet.
        self._kick: asyncio.Handle | None = None
        self._failure: BaseException | None = None

    def add(self, event: LogEvent) -> None:
        self._pending.append(event)
        if self._kick is None and self._writer is None and self._failure is None:
            self._kick = asyncio.get_running_loop().call_soon(self._start_write)

    def _cancel_kick(self) -> None:
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None

    def _start_write(self) -> None:
        self._kick = None
        if self._pending and self._writer is None and self._failure is None:
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._store.append_events(self._session_id, self._run_id, batch)
        except BaseException as exc:  # kept for flush(); the events stay for finish_run
            self._failure = exc
            self._pending[:0] = batch
        finally:
            self._writer = None

    async def flush(self, messages: Sequence[Message] = ()) -> None:
        """Wait until every event added so far is stored, and store ``messages`` (the
        step's turn) with the last of them, in one write.

        :raises StoreError: when a write failed (the events not stored are kept for
            :meth:`close`; the messages are not stored).
        :raises CancelledError: only once everything is stored (the flush is shielded), so
            a cancelled caller knows the messages are in the store.
        """
        self._cancel_kick()  # the events not written yet go with the messages
        await shielded(self._flush(messages))

    async def _flush(self, messages: Sequence[Message]) -> None:
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._failure is None and (self._pending or messages):
            batch, self._pending = self._pending, []
            try:
                await self._store.append_events(self._session_id, self._run_id, batch,
                                                messages)
            except Exception as exc:
                self._pending[:0] = batch
                self._failure = exc
        if self._failure is not None:
            failure = self._failure
            raise StoreError(f"the event log of run {self._run_id} could not be written: "
                             f"{failure}") from failure

    def hold(self) -> None:
        """Start no write from now on: the events not written yet wait for :meth:`close`
        (the run is ending, and its end stores them with it, in one write)."""
        self._cancel_kick()
        self._failure = self._failure or StoreError("the event log is closed")

    async def close(self) -> list[LogEvent]:
        """Stop writing: wait for the write in flight, and give back what is not stored
        (for the run's last, atomic write, :meth:`Store.finish_run`). Never raises."""
        self._cancel_kick()
        with contextlib.suppress(BaseException):
            while self._writer is not None:
                await asyncio.shield(self._writer)
        self._failure = self._failure or StoreError("the event log is closed")
        pending, self._pending = self._pending, []
        return pending


async def follow(
    store: Store,
    session_id: str,
    *,
    after: int = 0,
    run_id: str | None = None,
    heartbeat: float | None = None,
    batch: int = 1000,
    task: asyncio.Future[Result] | None = None,
) -> AsyncGenerator[list[LoggedEvent], None]:
    """The session's events after seq ``after``, in batches: those stored, then the live
    ones as they are appended (by any process sharing the store). A batch is what one read
    found, so a reader that is behind catches up in few steps.

    :param run_id: only this run's events; the iterator ends after its ``run_finished``.
        Without it, the session's events go on until the caller stops.
    :param heartbeat: yield an empty batch after this many seconds without an event (for
        a keep-alive), instead of staying silent.
    :param task: the task executing run ``run_id`` in this process, if it does: should it
        end without its last events in the log (a store that could not write them), the
        iterator ends with its terminal event all the same (with the seq of the last event
        read, as it has none of its own).

    A replay whose cursor falls in a pruned range begins with a :class:`~wingspan.Resync`
    (its seq is the one before ``next_seq``, a cursor that goes on from there).
    """
    cursor = after
    first = True
    ended = False  # whether the task was seen done after a read (then one more is made)
    interval = heartbeat if heartbeat is not None else LIVENESS_POLL
    limit = min(batch, FIRST_BATCH)  # the first frames of a replay go out before the rest is read
    while True:
        entries = await store.read_events(session_id, after=cursor, limit=limit, run_id=run_id)
        limit = batch
        if entries:
            if first and cursor > 0 and entries[0].seq > cursor + 1 and (
                    run_id is None or await _pruned_after(store, session_id, cursor, entries[0])):
                entries.insert(0, LoggedEvent(seq=entries[0].seq - 1, run_id=entries[0].run_id,
                                              event=Resync(next_seq=entries[0].seq)))
            first = False
            if run_id is not None:
                for position, entry in enumerate(entries):
                    if type(entry.event) is RunFinished:
                        yield entries[:position + 1]
                        return
            yield entries
            cursor = entries[-1].seq
            continue
        first = False
        if task is not None and task.done():
            if not ended:
                # It may have ended after that read began, its last events stored meanwhile
                # (a store whose commits are not on this thread): read once more.
                ended = True
                continue
            yield [LoggedEvent(seq=cursor, run_id=run_id or "", event=_terminal(task))]
            return
        if run_id is not None and await _ended_unlogged(store, session_id, run_id, cursor):
            return
        waiting = store.wait_events(session_id, after=cursor, timeout=interval)
        if task is None:
            last = await waiting
        else:
            wait = asyncio.ensure_future(waiting)
            await asyncio.wait((wait, task), return_when=asyncio.FIRST_COMPLETED)
            if not wait.done():
                wait.cancel()
                continue  # the run ended here: read what it stored last
            last = wait.result()
        if last <= cursor and heartbeat is not None:
            yield []


def before_run(run: RunRecord) -> int:
    """The seq just before ``run``'s first event (its ``run_queued``): where to follow it
    from its start, without reading the session's log before it."""
    return max((run.first_seq or 1) - 1, 0)


async def one_by_one(batches: AsyncIterator[list[LoggedEvent]]) -> AsyncIterator[LoggedEvent]:
    """The entries of :func:`follow`'s batches, one at a time."""
    async for entries in batches:
        for entry in entries:
            yield entry


async def _pruned_after(store: Store, session_id: str, cursor: int, next_: LoggedEvent) -> bool:
    """Whether a run's replay after ``cursor`` skips pruned events of that run before
    ``next_``, its next event kept. Seqs between them are normal there (other runs'
    admissions), but a run's deltas are pruned only while it runs, and then it is the only
    run that makes deltas: so if it had started by ``cursor`` (``next_`` is neither its
    ``run_queued`` nor its ``run_started``), a seq missing from the session's log between
    the two was one of its own."""
    if type(next_.event) in (RunQueued, RunStarted):
        return False
    gap = min(next_.seq - cursor - 1, MAX_GAP_READ)
    between = await store.read_events(session_id, after=cursor, limit=gap)
    return sum(1 for entry in between if entry.seq < next_.seq) < gap


def _terminal(task: asyncio.Future[Result]) -> Done | ErrorEvent:
    """The terminal event of a run that ended in ``task`` (when its log lacks it)."""
    if task.cancelled():
        return ErrorEvent(error=ABORTED)
    failure = task.exception()
    if failure is not None:
        return ErrorEvent(error=failure.error if isinstance(failure, RunFailed)
                          else run_error(failure))
    result = task.result()
    return Done(usage=result.usage, steps=result.steps, response=result.response,
                tool_calls=result.tool_calls, stop_reason=result.stop_reason,
                run_id=result.run_id)


async def _ended_unlogged(store: Store, session_id: str, run_id: str, cursor: int) -> bool:
    """Whether a followed run has ended with nothing more to read; a run whose process has
    died is recovered on the way (a claim probe: the store records it ``interrupted``)."""
    run = await store.get_run(run_id)
    if run.status in FINISHED_STATUSES:
        return run.last_seq is None or cursor >= run.last_seq
    if run.status in ("running", "waiting"):
        probe = f"probe-{new_id()}"
        with contextlib.suppress(WingspanError):
            if await store.claim_session(session_id, probe, wait=False):
                await store.release_session(session_id, probe)
    return False


@attrs.define(eq=False)
class RunHandle:
    """A run of a session: its id, its record as admitted, and ways to follow, await and
    abort it. A handle made by :meth:`wingspan.Session.start` in this process executes the
    run in a task of its own; a handle of a run executing elsewhere follows it through the
    store."""

    record: RunRecord
    store: Store
    #: the task executing the run here (``None``: another process executes it)
    task: asyncio.Task[Result] | None = None
    control: RunControl = attrs.field(factory=RunControl)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def local(self) -> bool:
        """Whether the run executes in this process."""
        return self.task is not None

    async def status(self) -> str:
        """The run's status now, as stored."""
        return (await self.store.get_run(self.id)).status

    def events(self, *, after: int = 0) -> AsyncIterator[LoggedEvent]:
        """The run's events from the log (after seq ``after``), then live, to its
        ``run_finished``."""
        return one_by_one(follow(self.store, self.session_id,
                                 after=after or before_run(self.record), run_id=self.id))

    async def result(self) -> Result:
        """Wait for the run's end; cancelling the wait never cancels the run.

        :raises ProviderError: when the provider failed; :raises WingspanError: for any
            other failure (its message says what ended the run).
        """
        if self.task is not None:
            try:
                return await asyncio.shield(self.task)
            except asyncio.CancelledError:
                if not self.task.cancelled():
                    raise  # the wait itself was cancelled
                raise RunFailed(self.control.reason or ABORTED) from None
        terminal: Done | ErrorEvent | None = None
        async for entry in self.events():
            if type(entry.event) in (Done, ErrorEvent):
                terminal = entry.event  # type: ignore[assignment]
        return outcome_result(terminal, self.id)

    async def suspend(self) -> bool:
        """Stop executing the run here, leaving it in the store as it stands, when it waits
        for a permission answer and its store keeps such runs past this process (a store
        for several processes: the SQLite store parks its claim as it closes, and whoever
        answers takes it up — :meth:`Store.adopt_run`). :returns: whether it did; otherwise
        nothing was done."""
        task = self.task
        if task is None or task.done() or self.control.ending or isinstance(
                self.store, KeyValueStore) or (await self.store.get_run(self.id)).status != \
                "waiting":
            return False
        self.control.suspended = True
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return True

    async def abort(self, reason: ErrorInfo = ABORTED) -> None:
        """Stop the run and wait until it has ended (here), or ask its process to.

        :raises ConflictError: when it has already finished.
        """
        if self.task is not None:
            if self.control.ending:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self.task)  # it is recording its own end
            if self.task.done():
                raise ConflictError(f"run {self.id} has already finished")
            self.control.reason = reason
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
            if self.control.abandoned is not None:
                # Cancelled before its first step, it never ran its loop: its owner ends
                # the run (its claim or place in line goes too, so the runs after it get
                # their turn), in a done-callback registered before this wait's, so set
                # by now; wait for that.
                await asyncio.shield(self.control.abandoned)
            return
        await self.store.abort_run(self.id)


def outcome_result(terminal: Done | ErrorEvent | None, run_id: str) -> Result:
    """The :class:`~wingspan.Result` of a run's terminal event, or the error it ended with."""
    if type(terminal) is Done:
        return terminal.result
    if terminal is None:
        raise WingspanError(f"run {run_id} ended without a terminal event")
    assert type(terminal) is ErrorEvent
    if terminal.error.code == "provider_error":
        raise ProviderError(terminal.error.message)
    raise RunFailed(terminal.error)


class RunFailed(WingspanError):
    """A run ended with an ``error`` event (its :attr:`error` has the code and message)."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


class Runs:
    """The runs executing in this process (of one runtime), by id: to abort one by id,
    and to let them finish, or stop them, at shut-down."""

    def __init__(self) -> None:
        self._handles: dict[str, RunHandle] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: RunHandle) -> None:
        self._handles[handle.id] = handle
        assert handle.task is not None
        handle.task.add_done_callback(lambda _: self._handles.pop(handle.id, None))

    def get(self, run_id: str) -> RunHandle | None:
        """The handle of a run executing here, or ``None``."""
        return self._handles.get(run_id)

    def of_session(self, session_id: str) -> Sequence[RunHandle]:
        return [h for h in self._handles.values() if h.session_id == session_id]

    async def abort(self, store: Store, run_id: str, reason: ErrorInfo = ABORTED) -> RunRecord:
        """Abort a run wherever it executes: here at once; in another process sharing the
        store through it (that process stops it within :data:`ABORT_POLL` seconds).

        :returns: the run's record afterwards.
        :raises NotFoundError: for an unknown run; :raises ConflictError: when it has
            already finished.
        """
        handle = self._handles.get(run_id)
        if handle is not None and handle.task is not None and not handle.task.done():
            await handle.abort(reason)
            return await store.get_run(run_id)
        return await store.abort_run(run_id)

    async def drain(self, grace: float, reason: ErrorInfo) -> None:
        """Let the runs finish for up to ``grace`` seconds, then abort the rest — but for
        those waiting for a person's answer, which are suspended (:meth:`RunHandle.suspend`)
        to go on wherever the answer is given."""
        await self._suspend_waiting()
        tasks = [h.task for h in self._handles.values() if h.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        await self._suspend_waiting()
        left = [h for h in self._handles.values() if h.task is not None and not h.task.done()]
        if left:
            log.warning("aborting %d run(s) still going after %.0f s", len(left), grace)
            await asyncio.gather(*(h.abort(reason) for h in left), return_exceptions=True)


    async def _suspend_waiting(self) -> None:
        running = [h for h in self._handles.values() if h.task is not None and not h.task.done()]
        suspended = await asyncio.gather(*(h.suspend() for h in running), return_exceptions=True)
        if any(done is True for done in suspended):
            log.info("%d run(s) waiting for a permission answer left to be taken up where it "
                     "is given", sum(done is True for done in suspended))


#: Clean-ups started from callbacks, kept until they are done (the loop keeps weak refs).
_PENDING: set[asyncio.Future[None]] = set()


def keep_task(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """Run ``coro`` in a task of its own, kept referenced until it is done."""
    future = asyncio.ensure_future(coro)
    _PENDING.add(future)
    future.add_done_callback(_PENDING.discard)
    return future


async def abandon(store: Store, admitted: RunRecord, reason: ErrorInfo) -> None:
    """Finish a run that never ran its loop (its wait for its turn failed or was
    cancelled, or it was cancelled before it began), unless the store finished it already,
    and give its claim or place up; never raises."""
    status: RunStatus = "aborted" if reason.code == "aborted" else "failed"
    await record_end(
        store,
        attrs.evolve(admitted, status=status, finished_at=utc_now(), error=reason.message),
        [ErrorEvent(error=reason)],
    )


async def record_end(
    store: Store, run: RunRecord, events: Sequence[LogEvent], messages: Sequence[Message] = (),
) -> RunRecord | None:
    """:meth:`Store.finish_run`, a failure logged, not raised. :returns: the run as stored,
    or ``None`` when it failed."""
    try:
        return await store.finish_run(run, events, messages)
    except Exception as exc:
        log.warning("session %s: recording run %s as %s failed: %s: %s",
                    run.session_id, run.id, run.status, type(exc).__name__, exc)
        return None


#: Seconds between two looks at a run's record for a store that tells of its changes
#: (``wait_run_change``): a safety net, not the way an abort is learnt of.
CHANGE_POLL = 5.0


async def watch_for_abort(store: Store, run_id: str, task: asyncio.Task[Result],
                          control: RunControl) -> None:
    """Until ``task`` ends: cancel it when another process asks the store to abort the run
    (or the store finished it meanwhile, e.g. aborted while it waited its turn).

    A store that can tell when a run's record changes (the optional
    ``async wait_run_change(run_id, *, timeout)``, which returns when it may have, or after
    ``timeout`` seconds) is waited on; any other is looked at every :data:`ABORT_POLL`
    seconds."""
    wait_change = getattr(store, "wait_run_change", None)
    while not task.done() and not control.ending:
        if wait_change is None:
            await asyncio.sleep(ABORT_POLL)
        else:
            await wait_change(run_id, timeout=CHANGE_POLL)
        try:
            run = await store.get_run(run_id)
        except NotFoundError:
            run = None  # its session was deleted
        except WingspanError:
            continue
        if run is None or run.abort_requested or run.status in FINISHED_STATUSES:
            if not task.done() and not control.ending:  # not its own end, recorded
                control.reason = control.reason or ABORTED
                task.cancel()
            return
