"""The store object: async methods that send jobs to its writer and reader threads."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs

import wingspan
from wingspan import (
    Admission,
    AgentRecord,
    Credential,
    IfBusy,
    LogEvent,
    LoggedEvent,
    Message,
    NotFoundError,
    Page,
    PermissionDecision,
    PermissionRequest,
    ProcessIdentity,
    ResolvedBy,
    Rule,
    RunRecord,
    SessionRecord,
    StoreError,
    wire,
)

from .._stores import checks, sql
from .._stores.claims import Unreleased
from .._stores.history import HistoryCache
from .._stores.secrets import Cipher, key_columns, stored_credential
from . import _events as eventlog
from . import _jobs as jobs
from . import _leases as leases
from . import _permissions as permissions
from . import _runs as runs
from ._options import Options
from ._schema import begin_immediate, connect, create_file, migrate, store_error, truncate_wal
from ._watch import LogWatch
from ._worker import Checkpointer, Tx, Worker, notify

T = TypeVar("T")


class SqliteStore:
    """A :class:`wingspan.Store` in a SQLite file. Open it with :func:`open_sqlite_store`
    (or ``wingspan.open_store("sqlite:///path")``)."""

    def __init__(self, path: Path, options: Options, cipher: Cipher | None = None) -> None:
        self.path = path
        self.options = options
        self._cipher = cipher  # None: credentials are kept as they are given
        self._timeout = options.timeout
        self._me = leases.Claimant(
            owner=uuid.uuid4().hex,  # renews this store's leases and waiting tickets
            ttl=options.lease_ttl,
            process=ProcessIdentity.current(),
        )
        self._unreleased = Unreleased()
        self._cache = HistoryCache(options.cache_messages)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._waiters_lock = threading.Lock()
        self._log = LogWatch(lambda known, ids: self._read(eventlog.last_seqs, known, ids))
        self._closed = False
        self._checkpoints = Checkpointer(
            f"wingspan-sqlite-checkpoints {path}",
            lambda: connect(path, options, read_only=True),
        )
        self._writer = Worker(
            f"wingspan-sqlite-writer {path}",
            self._open_writer,
            self._error,
            writer=True,
            before_write=self._write_unreleased,
            idle=self._renew,
            idle_interval=options.lease_ttl / 3,
            checkpoints=self._checkpoints,
            timeout=options.timeout,
        )
        # A commit that syncs to disk (synchronous=full) takes milliseconds: never inline.
        self._inline = options.inline and options.synchronous == "normal"
        self._reader = Worker(
            f"wingspan-sqlite-reader {path}",
            lambda: connect(path, options, read_only=True),
            self._error,
            writer=False,
        )

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r}{' closed' if self._closed else ''}>"

    async def _start(self) -> None:
        await self._writer.start()
        try:
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
            raise
        self._checkpoints.start()
        # Claims left by processes of this host that ended (a server killed with SIGKILL)
        # are recovered now rather than when they lapse. Best effort: a claim recovers
        # them one session at a time too, and a store on a full disk must still open.
        with contextlib.suppress(wingspan.WingspanError):
            await self._write(leases.sweep, self._cache, self._me)

    def _open_writer(self) -> sqlite3.Connection:
        create_file(self.path)
        connection = connect(self.path, self.options, read_only=False)
        try:
            migrate(connection, self.path)
            if self._cipher is not None:
                # Keys stored before a secret key was configured are sealed now.
                tx = Tx(connection)
                connection.execute("BEGIN IMMEDIATE")
                try:
                    jobs.seal_plain_credentials(tx, self._cipher.seal)
                    connection.execute("COMMIT")
                finally:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                if tx.truncate_wal:
                    truncate_wal(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return store_error(exc, self.path, self._timeout)

    async def _call(self, worker: Worker, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"the SQLite store {self.path} is closed")
        short = _SHORT.get(fn) if self._inline else None
        if short is not None and (worker is self._reader or not self._unreleased):
            ran, value = worker.run_inline(short, args)
            if ran and value is not jobs.LONG:
                return typing.cast(T, value)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        worker.submit((fn, args, loop, future))
        return await future

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(self._writer, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(self._reader, fn, *args)

    # --- agents -----------------------------------------------------------------------------

    async def create_agent(self, agent: AgentRecord) -> AgentRecord:
        await self._write(jobs.insert, "agents", "agent", agent.id, wire.dumps(agent))
        return agent

    async def get_agent(self, agent_id: str) -> AgentRecord:
        body = await self._read(jobs.select_body, "agents", "agent", agent_id)
        return wire.loads(body, AgentRecord)

    async def update_agent(self, agent: AgentRecord) -> AgentRecord:
        await self._write(jobs.update_body, "agents", "agent", agent.id, wire.dumps(agent))
        return agent

    async def delete_agent(self, agent_id: str) -> None:
        await self._write(jobs.delete, "agents", "agent", agent_id)

    async def list_agents(self, *, limit: int = 50, cursor: str | None = None) -> Page[AgentRecord]:
        checks.limit(limit)
        rows, next_cursor = await self._read(jobs.page, "agents", "body", limit, cursor)
        return Page(
            items=tuple(wire.loads(b, AgentRecord) for (b,) in rows), next_cursor=next_cursor
        )

    # --- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        session = attrs.evolve(session, message_count=0, last_seq=0)
        await self._write(jobs.insert, "sessions", "session", session.id, wire.dumps(session))
        return session

    async def get_session(self, session_id: str) -> SessionRecord:
        row = await self._read(jobs.select_session, session_id)
        return sql.session(*row)

    async def update_session(self, session: SessionRecord) -> SessionRecord:
        body = wire.dumps(attrs.evolve(session, message_count=0, last_seq=0))
        count, last_seq = await self._write(jobs.update_session, session.id, body)
        return attrs.evolve(session, message_count=count, last_seq=last_seq)

    async def delete_session(self, session_id: str) -> None:
        """Delete a session with its messages, runs and events; waits on its claim or its
        events raise :class:`~wingspan.NotFoundError`."""
        await self._write(jobs.delete, "sessions", "session", session_id)
        self._cache.drop(session_id)
        self._wake(session_id)
        self._log.end(
            session_id,
            NotFoundError(f"session {session_id!r} was deleted while waiting for its events"),
        )

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]:
        checks.limit(limit)
        rows, next_cursor = await self._read(
            jobs.page, "sessions", sql.SESSION_COLUMNS, limit, cursor
        )
        return Page(items=tuple(sql.session(*row) for row in rows), next_cursor=next_cursor)

    # --- history ----------------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        checked = checks.messages(messages, "append_messages")
        return await self._write(jobs.append, self._cache, session_id, checked)

    async def load_messages(self, session_id: str) -> list[Message]:
        return await self._read(jobs.load, self._cache, session_id)

    # --- runs and their serialisation -------------------------------------------------------

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        granted, ticket = await self._write(
            leases.claim, self._cache, self._unreleased, session_id, holder, self._me, wait
        )
        if granted or not wait:
            return granted
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = 0.005
        try:
            while True:
                # Be ready for an in-process wake-up before looking, so none is missed.
                woken: asyncio.Future[None] = loop.create_future()
                with self._waiters_lock:
                    self._waiters.setdefault(session_id, set()).add(woken)
                try:
                    state, expires_at = await self._read(
                        leases.claim_state, session_id, ticket, self._me
                    )
                    if state == "granted":
                        return True
                    # "act": a lapsed lease or a dead holder to recover, or we lost our
                    # place. A release of ours that failed is retried before any write.
                    if state == "act" or self._unreleased.on(session_id):
                        granted, ticket = await self._write(
                            leases.poll_claim, self._cache, session_id, ticket, holder, self._me
                        )
                        if granted:
                            return True
                        if state == "act":
                            continue
                    # Other processes cannot wake us: look again after a while, and when
                    # the holder's lease would lapse.
                    delay = min(interval, max(0.0, expires_at - time.time()) + 0.001)
                    interval = min(interval * 2, 0.1)
                    if deadline is not None:
                        delay = min(delay, deadline - loop.time())
                        if delay <= 0:
                            raise TimeoutError
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken, delay)
                finally:
                    with self._waiters_lock:
                        self._waiters.get(session_id, set()).discard(woken)
        except TimeoutError:
            return await asyncio.shield(
                self._write(leases.abandon, session_id, ticket, False, self._me)
            )
        except BaseException:
            if not self._closed:
                # Granted meanwhile? Then hand it on; else leave the queue.
                handed_on = self._write(leases.abandon, session_id, ticket, True, self._me)
                if await asyncio.shield(handed_on):
                    self._wake(session_id)
            raise

    async def release_session(self, session_id: str, holder: str) -> None:
        try:
            released = await self._write(leases.release, session_id, holder, self._me)
        except StoreError as exc:
            if self._closed:
                raise
            # The disk is full, or another process kept the write lock too long. The claim
            # must not outlive its run: it is no longer renewed, and it is released by the
            # first write that succeeds (this store's next call, or the idle renewer).
            self._unreleased.add(session_id, holder, str(exc))
            return
        if released:
            self._wake(session_id)

    def _wake(self, session_id: str) -> None:
        with self._waiters_lock:
            futures = self._waiters.pop(session_id, set())
        for future in futures:
            if not future.done():
                notify(future.get_loop(), [(future, None, None)])

    def _write_unreleased(self, connection: sqlite3.Connection) -> None:
        """Write the releases that failed, in a transaction of their own (run in the writer
        thread before each write transaction, and while it is idle)."""
        if not self._unreleased:
            return
        tx = Tx(connection)
        begin_immediate(connection, self._timeout)
        try:
            released = leases.release_unreleased(tx, self._cache, self._unreleased, self._me)
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        for effect in tx.effects:
            effect()
        for session_id in released:
            self._wake(session_id)

    def _renew(self, connection: sqlite3.Connection) -> None:
        """Keep this store's claims alive, but for those it gave up (run in the writer
        thread while it is idle)."""
        with contextlib.suppress(sqlite3.Error, wingspan.WingspanError):
            self._write_unreleased(connection)
        if connection.in_transaction:  # see Worker._begin
            connection.execute("ROLLBACK")
        begin_immediate(connection, self._timeout)
        try:
            leases.renew(Tx(connection), self._me, self._unreleased.snapshot().keys())
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")

    async def save_run(self, run: RunRecord) -> None:
        await self._write(jobs.save_run, run.id, run.session_id, run.status, wire.dumps(run))

    async def get_run(self, run_id: str) -> RunRecord:
        return wire.loads(await self._read(runs.get, run_id), RunRecord)

    # --- runs: admission, lifecycle and listing ---------------------------------------------

    async def admit_run(
        self, run: RunRecord, *, if_busy: IfBusy = "queue",
        start: Sequence[Message] | None = None, history_length: int | None = None,
    ) -> Admission:
        checks.admission(run, if_busy)
        checked = None if start is None else checks.messages(start, "admit_run")
        stored, created, claimed, started = await self._write(
            runs.admit, self._log, self._cache, self._me, run, if_busy, checked, history_length)
        return Admission(run=stored, created=created, claimed=claimed, started=started)

    async def start_run(self, run_id: str, messages: Sequence[Message] = ()) -> RunRecord:
        checked = checks.messages(messages, "start_run")
        return await self._write(runs.start, self._log, self._cache, run_id, checked)

    async def finish_run(
        self, run: RunRecord, events: Sequence[LogEvent] = (),
        messages: Sequence[Message] = (),
    ) -> RunRecord:
        checks.finished(run)
        finished, released = await self._write(
            _finish_and_release, self._log, self._cache, run, checks.events(events, "finish_run"),
            checks.messages(messages, "finish_run"), self._me)
        if released:
            self._wake(finished.session_id)
        return finished

    async def abort_run(self, run_id: str) -> RunRecord:
        run, released = await self._write(runs.abort, self._log, self._cache, self._me, run_id)
        if released:
            self._wake(run.session_id)
        return run

    async def adopt_run(self, run_id: str) -> RunRecord | None:
        body = await self._write(leases.adopt, self._cache, self._me, run_id)
        return None if body is None else wire.loads(body, RunRecord)

    async def list_runs(
        self, session_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[RunRecord]:
        checks.limit(limit)
        bodies, next_cursor = await self._read(runs.page, session_id, limit, cursor)
        return Page(items=tuple(wire.loads(b, RunRecord) for b in bodies), next_cursor=next_cursor)

    # --- permission requests and grants -----------------------------------------------------

    async def add_permission_request(self, request: PermissionRequest) -> PermissionRequest:
        checks.pending(request)
        return await self._write(permissions.add, request)

    async def resolve_permission_request(
        self, request_id: str, *, decision: PermissionDecision, by: ResolvedBy,
        message: str | None = None, grant: Rule | None = None,
    ) -> PermissionRequest:
        return await self._write(permissions.resolve, request_id, decision, by, message, grant)

    async def get_permission_request(self, request_id: str) -> PermissionRequest:
        return wire.loads(await self._read(permissions.get, request_id), PermissionRequest)

    async def list_permission_requests(
        self, session_id: str, *, pending_only: bool = True
    ) -> list[PermissionRequest]:
        bodies = await self._read(permissions.of_session, session_id, pending_only)
        return [wire.loads(body, PermissionRequest) for body in bodies]

    async def list_grants(self, session_id: str) -> list[Rule]:
        return [wire.loads(body, Rule)
                for body in await self._read(permissions.grants, session_id)]

    # --- the event log ----------------------------------------------------------------------

    async def append_events(
        self, session_id: str, run_id: str, events: Sequence[LogEvent],
        messages: Sequence[Message] = (),
    ) -> int:
        checked = checks.events(events, "append_events")
        if not messages:
            return await self._write(eventlog.append_events, self._log, session_id, run_id,
                                     checked)
        return await self._write(_append_both, self._log, self._cache, session_id, run_id,
                                 checked, checks.messages(messages, "append_events"))

    async def read_events(
        self, session_id: str, *, after: int = 0, limit: int = 1000, run_id: str | None = None
    ) -> list[LoggedEvent]:
        checks.read_limit(limit)
        return await self._read(eventlog.read_events, session_id, after, limit, run_id)

    async def wait_events(self, session_id: str, *, after: int, timeout: float) -> int:
        return await self._log.wait(
            session_id, after, timeout, lambda: self._read(eventlog.last_seq, session_id)
        )

    async def prune_events(self, *, before: datetime) -> int:
        """Drop the deltas and pings of the runs that finished before ``before``, some runs
        per transaction (so that other writers get their turn)."""
        cutoff = checks.cutoff(before)
        dropped, more = 0, True
        while more:
            count, more = await self._write(eventlog.prune, cutoff)
            dropped += count
        return dropped

    # --- idempotency keys -------------------------------------------------------------------

    async def reserve_key(self, scope: str, key: str, request_hash: str, new_id: str) -> str:
        return await self._write(jobs.reserve_key, scope, key, request_hash, new_id)

    async def prune_keys(self, *, before: datetime) -> int:
        return await self._write(jobs.prune_keys, checks.cutoff(before))

    # --- credentials ------------------------------------------------------------------------

    async def set_credential(self, provider: str, credential: Credential) -> None:
        key, sealed = key_columns(self._cipher, provider, credential)
        await self._write(jobs.set_credential, provider, credential.type, credential.base_url,
                          key, sealed)

    async def get_credential(self, provider: str) -> Credential | None:
        return stored_credential(self._cipher, provider,
                                 await self._read(jobs.get_credential, provider))

    async def delete_credential(self, provider: str) -> bool:
        return await self._write(jobs.delete_credential, provider)

    async def list_credentials(self) -> dict[str, str]:
        return await self._read(jobs.list_credentials)

    async def close(self) -> None:
        """Give up this store's claims and places in their queues (their runs are recorded
        interrupted), then close: waits on claims and events raise
        :class:`~wingspan.StoreError`."""
        if self._closed:
            return
        with contextlib.suppress(StoreError):
            await asyncio.shield(self._write(leases.give_up, self._cache, self._me))
        self._closed = True
        await self._log.close(
            StoreError(f"the SQLite store {self.path} was closed while waiting for events")
        )
        with self._waiters_lock:
            sessions = list(self._waiters)
        for session_id in sessions:
            self._wake(session_id)
        await self._reader.stop()
        # Before the writer: a checkpoint in progress still hands the writer its rest, and
        # the writer's connection, closed last, checkpoints the log and removes it.
        await self._checkpoints.stop()
        await self._writer.stop()


def _finish_and_release(
    tx: Tx, watch: LogWatch, cache: HistoryCache, run: RunRecord,
    events: tuple[LogEvent, ...], messages: tuple[Message, ...], me: leases.Claimant,
) -> tuple[RunRecord, bool]:
    """:meth:`SqliteStore.finish_run`'s job: the run ended (its last turn stored with its
    end), and its claim given up, in one transaction (a run's end always goes with its
    release)."""
    finished = runs.finish(tx, watch, cache, run, events, messages)
    return finished, leases.release(tx, finished.session_id, run.id, me)


def _append_both(
    tx: Tx, watch: LogWatch, cache: HistoryCache, session_id: str, run_id: str,
    events: tuple[LogEvent, ...], messages: tuple[Message, ...],
) -> int:
    """:meth:`SqliteStore.append_events`' job with messages: both in one transaction."""
    jobs.append(tx, cache, session_id, messages)
    return eventlog.append_events(tx, watch, session_id, run_id, events)


#: The jobs short enough to run on the event loop when the worker is idle (see
#: :meth:`Worker.run_inline`): those of every run's steps and of a request's lookups, each
#: touching one session or record, and reads of few rows: a history with few rows not yet
#: cached (most runs'), the events a live follower has not read yet (a thread hop costs
#: more than decoding a few dozen of them). Each maps to what runs inline: the job itself,
#: or a variant that answers :data:`jobs.LONG` when the work is too long for the event
#: loop, so that the thread does it.
_SHORT: dict[Callable[..., Any], Callable[..., Any]] = {
    job: job for job in (
        jobs.insert, jobs.append, jobs.select_body, jobs.select_session, jobs.save_run,
        jobs.reserve_key, runs.admit, runs.start, runs.get, eventlog.append_events,
        eventlog.last_seq,
        leases.claim, leases.release, leases.claim_state, _finish_and_release, _append_both,
        permissions.add, permissions.resolve, permissions.get, permissions.grants,
    )
}
_SHORT[jobs.load] = jobs.load_recent
_SHORT[eventlog.read_events] = eventlog.read_recent_events
