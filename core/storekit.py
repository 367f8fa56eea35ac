"""Helpers for store plugins: the parts of a store that do not depend on where it keeps things.

- :class:`KeyValueStore` is a whole :class:`~wingspan.Store` for one process on top of four
  methods that read, write, remove and list values by table and key: a dict-backed or
  file-backed store is those four methods;
- :class:`ClaimQueue` serves :meth:`Store.claim_session` / :meth:`Store.release_session` for a
  store used by one process: per-session claims, first come first served (an admitted run in
  the place its admission reserved), with waits that time out, can be cancelled and end when
  the session is deleted or the store closed;
- :func:`paginate` pages records kept in a mapping by id, newest first, as every listing is.

A store that several processes share (``sqlite://``) must serialise claims across them, in the
storage itself: it can use neither :class:`ClaimQueue` nor :class:`KeyValueStore`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from .claims import ClaimQueue
from .errors import ConfigError, ConflictError, NotFoundError, StoreError
from .permissions import ended_with_run, resolved
from .store import (
    Admission,
    AgentRecord,
    Credential,
    IfBusy,
    Page,
    RunRecord,
    SessionRecord,
    utc_now,
)
from .types import (
    FINISHED_STATUSES,
    ErrorEvent,
    ErrorInfo,
    LoggedEvent,
    Message,
    PermissionDecision,
    PermissionRequest,
    ResolvedBy,
    Rule,
    RunFinished,
    RunQueued,
    RunStarted,
)

if TYPE_CHECKING:
    from datetime import datetime

    from .types import LogEvent

__all__ = ["MAX_PAGE", "ClaimQueue", "KeyValueStore", "paginate"]

T = TypeVar("T")

#: The largest ``limit`` a listing accepts.
MAX_PAGE = 500


def _messages(messages: Sequence[Message], what: str) -> tuple[Message, ...]:
    """``messages`` as a tuple, checked: :class:`TypeError` for anything else in it."""
    for message in messages:
        if not isinstance(message, Message):
            raise TypeError(f"{what} takes Messages, got {type(message).__name__}")
    return tuple(messages)


def paginate(records: Mapping[str, T], limit: int, cursor: str | None) -> Page[T]:
    """One page of a listing of ``records`` (id -> record): newest first, as
    :meth:`Store.list_sessions` and :meth:`Store.list_agents` are.

    Ids are ULIDs (:func:`wingspan.new_id`), so sorting them sorts by creation time. The
    cursor is the last id shown: records added meanwhile never shift or repeat a later page.

    :param limit: at most this many records, from 1 to :data:`MAX_PAGE`.
    :param cursor: the ``next_cursor`` of the page before, ``None`` for the first page.
    :raises ConfigError: for a ``limit`` out of range.
    """
    shown, next_cursor = _page_ids(records, limit, cursor)
    return Page(items=tuple(records[i] for i in shown), next_cursor=next_cursor)


def _page_ids(ids: Iterable[str], limit: int, cursor: str | None) -> tuple[list[str], str | None]:
    """The ids one page shows, and its ``next_cursor``."""
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    older = sorted((i for i in ids if cursor is None or i < cursor), reverse=True)
    shown = older[:limit]
    return shown, shown[-1] if len(older) > limit else None


_KINDS = {"agents": "agent", "sessions": "session", "runs": "run",
          "permissions": "permission request"}
_IF_BUSY = typing.get_args(IfBusy)
#: The event types :meth:`Store.prune_events` drops once their run has finished.
_PRUNABLE = frozenset({"text_delta", "input_json_delta", "ping"})


class KeyValueStore:
    """A whole :class:`~wingspan.Store` for one process, on four methods a subclass writes.

    The subclass keeps values by table and key, where it likes (dicts, files...):

    - :meth:`read` ``(table, key)``: the value, or ``None`` when there is none;
    - :meth:`write` ``(table, key, value)``: insert or replace it, all or nothing;
    - :meth:`remove` ``(table, key)``: delete it (nothing to delete is no error);
    - :meth:`keys` ``(table)``: every key of the table.

    The tables (:attr:`TABLES` gives each one's value type, to read back what a subclass
    serialised with :mod:`wingspan.wire`): ``agents`` (:class:`~wingspan.AgentRecord` by id),
    ``sessions`` (:class:`~wingspan.SessionRecord` by id, stored with ``message_count`` 0 and
    its ``last_seq``), ``messages`` (a session's history, a list of
    :class:`~wingspan.Message`, by session id), ``events`` (a session's event log, a list of
    :class:`~wingspan.LoggedEvent` in seq order, by session id), ``runs``
    (:class:`~wingspan.RunRecord` by id) and ``credentials`` (:class:`~wingspan.Credential`
    by provider name; keys are written as they are).

    The base does the rest of the contract: ids that exist or not, message counts, run
    admission (idempotency keys, ``if_busy``) and lifecycle with their events, event seqs,
    waits on the log, pruning, cascading deletes, newest-first pages (:func:`paginate`),
    claims (:class:`ClaimQueue`), the keys of creations (:meth:`reserve_key`; kept in the
    base's own memory, not in a table, so they last as long as the store object) and the closed
    state. The four methods are synchronous and each store call makes its reads and writes
    without awaiting in between, so the calls of one event loop never interleave. Keys and
    values are whatever the callers give: a subclass that turns keys into file names must
    encode them. Override :meth:`append` to add to a history or a log without rewriting it,
    and :meth:`close` (calling ``super().close()``) to release resources. A session's runs
    (an idempotency key, a busy session, a listing) are found through an index of run ids by
    session, built from the ``runs`` table on first use; pruning reads every run.
    """

    #: Each table's value type.
    TABLES: ClassVar[Mapping[str, Any]] = {
        "agents": AgentRecord,
        "sessions": SessionRecord,
        "messages": list[Message],
        "events": list[LoggedEvent],
        "runs": RunRecord,
        "credentials": Credential,
        #: permission requests by id; each session's request ids, and its grants
        "permissions": PermissionRequest,
        "session_permissions": list[str],
        "grants": list[Rule],
    }
    #: What the store is called in its errors (``"the memory store is closed"``).
    label: ClassVar[str] = "store"

    def __init__(self) -> None:
        self._claims = ClaimQueue()
        self._closed = False
        #: Per session, the futures of the wait_events calls to wake when its log grows.
        self._event_waiters: dict[str, set[asyncio.Future[None]]] = {}
        #: Per session, the ids of its runs: built from the runs table on first use, then
        #: kept by every write of a run here (an admission must not read every run stored).
        self._run_ids: dict[str, set[str]] | None = None
        #: (scope, key) -> (request hash, reserved id, when) of :meth:`reserve_key`.
        self._keys: dict[tuple[str, str], tuple[str, str, datetime]] = {}

    # --- what a subclass implements -----------------------------------------------------

    def read(self, table: str, key: str) -> Any:
        """The value kept under ``key`` in ``table``, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(table, key)")

    def write(self, table: str, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` in ``table``, replacing any: all or nothing."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(table, key, value)")

    def remove(self, table: str, key: str) -> None:
        """Delete the value under ``key`` in ``table``, if there is one."""
        raise NotImplementedError(f"{type(self).__name__} must implement remove(table, key)")

    def keys(self, table: str) -> Iterable[str]:
        """Every key of ``table``."""
        raise NotImplementedError(f"{type(self).__name__} must implement keys(table)")

    def append(self, table: str, key: str, values: Sequence[Any]) -> int:
        """Add ``values`` to the list under ``key`` (a history or an event log), all or
        nothing; by default, by writing the whole new list.

        :returns: the list's length afterwards.
        """
        extended = [*(self.read(table, key) or ()), *values]
        self.write(table, key, extended)
        return len(extended)

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the {self.label} is closed")

    def _get(self, table: str, key: str) -> Any:
        self._check_open()
        value = self.read(table, key)
        if value is None:
            raise NotFoundError(f"{_KINDS[table]} {key!r} not found")
        return value

    def _insert(self, table: str, record: Any) -> None:
        self._check_open()
        if self.read(table, record.id) is not None:
            raise ConflictError(f"{_KINDS[table]} {record.id!r} already exists")
        self.write(table, record.id, record)

    def _page(self, table: str, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
        self._check_open()
        shown, next_cursor = _page_ids(self.keys(table), limit, cursor)
        return [self.read(table, key) for key in shown], next_cursor

    def _counted(self, session: SessionRecord) -> SessionRecord:
        count = len(self.read("messages", session.id) or ())
        return attrs.evolve(session, message_count=count)

    def _last_seq(self, session_id: str) -> int:
        session: SessionRecord = self._get("sessions", session_id)
        return session.last_seq

    def _runs_of(self, session_id: str) -> list[RunRecord]:
        """The session's runs, in id (admission) order."""
        runs = (self.read("runs", key) for key in sorted(self._index().get(session_id, ())))
        return [run for run in runs if run is not None and run.session_id == session_id]

    def _index(self) -> dict[str, set[str]]:
        if self._run_ids is None:
            index: dict[str, set[str]] = {}
            for key in self.keys("runs"):
                run = self.read("runs", key)
                if run is not None:
                    index.setdefault(run.session_id, set()).add(key)
            self._run_ids = index
        return self._run_ids

    def _put_run(self, run: RunRecord) -> None:
        """Store ``run`` (inserting or replacing it) and keep the index of runs by session."""
        index = self._index()
        before = self.read("runs", run.id)
        self.write("runs", run.id, run)
        if before is not None and before.session_id != run.session_id:
            index.get(before.session_id, set()).discard(run.id)
        index.setdefault(run.session_id, set()).add(run.id)

    def _log(self, session_id: str, run_id: str, events: Sequence[LogEvent]) -> int:
        """Append ``events`` of ``run_id`` to an existing session's log, numbered on from
        its ``last_seq``, and wake its waiters. :returns: the new ``last_seq``."""
        session: SessionRecord = self.read("sessions", session_id)
        last_seq = session.last_seq + len(events)
        # The count first: cut off between the two writes, the log has a gap (which reads as
        # a pruned range), never a seq given twice.
        self.write("sessions", session_id, attrs.evolve(session, last_seq=last_seq))
        self.append("events", session_id, [
            LoggedEvent(seq=seq, run_id=run_id, event=event)
            for seq, event in enumerate(events, session.last_seq + 1)
        ])
        self._wake(session_id)
        return last_seq

    def _wake(self, session_id: str) -> None:
        """Wake the session's ``wait_events`` calls; each looks again at the session."""
        for waiter in self._event_waiters.pop(session_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _abort(self, run: RunRecord) -> RunRecord:
        """Abort an unfinished run, as :meth:`abort_run` says."""
        if run.status == "queued":
            error = ErrorInfo(code="aborted", message="the run was aborted before it started")
            last_seq = self._log(run.session_id, run.id, (
                ErrorEvent(error=error), RunFinished(run_id=run.id, status="aborted"),
            ))
            run = attrs.evolve(run, status="aborted", finished_at=utc_now(),
                               error="aborted before it started", last_seq=last_seq)
        else:  # the process running it sees this and stops it
            run = attrs.evolve(run, abort_requested=True)
        self._put_run(run)
        return run

    # --- agents ----------------------------------------------------------------------------

    async def create_agent(self, agent: AgentRecord) -> AgentRecord:
        self._insert("agents", agent)
        return agent

    async def get_agent(self, agent_id: str) -> AgentRecord:
        agent: AgentRecord = self._get("agents", agent_id)
        return agent

    async def update_agent(self, agent: AgentRecord) -> AgentRecord:
        self._get("agents", agent.id)
        self.write("agents", agent.id, agent)
        return agent

    async def delete_agent(self, agent_id: str) -> None:
        self._get("agents", agent_id)
        self.remove("agents", agent_id)

    async def list_agents(self, *, limit: int = 50, cursor: str | None = None) -> Page[AgentRecord]:
        agents, next_cursor = self._page("agents", limit, cursor)
        return Page(items=tuple(agents), next_cursor=next_cursor)

    # --- sessions --------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        self._check_open()
        if self.read("sessions", session.id) is not None:
            raise ConflictError(f"session {session.id!r} already exists")
        session = attrs.evolve(session, message_count=0, last_seq=0)
        self.write("messages", session.id, [])  # first: a session always has its history
        self.write("sessions", session.id, session)
        return session

    async def get_session(self, session_id: str) -> SessionRecord:
        return self._counted(self._get("sessions", session_id))

    async def update_session(self, session: SessionRecord) -> SessionRecord:
        stored: SessionRecord = self._get("sessions", session.id)
        session = attrs.evolve(session, message_count=0, last_seq=stored.last_seq)
        self.write("sessions", session.id, session)
        return self._counted(session)

    async def delete_session(self, session_id: str) -> None:
        self._get("sessions", session_id)
        self.remove("sessions", session_id)  # first: what is left behind is unreachable
        self.remove("messages", session_id)
        self.remove("events", session_id)
        for request_id in self.read("session_permissions", session_id) or ():
            self.remove("permissions", request_id)
        self.remove("session_permissions", session_id)
        self.remove("grants", session_id)
        for run in self._runs_of(session_id):
            self.remove("runs", run.id)
        self._index().pop(session_id, None)
        self._claims.delete_session(session_id)
        self._wake(session_id)  # its waiters find it gone

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]:
        sessions, next_cursor = self._page("sessions", limit, cursor)
        return Page(items=tuple(map(self._counted, sessions)), next_cursor=next_cursor)

    # --- history ---------------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        self._get("sessions", session_id)
        return self.append("messages", session_id, _messages(messages, "append_messages"))

    async def load_messages(self, session_id: str) -> list[Message]:
        self._get("sessions", session_id)
        return list(self.read("messages", session_id) or ())

    # --- runs ------------------------------------------------------------------------------

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        self._get("sessions", session_id)
        return await self._claims.claim(session_id, holder, wait=wait, timeout=timeout)

    async def release_session(self, session_id: str, holder: str) -> None:
        self._check_open()
        self._claims.release(session_id, holder)

    async def save_run(self, run: RunRecord) -> None:
        self._get("sessions", run.session_id)
        self._put_run(run)

    async def get_run(self, run_id: str) -> RunRecord:
        run: RunRecord = self._get("runs", run_id)
        return run

    async def admit_run(
        self, run: RunRecord, *, if_busy: IfBusy = "queue",
        start: Sequence[Message] | None = None, history_length: int | None = None,
    ) -> Admission:
        self._check_open()
        if if_busy not in _IF_BUSY:
            raise ConfigError(f"if_busy must be 'queue', 'reject' or 'interrupt', got {if_busy!r}")
        if run.status != "queued":
            raise ConfigError(f"a run is admitted with status 'queued', got {run.status!r}")
        self._get("sessions", run.session_id)
        runs = self._runs_of(run.session_id)
        key = run.idempotency_key
        for earlier in runs if key is not None else ():
            if earlier.idempotency_key == key:
                if earlier.request_hash == run.request_hash:
                    return Admission(run=earlier, created=False)
                raise ConflictError(f"idempotency key {key!r} was already used for another "
                                    f"request on session {run.session_id!r}")
        if self.read("runs", run.id) is not None:
            raise ConflictError(f"run {run.id!r} already exists")
        active = [earlier for earlier in runs if earlier.status not in FINISHED_STATUSES]
        if active and if_busy == "reject":
            raise ConflictError(f"session {run.session_id!r} is busy with run {active[0].id!r}")
        if if_busy == "interrupt":
            for earlier in active:
                self._abort(earlier)
        checked = None if start is None else _messages(start, "admit_run")
        seq = self._log(run.session_id, run.id, (RunQueued(run_id=run.id),))
        run = attrs.evolve(run, started_at=None, finished_at=None, first_seq=seq, last_seq=seq)
        self._put_run(run)
        claimed = self._claims.reserve(run.session_id, run.id)
        if checked is None or not claimed or len(
                self.read("messages", run.session_id) or ()) != history_length:
            return Admission(run=run, claimed=claimed)
        return Admission(run=await self.start_run(run.id, checked), claimed=True, started=True)

    async def start_run(self, run_id: str, messages: Sequence[Message] = ()) -> RunRecord:
        run: RunRecord = self._get("runs", run_id)
        if run.status != "queued":
            raise ConflictError(f"run {run_id!r} cannot start: it is {run.status}, not queued")
        messages = _messages(messages, "start_run")
        seq = self._log(run.session_id, run_id, (RunStarted(run_id=run_id),))
        run = attrs.evolve(run, status="running", started_at=utc_now(), last_seq=seq)
        self._put_run(run)
        if messages:
            self.append("messages", run.session_id, messages)
        return run

    async def finish_run(
        self, run: RunRecord, events: Sequence[LogEvent] = (),
        messages: Sequence[Message] = (),
    ) -> RunRecord:
        self._check_open()
        if run.status not in FINISHED_STATUSES:
            raise ConfigError(f"finish_run takes a run with a finished status "
                              f"({', '.join(sorted(FINISHED_STATUSES))}), got {run.status!r}")
        checked = _messages(messages, "finish_run")
        stored: RunRecord = self._get("runs", run.id)
        self._claims.release(stored.session_id, run.id)  # the run is over, however it ended
        if stored.status in FINISHED_STATUSES:
            return stored  # the first ending wins (it may have been recovered meanwhile)
        if checked:
            self.append("messages", stored.session_id, checked)
        if stored.status == "waiting":  # its requests end with it
            for request in self._requests(stored.session_id, pending_only=True):
                if request.run_id == run.id:
                    self.write("permissions", request.id, ended_with_run(request))
        seq = self._log(stored.session_id, run.id,
                        (*events, RunFinished(run_id=run.id, status=run.status)))
        first_seq = stored.first_seq if run.first_seq is None else run.first_seq
        run = attrs.evolve(run, first_seq=first_seq, last_seq=seq)
        self._put_run(run)
        return run

    async def abort_run(self, run_id: str) -> RunRecord:
        run: RunRecord = self._get("runs", run_id)
        if run.status in FINISHED_STATUSES:
            raise ConflictError(f"run {run_id!r} has already finished ({run.status})")
        return self._abort(run)

    async def list_runs(
        self, session_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[RunRecord]:
        self._get("sessions", session_id)
        return paginate({run.id: run for run in self._runs_of(session_id)}, limit, cursor)

    # --- permission requests and grants ----------------------------------------------------

    def _requests(self, session_id: str, *, pending_only: bool) -> list[PermissionRequest]:
        """The session's requests, oldest (lowest id) first: the order they were made in,
        which need not be the order they were stored in (a step's calls ask at once)."""
        requests = [self.read("permissions", key)
                    for key in sorted(self.read("session_permissions", session_id) or ())]
        return [r for r in requests if r is not None and (r.status == "pending"
                                                          or not pending_only)]

    async def add_permission_request(self, request: PermissionRequest) -> PermissionRequest:
        run: RunRecord = self._get("runs", request.run_id)
        if run.status in FINISHED_STATUSES or run.status == "queued":
            raise ConflictError(f"run {run.id} cannot wait for a permission: it is "
                                f"{run.status}")
        if request.status != "pending":
            raise ConfigError(f"add_permission_request takes a pending request, got "
                              f"{request.status!r}")
        self._insert("permissions", request)
        self.append("session_permissions", run.session_id, [request.id])
        if run.status != "waiting":
            self._put_run(attrs.evolve(run, status="waiting"))
        return request

    async def resolve_permission_request(
        self, request_id: str, *, decision: PermissionDecision, by: ResolvedBy,
        message: str | None = None, grant: Rule | None = None,
    ) -> PermissionRequest:
        request: PermissionRequest = self._get("permissions", request_id)
        if request.status != "pending":
            raise ConflictError(f"permission request {request_id} was already answered "
                                f"({request.decision} by {request.by})")
        request = resolved(request, decision=decision, by=by, message=message)
        self.write("permissions", request_id, request)
        if grant is not None:
            self.append("grants", request.session_id, [grant])
        run = self.read("runs", request.run_id)
        if run is not None and run.status == "waiting" and not any(
                r.run_id == run.id for r in self._requests(run.session_id, pending_only=True)):
            self._put_run(attrs.evolve(run, status="running"))
        return request

    async def get_permission_request(self, request_id: str) -> PermissionRequest:
        request: PermissionRequest = self._get("permissions", request_id)
        return request

    async def list_permission_requests(
        self, session_id: str, *, pending_only: bool = True
    ) -> list[PermissionRequest]:
        self._get("sessions", session_id)
        return self._requests(session_id, pending_only=pending_only)

    async def adopt_run(self, run_id: str) -> RunRecord | None:
        self._get("runs", run_id)
        return None  # one process: a run's executor ends with the store

    async def list_grants(self, session_id: str) -> list[Rule]:
        self._get("sessions", session_id)
        return list(self.read("grants", session_id) or ())

    # --- the event log ---------------------------------------------------------------------

    async def append_events(
        self, session_id: str, run_id: str, events: Sequence[LogEvent],
        messages: Sequence[Message] = (),
    ) -> int:
        if messages:
            await self.append_messages(session_id, messages)  # checks them, then appends
        if not events:
            return self._last_seq(session_id)
        self._get("sessions", session_id)
        last_seq = self._log(session_id, run_id, events)
        run = self.read("runs", run_id)
        if run is not None and run.session_id == session_id:
            self._put_run(attrs.evolve(run, last_seq=last_seq))
        return last_seq

    async def read_events(
        self, session_id: str, *, after: int = 0, limit: int = 1000, run_id: str | None = None
    ) -> list[LoggedEvent]:
        self._get("sessions", session_id)
        if type(limit) is not int or limit < 1:
            raise ConfigError(f"limit must be an integer of at least 1, got {limit!r}")
        logged: list[LoggedEvent] = self.read("events", session_id) or []
        start = bisect.bisect_right(logged, after, key=lambda entry: entry.seq)
        later = (logged[i] for i in range(start, len(logged)))
        picked = (e for e in later if run_id is None or e.run_id == run_id)
        return list(itertools.islice(picked, limit))

    async def wait_events(self, session_id: str, *, after: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (last_seq := self._last_seq(session_id)) <= after:
            woken: asyncio.Future[None] = loop.create_future()
            waiters = self._event_waiters.setdefault(session_id, set())
            waiters.add(woken)
            try:
                await asyncio.wait_for(woken, deadline - loop.time())
            except TimeoutError:
                return self._last_seq(session_id)
            finally:
                waiters.discard(woken)
                if not waiters and self._event_waiters.get(session_id) is waiters:
                    del self._event_waiters[session_id]
        return last_seq

    async def prune_events(self, *, before: datetime) -> int:
        self._check_open()
        runs = (self.read("runs", key) for key in self.keys("runs"))
        ended = {
            run.id for run in runs
            if run is not None and run.status in FINISHED_STATUSES
            and run.finished_at is not None and run.finished_at < before
        }
        dropped = 0
        for session_id in list(self.keys("events")):
            logged = self.read("events", session_id) or []
            kept = [e for e in logged if e.event.type not in _PRUNABLE or e.run_id not in ended]
            if len(kept) < len(logged):
                self.write("events", session_id, kept)
                dropped += len(logged) - len(kept)
        return dropped

    # --- idempotency keys ------------------------------------------------------------------

    async def reserve_key(self, scope: str, key: str, request_hash: str, new_id: str) -> str:
        self._check_open()
        first_hash, reserved_id, _ = self._keys.setdefault(
            (scope, key), (request_hash, new_id, utc_now()))
        if first_hash != request_hash:
            raise ConflictError(f"idempotency key {key!r} was already used for another "
                                f"request (scope {scope!r}); send a new key for a new request")
        return reserved_id

    async def prune_keys(self, *, before: datetime) -> int:
        self._check_open()
        expired = [entry for entry, (_, _, at) in self._keys.items() if at < before]
        for entry in expired:
            del self._keys[entry]
        return len(expired)

    # --- credentials -----------------------------------------------------------------------

    async def set_credential(self, provider: str, credential: Credential) -> None:
        self._check_open()
        self.write("credentials", provider, credential)

    async def get_credential(self, provider: str) -> Credential | None:
        self._check_open()
        credential: Credential | None = self.read("credentials", provider)
        return credential

    async def delete_credential(self, provider: str) -> bool:
        self._check_open()
        if self.read("credentials", provider) is None:
            return False
        self.remove("credentials", provider)
        return True

    async def list_credentials(self) -> dict[str, str]:
        self._check_open()
        listed = {}
        for provider in sorted(self.keys("credentials")):
            credential = self.read("credentials", provider)
            if credential is not None:
                listed[provider] = credential.type
        return listed

    async def close(self) -> None:
        """Close the store: every later call raises :class:`~wingspan.StoreError`, and
        waiting claims and waits on event logs end with it. Idempotent."""
        self._closed = True
        self._claims.close()
        for session_id in list(self._event_waiters):
            self._wake(session_id)  # they find the store closed
