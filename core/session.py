"""Sessions and the agent loop.

There is one loop, :meth:`Session.stream`; :meth:`Session.run` drains it and
:meth:`Session.run_sync` runs that without an event loop. The loop keeps the history valid
whatever happens (see :mod:`wingspan.history`): a provider error, a tool exception,
cancellation and the step limit all leave a history the next run accepts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .agent import Agent
from .errors import ConfigError, ConflictError, ProviderError, StoreError, WingspanError
from .history import alternates, alternating, repair_history
from .ids import new_id
from .loop import RunState, ToolRunner, results_message
from .permissions import Approver
from .providers import Accumulator
from .runs import (
    ABORTED,
    EventLog,
    RunControl,
    RunFailed,
    RunHandle,
    abandon,
    follow,
    keep_task,
    one_by_one,
    record_end,
    run_error,
    shielded,
    watch_for_abort,
)
from .store import Admission, IfBusy, RunRecord, SessionRecord, Store, utc_now
from .tools import ToolOutcome, encodable
from .types import (
    Done,
    ErrorEvent,
    ErrorInfo,
    InferenceRequest,
    LogEvent,
    LoggedEvent,
    Message,
    MessageStart,
    Result,
    StreamEvent,
    TextBlock,
)

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["RunStream", "Session"]

T = TypeVar("T")

CANCELLED = "the run was cancelled before this tool call finished"

log = logging.getLogger("wingspan.session")


class Session:
    """A conversation: an id, a work dir, an agent and the history.

    :param agent: the agent that runs by default (each run may name another).
    :param work_dir: the directory tools work in; ``None`` leaves file tools unavailable.
    :param store: persist every message as soon as it exists; without one the session
        lives in memory only.
    :param id: the session's id (default: a new ULID).
    :param history: messages to start from.
    :param title: a title for people.
    :param runtime: whose run-time hooks and tool settings apply (default: the default
        runtime).
    """

    def __init__(
        self,
        *,
        agent: Agent,
        work_dir: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        id: str | None = None,
        history: Sequence[Message] = (),
        title: str = "",
        runtime: Runtime | None = None,
    ) -> None:
        if not isinstance(agent, Agent):
            raise ConfigError(f"Session(agent=...) needs a wingspan.Agent, got {agent!r}")
        self.id = id or new_id()
        self.agent = agent
        self.work_dir = _resolve_work_dir(work_dir)
        self.title = title
        self.store = store
        self._history: list[Message] = list(history)
        self._runtime = runtime
        self._lock = asyncio.Lock()
        self._stored = False
        #: Whether the history here is known to mirror the store's (as of our last write).
        self._synced = False
        #: How many messages at the start of the history are known to alternate turns.
        self._alternating = 0
        self._run: RunStream | None = None
        #: What plugins keep for the session between its runs, here (ToolContext.session_data).
        self.plugin_data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Session {self.id} agent={self.agent.name!r} messages={len(self._history)}>"

    @property
    def history(self) -> tuple[Message, ...]:
        """The messages so far, in order."""
        return tuple(self._history)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            from .runtime import default_runtime

            self._runtime = default_runtime()
        return self._runtime

    @classmethod
    def from_record(
        cls,
        record: SessionRecord,
        *,
        agent: Agent,
        store: Store,
        runtime: Runtime | None = None,
    ) -> Session:
        """A session for a stored record, without reading its history yet: each run loads
        it once it holds the session (what a server does for every message)."""
        session = cls(agent=agent, work_dir=record.work_dir, store=store, id=record.id,
                      title=record.title, runtime=runtime)
        session._stored = True
        return session

    @classmethod
    async def resume(
        cls,
        store: Store,
        session_id: str,
        *,
        agent: Agent,
        runtime: Runtime | None = None,
    ) -> Session:
        """Rebuild a session from its stored history.

        A history cut short by a crash (tool calls without results) is repaired, in the
        store too, so the next run is accepted by every provider. While another run holds
        the session, the history is left to it (the next run here repairs what it must).

        :raises NotFoundError: when the store has no such session.
        """
        record = await store.get_session(session_id)
        session = cls(
            agent=agent,
            work_dir=record.work_dir,
            store=store,
            id=record.id,
            title=record.title,
            runtime=runtime,
        )
        session._stored = session._synced = True
        session._history = await store.load_messages(session_id)
        # Repair only while holding the session: a run in progress (here or in another
        # process) owns the end of the history, and its next run repairs what it must.
        holder = new_id()
        if await store.claim_session(session_id, holder, wait=False):
            try:
                # The claim may have recovered a dead holder's lease, repairing the history.
                if (await store.get_session(session_id)).message_count != len(session._history):
                    session._history = await store.load_messages(session_id)
                await session._repair()
            finally:
                await shielded(_release(store, session_id, holder))
        return session

    # --- running ----------------------------------------------------------------------------

    async def run(
        self, message: str | Message | None = None, *, agent: Agent | None = None,
        approve: Approver | None = None,
    ) -> Result:
        """Run the loop on ``message`` to its end (without one, continue the history: see
        :meth:`stream`).

        :raises ProviderError: when the provider fails (the history stays valid).
        """
        return await _drain(self.stream(message, agent=agent, approve=approve)._loop_events)

    def run_sync(
        self, message: str | Message | None = None, *, agent: Agent | None = None,
        approve: Approver | None = None,
    ) -> Result:
        """:meth:`run` for code without an event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(message, agent=agent, approve=approve))
        raise ConfigError("run_sync() cannot be called from a running event loop; use await run()")

    def stream(
        self,
        message: str | Message | None = None,
        *,
        agent: Agent | None = None,
        run_id: str | None = None,
        approve: Approver | None = None,
    ) -> RunStream:
        """Run the loop on ``message``, yielding its events as they happen.

        Iterate it with ``async for``; it ends with a :class:`~wingspan.Done` event, and
        :attr:`RunStream.result` holds the :class:`~wingspan.Result` then. Use it as an
        ``async with`` block (or call :meth:`RunStream.aclose`) to stop a run early.

        Without ``message`` the run continues the history as it stands: when its last turn
        is the model's with tool calls that have no results yet (a run cut short, left to
        be approved, or a history built so), those calls run first; after a user turn, the
        model answers it. A history that ends with the model's answer has nothing to
        continue (:class:`~wingspan.ConfigError`, raised by the run).

        :param run_id: the run's id (default: a new ULID), known at once as
            :attr:`RunStream.run_id`.
        :param approve: answers the run's permission requests (a tool call a rule says to
            ``ask`` about): called with the :class:`~wingspan.PermissionRequest`, it returns
            ``"allow"``, ``"allow_always"``, ``"deny"`` or a
            :class:`wingspan.permissions.Answer` (sync or async). Without it, a call that
            needs asking ends the run at once with a ``permission_required`` error: nobody
            could answer.
        """
        message = _user_message(message)
        run_id = run_id or new_id()
        approve = _approver(approve)
        return RunStream(self._loop(message, agent or self.agent, run_id, None, RunControl(),
                                    approve), run_id)

    async def start(
        self,
        message: str | Message | None = None,
        *,
        agent: Agent | None = None,
        if_busy: IfBusy = "queue",
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        approve: Approver | None = None,
    ) -> RunHandle:
        """Admit a run of ``message`` to the session in the store, and execute it in a task
        of its own once its turn comes (runs of a session go one at a time, in admission
        order, across every process sharing the store). Returns at once. Without
        ``message``, the run continues the history (see :meth:`stream`).

        :param if_busy: when a run is queued or running already: ``"queue"`` (wait its
            turn), ``"reject"`` (:class:`~wingspan.ConflictError`) or ``"interrupt"``
            (abort the runs ahead, then run this one).
        :param idempotency_key: a repeat with the same key (and ``request_hash``) is the
            first run again, not a new one: its handle is returned, and it is not executed
            twice; with another ``request_hash``, :class:`~wingspan.ConflictError`.
        :param approve: as for :meth:`stream`; without it, the run's permission requests
            wait in the store until answered (:func:`wingspan.permissions.answer`, the
            HTTP server's ``/permissions`` routes), from this process or any other.
        :raises ConfigError: when the session has no store.
        """
        store = self._require_store("start()")
        approve = _approver(approve)
        message = _user_message(message)
        agent = agent or self.agent
        await self._ensure_stored(store)
        admission = await self._admit(store, RunRecord(
            id=new_id(), session_id=self.id, agent_id=agent.id, status="queued",
            started_at=None, idempotency_key=idempotency_key, request_hash=request_hash,
        ), message, if_busy)
        registry = self.runtime.runs
        if not admission.created:
            known = registry.get(admission.run.id)
            return known if known is not None else RunHandle(record=admission.run, store=store)
        return self._launch(store, message, agent, admission, approve)

    async def reenter(
        self, run: RunRecord, *, agent: Agent | None = None, approve: Approver | None = None
    ) -> RunHandle:
        """Execute, in a task of this process, a run of this session that this process
        adopted (:meth:`Store.adopt_run`: its own process ended while it waited for a
        permission answer). It continues under the same run id from the stored history —
        the tool calls it stopped at run again, each asked one with the answer given to its
        request — and its events continue the session's log.

        :raises ConfigError: when the session has no store, or ``run`` is not one of its
            unfinished runs.
        """
        store = self._require_store("reenter()")
        approve = _approver(approve)
        if run.session_id != self.id or run.status not in ("running", "waiting"):
            raise ConfigError(f"reenter() takes an unfinished run of session {self.id}, got "
                              f"run {run.id} ({run.status}) of session {run.session_id}")
        self._history[:] = await store.load_messages(self.id)
        self._synced, self._alternating, self._stored = True, 0, True
        admission = Admission(run=run, created=False, claimed=True, started=True)
        return self._launch(store, None, agent or self.agent, admission, approve)

    def _launch(self, store: Store, message: Message | None, agent: Agent,
                admission: Admission, approve: Approver | None) -> RunHandle:
        """Execute the admitted run in a task of its own, watched for aborts."""
        registry = self.runtime.runs
        control = RunControl()
        events = self._loop(message, agent, admission.run.id, admission, control, approve,
                            answerable=True)
        task = asyncio.ensure_future(_drain(events))
        handle = RunHandle(record=admission.run, store=store, task=task, control=control)
        registry.add(handle)
        watcher = asyncio.ensure_future(watch_for_abort(store, handle.id, task, control))

        def ended(task: asyncio.Task[Result]) -> None:
            watcher.cancel()
            if task.cancelled() and not control.entered:
                # Cancelled before its loop ran (which would have ended it): it ends here,
                # and its claim or place in line goes with it.
                control.abandoned = keep_task(
                    abandon(store, admission.run, control.reason or ABORTED))

        task.add_done_callback(ended)
        return handle

    async def _admit(
        self, store: Store, run: RunRecord, message: Message | None, if_busy: IfBusy
    ) -> Admission:
        """Admit ``run``. A run of a message on a session idle here starts with its
        admission when its turn is now (one write, not two): the history is brought up to
        date first, so its repair and the message are what the run starts with, and the
        store starts it only if its history is as long as this copy (else another process
        ran meanwhile: the run starts as usual, in :meth:`_begin`)."""
        if message is None or self._lock.locked():  # a run here goes on: it keeps the history
            return await store.admit_run(run, if_busy=if_busy)
        if not self._synced:
            loaded = await store.load_messages(self.id)
            if self._lock.locked():  # a run here began meanwhile
                return await store.admit_run(run, if_busy=if_busy)
            if not self._synced:  # (another admission here may have loaded it meanwhile)
                self._history[:] = loaded
                self._alternating = 0  # what was loaded is checked again
                self._synced = True
        start = (*repair_history(self._history), message)
        admission = await store.admit_run(run, if_busy=if_busy, start=start,
                                          history_length=len(self._history))
        if admission.started:
            self._history.extend(start)
        return admission

    def events(self, *, after: int = 0) -> AsyncIterator[LoggedEvent]:
        """Every event of the session's runs after seq ``after``, from its stored log,
        then live as runs here or in other processes sharing the store append them; it
        goes on until the caller stops. A cursor in a pruned range gets a
        :class:`~wingspan.Resync` first.

        :raises ConfigError: when the session has no store.
        """
        store = self._require_store("events()")
        return one_by_one(follow(store, self.id, after=after))

    def _require_store(self, what: str) -> Store:
        if self.store is None:
            raise ConfigError(f"Session.{what} needs a store: Session(..., store=...)")
        return self.store


    async def _loop(
        self,
        message: Message | None,
        agent: Agent,
        run_id: str,
        admission: Admission | None,
        control: RunControl,
        approve: Approver | None = None,
        *,
        answerable: bool = False,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The run's driver: it takes the steps its :class:`~wingspan.loop.RunState` says,
        and every event passes through its ``emit``. ``message`` ``None``: the run
        continues the history as it stands (:meth:`RunState.enter`)."""
        control.entered = True
        runtime = self.runtime
        store = self.store
        observe = runtime.observe if runtime.has_event_hook else None
        prepare = runtime.prepare_request if runtime.has_prepare_request_hook else None
        history = self._history
        provider = agent.provider
        state = RunState(run_id)
        failure: BaseException | None = None
        last_turn: Message | None = None  # the run's last turn, stored with its end
        tools = ToolRunner(self, run_id, agent, runtime, approve=approve,
                           answerable=answerable)
        run_record: RunRecord | None = None
        event_log: EventLog | None = None

        def emit(event: StreamEvent) -> StreamEvent:
            """The one place every event of the run passes, on its way to the caller."""
            if observe is not None:
                observe(event, self)
            if event_log is not None:
                event_log.add(event)
            return event

        if store is not None:
            # The store's claim orders runs (in admission order, across processes), so it is
            # taken before this object's lock, which then only guards the history here.
            if admission is None:
                await self._ensure_stored(store)
                admission = await self._admit(store, RunRecord(
                    id=run_id, session_id=self.id, agent_id=agent.id, status="queued",
                    started_at=None), message, "queue")
            try:
                run_record = await self._begin(store, admission, message)
            except BaseException as exc:
                control.ending = True
                await shielded(abandon(store, admission.run, _reason(control, exc)))
                raise
            event_log = EventLog(store, self.id, run_id)
        async with self._lock:
            try:
                if store is None and message is not None:
                    history.append(message)  # with a store, it is stored as the run starts
                state.enter(history)
                # Invariant 6: what earlier runs left (a failed run's dangling user message)
                # is merged into alternating turns, in requests only. Checked once a run.
                opening: tuple[Message, ...] | None = None
                if alternates(history, self._alternating):
                    self._alternating = len(history)
                else:
                    opening, opened_at = alternating(history), len(history)
                while (step := state.step) != "finish":
                    if step == "tools":
                        results = tools.step(state)
                        try:
                            async for result in results:
                                yield emit(result)
                        finally:
                            await results.aclose()  # its calls still running are cancelled
                        await self._end_step(event_log, state.results())
                        state.end_tool_step(agent.max_steps)
                        continue
                    state.steps += 1
                    request = InferenceRequest(
                        messages=(
                            tuple(history)
                            if opening is None
                            else opening + tuple(history[opened_at:])
                        ),
                        tools=agent.tool_definitions,
                        instructions=agent.instructions or None,
                        output_schema=agent.output_schema,
                        options=agent.options,
                    )
                    if prepare is not None:
                        request = await prepare(request, self)
                    accumulator = Accumulator()
                    add = accumulator.add
                    events = provider.stream(request)
                    try:
                        async for event in events:
                            add(event)
                            if type(event) is MessageStart:
                                event = MessageStart(step=state.steps)
                            yield emit(event)
                    except WingspanError:
                        raise
                    except Exception as exc:
                        # A provider's own bug reaches the caller as a provider failure.
                        raise ProviderError(
                            f"the provider failed: {type(exc).__name__}: {exc}"
                        ) from exc
                    finally:
                        # Close the provider's stream (its HTTP response too) at once.
                        aclose = getattr(events, "aclose", None)
                        if aclose is not None:
                            await aclose()
                    # Every event of a step is stored by its end, with the turn it made;
                    # the last turn, which nothing needs before the run's end is stored (no
                    # model call, no answer to a client), is stored with that end.
                    turn = state.end_model_step(accumulator)
                    if event_log is not None and state.step == "finish":
                        last_turn = turn
                    else:
                        await self._end_step(event_log, turn)
                state.status = "completed"
            except (asyncio.CancelledError, GeneratorExit) as exc:
                state.status, failure = "aborted", exc
                raise
            except BaseException as exc:
                failure = exc
                raise
            finally:
                control.ending = True
                done = state.done()
                if control.suspended and event_log is not None:
                    # Its process stops while it waits for a person: the run stays
                    # waiting in the store, its claim kept for whoever answers (see
                    # RunHandle.suspend); only its events are stored.
                    unstored = await shielded(_suspend(event_log))
                else:
                    if event_log is not None:
                        event_log.hold()  # what is not written yet goes with the run's end
                    # Whatever ended the run, and whatever fails meanwhile (invariant 7): a
                    # history the next run accepts, the run recorded, the claim released.
                    unstored = await shielded(
                        self._clean_up(
                            run_record,
                            event_log,
                            done,
                            state,
                            None if state.status == "completed" else _reason(control, failure),
                            last_turn,
                        )
                    )
            if unstored is not None:
                raise StoreError(unstored)

        if observe is not None:
            observe(done, self)
        yield done

    # --- persistence ------------------------------------------------------------------------

    async def _keep(self, write: Awaitable[T], message: Message) -> T:
        """Await ``write``, which stores ``message`` (shielded), then keep ``message`` here
        too: also when the task is cancelled meanwhile, since the write completed then (a
        failed one raises its own error)."""
        try:
            stored = await write
        except asyncio.CancelledError:
            self._history.append(message)
            raise
        self._history.append(message)
        return stored

    async def _append(self, message: Message) -> None:
        if self.store is None:
            self._history.append(message)
        else:
            await self._keep(shielded(self.store.append_messages(self.id, (message,))), message)

    async def _end_step(self, event_log: EventLog | None, message: Message) -> None:
        """Store a step's turn with the step's last events (one write), then keep it here."""
        if event_log is None:
            await self._append(message)
        else:
            await self._keep(event_log.flush((message,)), message)

    async def _repair(self) -> None:
        for message in repair_history(self._history):
            await self._append(message)

    async def _ensure_stored(self, store: Store) -> None:
        """Create the session's record (with the history it was given) on first use."""
        if self._stored:
            return
        work_dir = str(self.work_dir) if self.work_dir else None
        try:
            await store.create_session(
                SessionRecord(id=self.id, title=self.title, work_dir=work_dir)
            )
        except ConflictError:
            pass  # stored already (by another object for the same id): its history is the one
        else:
            if self._history:  # the history this session was given to start from
                await store.append_messages(self.id, tuple(self._history))
            self._synced = True
        self._stored = True

    async def _begin(
        self, store: Store, admission: Admission, message: Message | None
    ) -> RunRecord:
        """Wait for the admitted run's turn (its session's claim, unless admission gave it
        already), bring the history up to date, and mark the run running with its user
        message stored (``None``: a run that continues the history, whose pending tool
        calls are its own to run, not to repair)."""
        if admission.started:
            return admission.run  # with its message, stored and kept here (_admit)
        run_id = admission.run.id
        if not admission.claimed and not await store.claim_session(self.id, run_id):
            raise ConflictError(f"session {self.id} is busy with another run")
        try:
            if (
                not self._synced
                or (await store.get_session(self.id)).message_count != len(self._history)
            ):
                # The store's history is the one: this object was made for a stored session,
                # its last write failed, or another process ran on the session since.
                self._history[:] = await store.load_messages(self.id)
                self._alternating = 0  # what was loaded is checked again
            self._synced = True
            try:
                # Cancelled meanwhile, it started all the same: the caller's clean-up
                # (abandon) finishes it, aborted, with its message unanswered.
                run: RunRecord
                if message is None:
                    run = await shielded(store.start_run(run_id))
                else:
                    await self._repair()
                    run = await self._keep(shielded(store.start_run(run_id, (message,))),
                                           message)
            except ConflictError:
                raise RunFailed(ErrorInfo(
                    code="aborted", message="the run was aborted before it started")) from None
        except BaseException:
            await shielded(_release(store, self.id, run_id))
            raise
        return run

    async def _clean_up(
        self,
        run: RunRecord | None,
        event_log: EventLog | None,
        done: Done,
        state: RunState,
        failure: ErrorInfo | None,
        last_turn: Message | None = None,
    ) -> str | None:
        """End a run; never raises. Each step is tried whatever the one before did.

        :param done: the run's facts (its terminal event when it completed).
        :param failure: the terminal ``error`` event's content when it did not.
        :param last_turn: the completed run's last turn, to store with its end.
        :returns: why ``last_turn`` could not be stored (the run then failed, and its record
            says so where it can), or ``None``.
        """
        history = self._history
        status, outcomes = state.status, state.outcomes
        error = None if failure is None else encodable(failure.message)
        if status != "completed" and repair_history(history):
            # Calls that finished keep their results; the others get an error result. If
            # that cannot be stored (a result the store refuses, a full disk), plain error
            # results are tried; if those fail too, the history here is repaired alone and
            # the next run brings the store's copy up to date (it reloads and repairs it).
            reason = CANCELLED if status == "aborted" else f"the run failed: {error}"
            uses = history[-1].tool_uses
            known: list[ToolOutcome | None] = (
                outcomes if len(outcomes) == len(uses) else [None] * len(uses)
            )
            repairs = [results_message(uses, known, reason)]
            if any(outcome is not None for outcome in known):
                repairs.append(results_message(uses, [None] * len(uses), reason))
            for repair in repairs:
                try:
                    await self._append(repair)
                    break
                except Exception as exc:
                    log.warning("session %s: storing the repair of run %s failed: %s: %s",
                                self.id, run and run.id, type(exc).__name__, exc)
            else:
                history.append(repairs[-1])
                self._synced = False
        if run is None or self.store is None:
            return None
        store = self.store
        last: list[LogEvent] = await event_log.close() if event_log is not None else []
        last.append(done if failure is None else ErrorEvent(
            error=ErrorInfo(code=failure.code, message=error or "")))
        ended = attrs.evolve(
            run,
            status=status,
            finished_at=utc_now(),
            steps=done.steps,
            usage=done.usage,
            stop_reason=done.stop_reason if failure is None else None,
            error=error,
        )
        turns = (last_turn,) if last_turn is not None else ()
        stored = await record_end(store, ended, last, turns)  # which gives the claim up too
        if last_turn is None:
            if stored is None:
                await _release(store, self.id, run.id)
            return None
        if stored is not None and stored.status == status:
            history.append(last_turn)
            return None
        # The answer could not be stored with the run's end: the run failed (its caller
        # must not take an answer the history does not hold), and says so if it can.
        reason = (f"the run's last turn could not be stored: the run was ended elsewhere "
                  f"({stored.status})" if stored is not None
                  else "the run's last turn could not be stored (see the server's log)")
        if stored is None and await record_end(store, attrs.evolve(
                ended, status="failed", stop_reason=None, error=reason),
                [ErrorEvent(error=ErrorInfo(code="store_error", message=reason))]) is None:
            await _release(store, self.id, run.id)
        return reason


class RunStream:
    """The events of one run, as an async iterator; :attr:`result` once it is done.

    It is the loop's own iterator, with no generator of its own and no reference cycle: a
    stream dropped without :meth:`aclose` (``break`` out of ``async for``) is closed as soon
    as it is garbage, its provider stream and running tools with it.
    """

    __slots__ = ("_loop_events", "_result", "run_id")

    def __init__(self, events: AsyncGenerator[StreamEvent, None], run_id: str) -> None:
        #: The run's id, known before it starts.
        self.run_id = run_id
        self._loop_events = events
        self._result: Result | None = None

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self._loop_events.__anext__()
        if type(event) is Done:
            self._result = event.result
        return event

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the run if it is still going (running tools are cancelled)."""
        await self._loop_events.aclose()

    @property
    def result(self) -> Result:
        """The run's result. :raises RuntimeError: before the run is done."""
        if self._result is None:
            raise RuntimeError("the run is not done yet: iterate the stream to its end first")
        return self._result


async def _release(store: Store, session_id: str, holder: str) -> None:
    """Give a claim up; a failure is logged, not raised (the store retries or its lease
    lapses), so that it never hides why a run ended."""
    try:
        await store.release_session(session_id, holder)
    except Exception as exc:
        log.error("session %s: releasing the claim of %s failed: %s: %s",
                  session_id, holder, type(exc).__name__, exc)


def _resolve_work_dir(work_dir: str | os.PathLike[str] | None) -> Path | None:
    if work_dir is None:
        return None
    path = Path(work_dir).expanduser()
    try:
        path = path.resolve(strict=True)
    except OSError:
        raise ConfigError(f"work_dir {str(work_dir)!r} does not exist") from None
    if not path.is_dir():
        raise ConfigError(f"work_dir {str(work_dir)!r} is not a directory")
    return path


async def _suspend(event_log: EventLog) -> None:
    """Store a suspended run's events not stored yet; never raises (what cannot be written
    is lost with the process, the run's record and history are as they were)."""
    try:
        await event_log.flush()
    except Exception as exc:
        log.warning("run %s: its last events could not be stored as it was suspended: %s",
                    event_log.run_id, exc)


def _approver(approve: Approver | None) -> Approver | None:
    if approve is not None and not callable(approve):
        raise ConfigError(f"approve must be a function taking a PermissionRequest, got "
                          f"{approve!r}")
    return approve


def _user_message(message: str | Message | None) -> Message | None:
    if message is None:
        return None
    if isinstance(message, str):
        return Message(role="user", content=(TextBlock(text=message),))
    if not isinstance(message, Message) or message.role != "user":
        raise ConfigError("a run starts from a user message: pass a str or a user Message")
    return message


def _reason(control: RunControl, failure: BaseException | None) -> ErrorInfo:
    """Why a run that did not complete ended: what its owner said when it cancelled it,
    else what the failure was."""
    if control.reason is not None and (
        failure is None or isinstance(failure, asyncio.CancelledError | GeneratorExit)
    ):
        return control.reason
    if isinstance(failure, GeneratorExit):
        return ErrorInfo(code="aborted", message="the caller stopped reading the run")
    if isinstance(failure, RunFailed):
        return failure.error
    return run_error(failure) if failure is not None else ABORTED


async def _drain(events: AsyncGenerator[StreamEvent, None]) -> Result:
    """Run a loop to its end: its result (or what it raised)."""
    last: StreamEvent | None = None
    try:
        async for last in events:  # noqa: B007 (only the last event, Done, matters)
            pass
    finally:
        await events.aclose()
    assert type(last) is Done  # the loop ends with Done or raises
    return last.result

