"""The store object: each call one transaction on a pooled connection; a connection of its
own for ``LISTEN`` and for the advisory lock that says this instance is alive."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
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
    Page,
    PermissionDecision,
    PermissionRequest,
    ResolvedBy,
    Rule,
    RunRecord,
    SessionRecord,
    StoreError,
    wire,
)
from wingspan.plugins._stores import checks, sql
from wingspan.plugins._stores.claims import Unreleased
from wingspan.plugins._stores.history import HistoryCache, decode_messages
from wingspan.plugins._stores.secrets import Cipher, key_columns, stored_credential

from . import Options, redact
from . import _events as eventlog
from . import _jobs as jobs
from . import _leases as leases
from . import _permissions as permissions
from . import _runs as runs
from ._schema import migrate
from ._tx import CLAIMS, EVENTS, RUN, Tx

T = TypeVar("T")
log = logging.getLogger("wingspan.contrib.postgres")

#: Seconds between two looks at the database by a waiter no notice woke (a notice lost while
#: the listening connection was down): a safety net, not the way waiters learn of changes.
SAFETY_POLL = 2.0
#: Longest wait between two looks at a claim held by another instance: its holder may die
#: without a word (its lock is then gone, which only a look sees).
CLAIM_POLL = 0.5
#: The most messages a load decodes on the event loop (about 2 µs each); more are decoded
#: in a thread.
DECODED_ON_LOOP = 64
#: Decoded messages kept in memory, so that reloading a recently used history decodes only
#: its new rows.
CACHED_MESSAGES = 20_000
#: What the prunes of the event log serialise on (one prune at a time; it changes no
#: session's state that a session's lock guards, only what the log keeps of finished runs).
PRUNE = "\0prune"
#: Seconds between two looks for instances that died holding claims (one read of the claims'
#: owners against the locks held; their sessions are recovered when there are some).
PEER_POLL = 1.0
#: What the driver raises when the database cannot be reached or fails a statement.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Waiters:
    """The calls of this instance waiting to hear of something (a session's events, a
    session's claim, a run's record), by key; a notice wakes those of its key."""

    def __init__(self) -> None:
        self._futures: dict[str, set[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def watching(self, key: str) -> Iterator[asyncio.Future[None]]:
        """A future done once ``key`` is woken: enter before looking at the database, so
        that a wake-up between the look and the wait is never missed."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            self._futures.get(key, set()).discard(woken)

    def wake(self, key: str) -> None:
        for future in self._futures.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        for key in list(self._futures):
            self.wake(key)


async def woken_or_after(woken: asyncio.Future[None], timeout: float) -> None:
    """Wait until ``woken`` is done, or ``timeout`` seconds pass."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(woken, timeout)


class PostgresStore:
    """A :class:`wingspan.Store` in a PostgreSQL schema. Open it with
    ``wingspan.open_store("postgresql://...")`` (with the ``postgres`` extra installed)."""

    def __init__(self, dsn: str, options: Options, cipher: Cipher | None = None) -> None:
        self.dsn = dsn
        self.options = options
        self.where = f"{redact(dsn)} (schema {options.schema})"
        self._cipher = cipher
        self._me = leases.Claimant(owner=uuid.uuid4().hex, ttl=options.lease_ttl)
        self._unreleased = Unreleased()
        self._cache = HistoryCache(CACHED_MESSAGES)
        self._channel = f"wingspan {options.schema}"
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._peers: asyncio.Task[None] | None = None
        self._events = Waiters()  # by session id: its log grew (or it was deleted)
        self._claims = Waiters()  # by session id: its claim was freed or handed on
        self._runs = Waiters()  # by run id: its record changed
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self.where!r}{' closed' if self._closed else ''}>"

    # --- the connections ----------------------------------------------------------------------

    def _connect_args(self) -> dict[str, Any]:
        return {
            "timeout": self.options.timeout,
            "command_timeout": self.options.timeout,
            "server_settings": {"search_path": self.options.schema,
                                "application_name": "wingspan"},
        }

    async def _start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.options.pool_min, max_size=self.options.pool_max,
                reset=_reset, **self._connect_args())
            async with self._pool.acquire() as conn:
                await migrate(conn, self.options.schema, self.where)
            await self._listen()
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, DRIVER_ERRORS):
                raise self._error(exc) from None
            raise
        if self._cipher is not None:
            # Keys stored before a secret key was configured are sealed now.
            await self._write(jobs.seal_plain_credentials, self._cipher.seal, lock=None)
        # The claims of instances that died (a server killed with SIGKILL) are recovered now
        # rather than when someone next claims their sessions.
        with contextlib.suppress(wingspan.WingspanError):
            await self._sweep()
        self._renewer = asyncio.ensure_future(self._renew_forever())
        self._peers = asyncio.ensure_future(self._recover_dead_peers())

    async def _listen(self) -> None:
        """Open the connection that holds this instance's advisory lock (its claims are
        recovered by others as soon as that lock is gone) and listens to the channel."""
        listener = await asyncpg.connect(self.dsn, **self._connect_args())
        try:
            await listener.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))",
                                   self._me.owner)
            await listener.add_listener(self._channel, self._on_notice)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        owner, _, notice = payload.partition(" ")
        if owner != self._me.owner:  # this instance's own were applied at its commit
            self._apply([notice])

    def _apply(self, notices: Sequence[str]) -> None:
        """Wake the waiters the notices concern."""
        for notice in notices:
            kind, _, subject = notice.partition(" ")
            waiters = {EVENTS: self._events, CLAIMS: self._claims, RUN: self._runs}.get(kind)
            if waiters is not None:
                waiters.wake(subject)

    def _wake_all(self) -> None:
        for waiters in (self._events, self._claims, self._runs):
            waiters.wake_all()

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError,
                            asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.CannotConnectNowError,
                            asyncpg.exceptions.TooManyConnectionsError)):
            return StoreError(f"cannot reach the PostgreSQL database {self.where}: "
                              f"{type(exc).__name__}: {exc}")
        if isinstance(exc, asyncpg.exceptions.InvalidAuthorizationSpecificationError):
            return StoreError(f"the PostgreSQL server refused the connection to {self.where}: "
                              f"{exc}")
        return StoreError(f"the PostgreSQL database {self.where} failed: {exc}")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._closed or self._pool is None:
            raise StoreError(f"the PostgreSQL store {self.where} is closed")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise self._error(exc) from None

    def _lock_key(self, session_id: str) -> int:
        """The advisory lock of ``session_id``'s writes: 64 bits of a hash of the schema and
        the id, the same in every instance."""
        digest = hashlib.blake2b(f"{self.options.schema}\0{session_id}".encode(),
                                 digest_size=8, person=b"wingspan-writes").digest()
        return int.from_bytes(digest, "big", signed=True)

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any,
                     lock: str | None) -> T:
        """Run the job ``fn(tx, *args)`` in a transaction, its notices sent with it; wake
        this instance's waiters once it commits.

        :param lock: the session whose state the job reads and changes: the transaction
            holds that session's advisory lock from its start, so the writes to one session
            are serialised across every instance, as the SQLite store's one writer serialises
            them, while other sessions' go on beside them. ``None`` for a job of single
            statements that are atomic by themselves (a record's insert, update or delete).
        """
        async with self._connection() as conn:
            tx = Tx(conn)
            if lock is None:
                await conn.execute("BEGIN")
            else:  # one round trip for both (a simple query: the key is a number)
                await conn.execute(
                    f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key(lock)})")
            try:
                value = await fn(tx, *args)
                if tx.notices:
                    await conn.execute(
                        "SELECT pg_notify($1, $2 || ' ' || notice) "
                        "FROM unnest($3::text[]) AS notice",
                        self._channel, self._me.owner, tx.notices)
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # a broken connection is dropped anyway
                    await conn.execute("ROLLBACK")
                raise
        for effect in tx.effects:
            effect()
        self._apply(tx.notices)
        return value

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any,
                    snapshot: bool = False) -> T:
        """Run the reading job ``fn(tx, *args)``; with ``snapshot``, all its statements see
        one state of the database."""
        async with self._connection() as conn:
            if not snapshot:
                return await fn(Tx(conn), *args)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await fn(Tx(conn), *args)

    # --- agents -------------------------------------------------------------------------------

    async def create_agent(self, agent: AgentRecord) -> AgentRecord:
        await self._write(jobs.insert, "agents", "agent", agent.id, wire.dumps(agent), lock=None)
        return agent

    async def get_agent(self, agent_id: str) -> AgentRecord:
        body = await self._read(jobs.select_body, "agents", "agent", agent_id)
        return wire.loads(body, AgentRecord)

    async def update_agent(self, agent: AgentRecord) -> AgentRecord:
        await self._write(jobs.update_body, "agents", "agent", agent.id, wire.dumps(agent),
                          lock=None)
        return agent

    async def delete_agent(self, agent_id: str) -> None:
        await self._write(jobs.delete, "agents", "agent", agent_id, lock=None)

    async def list_agents(self, *, limit: int = 50, cursor: str | None = None) -> Page[AgentRecord]:
        checks.limit(limit)
        rows, next_cursor = await self._read(jobs.page, "agents", "body", limit, cursor)
        return Page(items=tuple(wire.loads(body, AgentRecord) for (body,) in rows),
                    next_cursor=next_cursor)

    # --- sessions -----------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        body = wire.dumps(attrs.evolve(session, message_count=0, last_seq=0))
        await self._write(jobs.insert, "sessions", "session", session.id, body, lock=None)
        return attrs.evolve(session, message_count=0, last_seq=0)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self._read(jobs.select_session, session_id)

    async def update_session(self, session: SessionRecord) -> SessionRecord:
        body = wire.dumps(attrs.evolve(session, message_count=0, last_seq=0))
        count, last_seq = await self._write(jobs.update_session, session.id, body, lock=None)
        return attrs.evolve(session, message_count=count, last_seq=last_seq)

    async def delete_session(self, session_id: str) -> None:
        """Delete a session with its messages, runs and events; waits on its claim or its
        events raise :class:`~wingspan.NotFoundError`."""
        await self._write(jobs.delete_session, session_id, lock=session_id)

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]:
        checks.limit(limit)
        rows, next_cursor = await self._read(
            jobs.page, "sessions", sql.SESSION_COLUMNS, limit, cursor)
        return Page(items=tuple(sql.session(*row) for row in rows), next_cursor=next_cursor)

    # --- history ------------------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        checked = checks.messages(messages, "append_messages")
        return await self._write(jobs.append, session_id, checked, lock=session_id)

    async def load_messages(self, session_id: str) -> list[Message]:
        pk, known, bodies = await self._read(jobs.load_rows, self._cache, session_id,
                                             snapshot=True)
        try:
            if len(bodies) <= DECODED_ON_LOOP:
                new = decode_messages(bodies)
            else:  # (10,000 messages take tens of milliseconds: not on the event loop)
                new = await asyncio.to_thread(decode_messages, bodies)
        except wingspan.ValidationError as exc:
            raise StoreError(
                f"a stored message of session {session_id} is damaged: {exc}") from None
        if new:
            self._cache.add(session_id, pk, len(known), new)
        return known + new

    # --- runs and their serialisation ---------------------------------------------------------

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        granted, ticket = await self._write(
            leases.claim, self._unreleased, session_id, holder, self._me, wait, lock=session_id)
        if granted or not wait:
            return granted
        assert ticket is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                with self._claims.watching(session_id) as woken:
                    state, expires_at, now = await self._read(
                        _claim_state, session_id, ticket, self._me)
                    if state == "granted":
                        return True
                    # "act": a lapsed lease or a dead holder to recover, or we lost our
                    # place. A release of ours that failed is retried before any write.
                    if state == "act" or self._unreleased.on(session_id):
                        granted, ticket = await self._write(
                            leases.poll_claim, session_id, ticket, holder, self._me,
                            lock=session_id)
                        if granted:
                            return True
                        if state == "act":
                            continue
                    # A release anywhere wakes us (NOTIFY); a holder that dies says nothing,
                    # so look again after a while, and when its lease would lapse.
                    delay = min(CLAIM_POLL, max(0.0, expires_at - now) + 0.001)
                    if deadline is not None:
                        delay = min(delay, deadline - loop.time())
                        if delay <= 0:
                            raise TimeoutError
                    await woken_or_after(woken, delay)
                    if self._closed:
                        raise StoreError(f"the PostgreSQL store {self.where} was closed "
                                         "while waiting for a claim")
        except TimeoutError:
            return await asyncio.shield(
                self._write(leases.abandon, session_id, ticket, False, self._me,
                            lock=session_id))
        except BaseException:
            if not self._closed:
                # Granted meanwhile? Then hand it on; else leave the queue.
                with contextlib.suppress(StoreError):
                    await asyncio.shield(
                        self._write(leases.abandon, session_id, ticket, True, self._me,
                                    lock=session_id))
            raise

    async def release_session(self, session_id: str, holder: str) -> None:
        try:
            await self._write(leases.release, session_id, holder, self._me, lock=session_id)
        except StoreError as exc:
            if self._closed:
                raise
            # The database cannot be reached now. The claim must not outlive its run: it is
            # no longer renewed, and it is released by the renewer as soon as it can write.
            self._unreleased.add(session_id, holder, str(exc))

    async def _renew_forever(self) -> None:
        """Keep this instance's claims alive, write the releases that failed, and listen
        again if the listening connection broke."""
        while not self._closed:
            await asyncio.sleep(self.options.lease_ttl / 3)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                    log.warning("listening again on %s after its connection was lost",
                                self.where)
                    self._wake_all()  # each looks again: notices may have been missed
                for session_id in sorted({claim[0] for claim in self._unreleased.snapshot()}):
                    await self._write(leases.release_unreleased, self._unreleased, self._me,
                                      session_id, lock=session_id)
                await self._write(leases.renew, self._me, self._unreleased.snapshot().keys(),
                                  lock=None)  # (its own rows' times only)
            except (wingspan.WingspanError, *DRIVER_ERRORS) as exc:
                log.warning("renewing the claims of %s failed: %s", self.where, exc)

    async def _recover_dead_peers(self) -> None:
        """Recover, within about :data:`PEER_POLL`, the sessions of instances that died
        (their connections closed, so their locks are gone), whether anybody waits on those
        sessions or not."""
        while not self._closed:
            await asyncio.sleep(PEER_POLL)
            try:
                await self._sweep()
            except (wingspan.WingspanError, *DRIVER_ERRORS) as exc:
                log.debug("looking for instances that died failed: %s", exc)

    async def _sweep(self) -> None:
        """Recover the sessions of the instances that are gone, one session a transaction."""
        for session_id in await self._read(leases.sessions_to_sweep, self._me):
            await self._write(leases.sweep, self._me, session_id, lock=session_id)

    async def _session_of_run(self, run_id: str) -> str:
        """The session of a run (which never changes). :raises NotFoundError: no such run."""
        return (await self._read(jobs.get_run, run_id)).session_id

    async def wait_run_change(self, run_id: str, *, timeout: float) -> None:
        """Return when run ``run_id``'s record may have changed (a write of it by any
        instance: an abort asked for, say), or after ``timeout`` seconds (what
        :func:`wingspan.runs.watch_for_abort` waits on instead of polling)."""
        with self._runs.watching(run_id) as woken:
            await woken_or_after(woken, timeout)

    async def save_run(self, run: RunRecord) -> None:
        await self._write(jobs.save_run, run, lock=run.session_id)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._read(jobs.get_run, run_id)

    # --- runs: admission, lifecycle and listing -----------------------------------------------

    async def admit_run(
        self, run: RunRecord, *, if_busy: IfBusy = "queue",
        start: Sequence[Message] | None = None, history_length: int | None = None,
    ) -> Admission:
        checks.admission(run, if_busy)
        checked = None if start is None else checks.messages(start, "admit_run")
        stored, created, claimed, started = await self._write(
            runs.admit, self._me, run, if_busy, checked, history_length, lock=run.session_id)
        return Admission(run=stored, created=created, claimed=claimed, started=started)

    async def start_run(self, run_id: str, messages: Sequence[Message] = ()) -> RunRecord:
        checked = checks.messages(messages, "start_run")
        return await self._write(runs.start, run_id, checked,
                                 lock=await self._session_of_run(run_id))

    async def finish_run(
        self, run: RunRecord, events: Sequence[LogEvent] = (),
        messages: Sequence[Message] = (),
    ) -> RunRecord:
        checks.finished(run)
        return await self._write(
            _finish_and_release, run, checks.events(events, "finish_run"),
            checks.messages(messages, "finish_run"), self._me,
            lock=await self._session_of_run(run.id))

    async def abort_run(self, run_id: str) -> RunRecord:
        run, _ = await self._write(runs.abort, self._me, run_id,
                                   lock=await self._session_of_run(run_id))
        return run

    async def adopt_run(self, run_id: str) -> RunRecord | None:
        return await self._write(leases.adopt, self._me, run_id,
                                 lock=await self._session_of_run(run_id))

    async def list_runs(
        self, session_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[RunRecord]:
        checks.limit(limit)
        records, next_cursor = await self._read(runs.page, session_id, limit, cursor,
                                                snapshot=True)
        return Page(items=tuple(records), next_cursor=next_cursor)

    # --- permission requests and grants -------------------------------------------------------

    async def add_permission_request(self, request: PermissionRequest) -> PermissionRequest:
        checks.pending(request)
        return await self._write(permissions.add, request,
                                 lock=await self._session_of_run(request.run_id))

    async def resolve_permission_request(
        self, request_id: str, *, decision: PermissionDecision, by: ResolvedBy,
        message: str | None = None, grant: Rule | None = None,
    ) -> PermissionRequest:
        session_id = (await self._read(permissions.get, request_id)).session_id
        return await self._write(permissions.resolve, request_id, decision, by, message, grant,
                                 lock=session_id)

    async def get_permission_request(self, request_id: str) -> PermissionRequest:
        return await self._read(permissions.get, request_id)

    async def list_permission_requests(
        self, session_id: str, *, pending_only: bool = True
    ) -> list[PermissionRequest]:
        return await self._read(permissions.of_session, session_id, pending_only, snapshot=True)

    async def list_grants(self, session_id: str) -> list[Rule]:
        return await self._read(permissions.grants, session_id, snapshot=True)

    # --- the event log ------------------------------------------------------------------------

    async def append_events(
        self, session_id: str, run_id: str, events: Sequence[LogEvent],
        messages: Sequence[Message] = (),
    ) -> int:
        checked = checks.events(events, "append_events")
        return await self._write(_append_both, session_id, run_id, checked,
                                 checks.messages(messages, "append_events"), lock=session_id)

    async def read_events(
        self, session_id: str, *, after: int = 0, limit: int = 1000, run_id: str | None = None
    ) -> list[LoggedEvent]:
        checks.read_limit(limit)
        return await self._read(eventlog.read_events, session_id, after, limit, run_id,
                                snapshot=True)

    async def wait_events(self, session_id: str, *, after: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._events.watching(session_id) as woken:
                _, last = await self._read(eventlog.last_seq, session_id)
                left = deadline - loop.time()
                if last > after or left <= 0:
                    return last
                await woken_or_after(woken, min(left, SAFETY_POLL))
            if self._closed:
                raise StoreError(
                    f"the PostgreSQL store {self.where} was closed while waiting for events")

    async def prune_events(self, *, before: datetime) -> int:
        """Drop the deltas and pings of the runs that finished before ``before``, some runs
        per transaction (so that other writers get their turn)."""
        cutoff = checks.cutoff(before)
        dropped, more = 0, True
        while more:
            count, more = await self._write(eventlog.prune, cutoff, lock=PRUNE)
            dropped += count
        return dropped

    # --- idempotency keys ---------------------------------------------------------------------

    async def reserve_key(self, scope: str, key: str, request_hash: str, new_id: str) -> str:
        return await self._write(jobs.reserve_key, scope, key, request_hash, new_id, lock=None)

    async def prune_keys(self, *, before: datetime) -> int:
        return await self._write(jobs.prune_keys, checks.cutoff(before), lock=None)

    # --- credentials --------------------------------------------------------------------------

    async def set_credential(self, provider: str, credential: Credential) -> None:
        key, sealed = key_columns(self._cipher, provider, credential)
        await self._write(jobs.set_credential, provider, credential.type, credential.base_url,
                          key, sealed, lock=None)

    async def get_credential(self, provider: str) -> Credential | None:
        return stored_credential(self._cipher, provider,
                                 await self._read(jobs.get_credential, provider))

    async def delete_credential(self, provider: str) -> bool:
        return await self._write(jobs.delete_credential, provider, lock=None)

    async def list_credentials(self) -> dict[str, str]:
        return await self._read(jobs.list_credentials)

    # --- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Give up this instance's claims and places in their queues (their runs are recorded
        interrupted), then close: waits on claims and events raise
        :class:`~wingspan.StoreError`."""
        if self._closed:
            return
        with contextlib.suppress(StoreError):
            await asyncio.shield(self._give_up())
        self._closed = True
        for task in (self._renewer, self._peers):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._wake_all()
        await self._close_connections()

    async def _give_up(self) -> None:
        for session_id in await self._read(leases.own_sessions, self._me):
            await self._write(leases.give_up, self._me, session_id, lock=session_id)

    async def _close_connections(self) -> None:
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=self.options.timeout)
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), self.options.timeout)


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: the end of a transaction a
    cancelled call left open. (asyncpg's default also unlistens, closes cursors, releases
    session advisory locks and resets settings — five statements a call, and no call here
    leaves any of them behind: the listening connection and this instance's lock are not
    the pool's.)"""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _claim_state(
    tx: Tx, session_id: str, ticket: int, me: leases.Claimant
) -> tuple[str, float, float]:
    """:func:`leases.claim_state` and the database's clock, to judge its lapse time by."""
    state, expires_at = await leases.claim_state(tx, session_id, ticket, me)
    return state, expires_at, await tx.now()


async def _finish_and_release(
    tx: Tx, run: RunRecord, events: tuple[LogEvent, ...], messages: tuple[Message, ...],
    me: leases.Claimant,
) -> RunRecord:
    """:meth:`PostgresStore.finish_run`'s job: the run ended (its last turn stored with its
    end), and its claim given up, in one transaction."""
    finished = await runs.finish(tx, run, events, messages)
    await leases.release(tx, finished.session_id, run.id, me)
    return finished


async def _append_both(
    tx: Tx, session_id: str, run_id: str, events: tuple[LogEvent, ...],
    messages: tuple[Message, ...],
) -> int:
    """:meth:`PostgresStore.append_events`' job: the messages and the events in one
    transaction."""
    if messages:
        await jobs.append(tx, session_id, messages)
    return await eventlog.append_events(tx, session_id, run_id, events)
