"""The store's threads: each owns one connection and runs jobs sent from event loops."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeAlias

import wingspan
from wingspan import StoreError

from ._schema import begin_immediate, truncate_wal

#: The most jobs committed in one transaction.
MAX_BATCH = 64


class Tx:
    """What a job sees: the connection, and effects to apply once its transaction commits.

    A job that removed a secret sets ``truncate_wal``: once the transaction commits, the
    write-ahead log is copied into the database file and emptied, before the call returns.
    """

    __slots__ = ("conn", "effects", "truncate_wal")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.effects: list[Callable[[], None]] = []
        self.truncate_wal = False


Job: TypeAlias = tuple[
    Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, asyncio.Future[Any]
]
#: Put in place of a job when the queue stayed empty for the idle interval.
IDLE: Any = object()
#: Put in the queue to have the writer checkpoint what the :class:`Checkpointer` left.
CHECKPOINT: Any = object()
#: Commits between two checkpoints of the write-ahead log by the :class:`Checkpointer`
#: (SQLite checkpoints after 1000 pages by itself, but in whichever commit passes them: it
#: could be one on the event loop).
CHECKPOINT_EVERY = 500


class Worker:
    """A thread owning one connection, running jobs sent from event loops.

    A writer runs each batch of queued jobs in one ``BEGIN IMMEDIATE`` transaction; a
    reader runs jobs one by one in autocommit mode. ``before_write`` runs in the thread before
    each write transaction, ``idle`` whenever ``idle_interval`` seconds have passed since it
    last ran; both are best effort (a database error they raise is dropped).

    :meth:`run_inline` runs a short job on the caller's thread instead, when nothing is
    queued, the connection is free and (for a writer) the write lock is free at once: a
    thread hop costs several times such a job. A writer given ``checkpoints`` leaves the
    write-ahead log's checkpoints to it, so that no commit of its own does one.
    """

    def __init__(
        self,
        name: str,
        open_connection: Callable[[], sqlite3.Connection],
        error: Callable[[sqlite3.Error], StoreError],
        *,
        writer: bool,
        before_write: Callable[[sqlite3.Connection], None] | None = None,
        idle: Callable[[sqlite3.Connection], None] | None = None,
        idle_interval: float = 3600.0,
        checkpoints: Checkpointer | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._open = open_connection
        self._error = error
        self._writer = writer
        self._before_write = before_write
        self._idle = idle
        self._idle_interval = idle_interval
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._checkpoints = checkpoints
        #: Seconds a write waits for another connection's write lock.
        self._timeout = timeout
        #: Held while the connection is in use, by the thread or by :meth:`run_inline`.
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        #: Commits since the last checkpoint (inline ones included).
        self._commits = 0
        #: Results of the jobs just run, for :meth:`_deliver` (the thread's alone).
        self._outbox: list[tuple[asyncio.AbstractEventLoop, list[Result]]] = []
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._thread.start()
        try:
            await self._started
        except BaseException:
            await asyncio.shield(self._stopped)
            raise

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    async def stop(self) -> None:
        self._jobs.put(None)
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    def _main(self) -> None:
        assert self._started is not None and self._stopped is not None
        loop = self._started.get_loop()
        try:
            try:
                connection = self._open()
            except sqlite3.Error as exc:
                notify(loop, [(self._started, None, self._error(exc))])
                return
            except Exception as exc:
                notify(loop, [(self._started, None, exc)])
                return
            try:
                if self._writer:
                    connection.execute("PRAGMA busy_timeout = 0")  # see begin_immediate
                    if self._checkpoints is not None:
                        connection.execute("PRAGMA wal_autocheckpoint = 0")
                self._connection = connection
                notify(loop, [(self._started, None, None)])
                self._serve(connection)
            finally:
                with self._lock:
                    self._connection = None
                    connection.close()
        finally:
            notify(loop, [(self._stopped, None, None)])

    def _serve(self, connection: sqlite3.Connection) -> None:
        jobs = self._jobs
        next_idle = time.monotonic() + self._idle_interval
        while True:
            try:
                job = jobs.get(timeout=max(0.0, next_idle - time.monotonic()))
            except queue.Empty:
                job = IDLE
            if job is None:
                return
            if job is CHECKPOINT:
                with self._lock:
                    checkpoint(connection)
            elif job is not IDLE and not self._writer:
                with self._lock:
                    self._run(connection, job)
                self._deliver()
            elif job is not IDLE:
                batch = [job]
                while len(batch) < MAX_BATCH:
                    try:
                        more = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        jobs.put(None)  # stop after this batch
                        break
                    batch.append(more)
                with self._lock:
                    self._commit(connection, batch)
                    self._committed()
                self._deliver()
            if self._idle is not None and time.monotonic() >= next_idle:
                next_idle = time.monotonic() + self._idle_interval
                with self._lock, contextlib.suppress(sqlite3.Error, wingspan.WingspanError):
                    self._idle(connection)

    def run_inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Run the job ``fn(tx, *args)`` here, now, if the worker is idle: nothing queued,
        the connection free, and for a writer the database's write lock free at once (no
        wait: a lock held by another connection sends the job to the thread, which waits
        for it). :returns: whether it ran, and its value.

        :raises StoreError: what the job's transaction raised (the worker's error mapping).
        """
        connection = self._connection
        if connection is None or not self._jobs.empty() or not self._lock.acquire(False):
            return False, None
        try:
            if connection is not self._connection:  # closed meanwhile
                return False, None
            if not self._writer:
                try:
                    return True, fn(Tx(connection), *args)
                except sqlite3.Error as exc:
                    raise self._error(exc) from None
            return self._commit_inline(connection, fn, args)
        finally:
            self._lock.release()

    def _commit_inline(
        self, connection: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        if connection.in_transaction:
            return False, None  # a failure left it open: the thread ends it (_begin)
        try:
            connection.execute("BEGIN IMMEDIATE")  # no busy handler: it never waits here
        except sqlite3.OperationalError:
            return False, None  # the write lock is taken: the thread waits its turn
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        tx = Tx(connection)
        try:
            value = fn(tx, *args)
            connection.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise
        if tx.truncate_wal:
            with contextlib.suppress(sqlite3.Error):
                truncate_wal(connection)
        for effect in tx.effects:
            effect()
        self._committed()
        return True, value

    def _committed(self) -> None:
        """Count a commit (the lock held), and ask for a checkpoint of the log once per
        :data:`CHECKPOINT_EVERY` commits."""
        self._commits += 1
        if self._checkpoints is not None and self._commits >= CHECKPOINT_EVERY:
            self._commits = 0
            self._checkpoints.due(lambda: self._jobs.put(CHECKPOINT))

    def _run(self, connection: sqlite3.Connection, job: Job) -> None:
        fn, args, loop, future = job
        value: Any = None
        error: Exception | None = None
        try:
            value = fn(Tx(connection), *args)
        except sqlite3.Error as exc:
            error = self._error(exc)
        except Exception as exc:
            error = exc
        self._outbox.append((loop, [(future, value, error)]))

    def _commit(self, connection: sqlite3.Connection, batch: list[Job]) -> None:
        """Run ``batch`` in one transaction. Jobs rarely fail, so there is no savepoint per
        job (each costs two more statements, and every statement lets other threads take the
        GIL): when one fails, the transaction is rolled back and each job runs on its own."""
        txs = [Tx(connection) for _ in batch]
        values: list[Any] = []
        try:
            self._begin(connection)
        except sqlite3.Error as exc:
            self._settle(batch, txs, None, self._error(exc))
            return
        try:
            for (fn, args, _, _), tx in zip(batch, txs, strict=True):
                values.append(fn(tx, *args))
        except Exception as exc:
            error = self._error(exc) if isinstance(exc, sqlite3.Error) else exc
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            if len(batch) == 1 or connection.in_transaction:
                self._settle(batch, txs, None, error)
            else:
                for job in batch:
                    self._commit(connection, [job])
            return
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            self._settle(batch, txs, None, self._error(exc))
            return
        if any(tx.truncate_wal for tx in txs):
            # Committed either way; a log that cannot be emptied now is overwritten later.
            with contextlib.suppress(sqlite3.Error):
                truncate_wal(connection)
        self._settle(batch, txs, values, None)

    def _begin(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            # A failure the rollback did not end (a ROLLBACK can fail too): end it now, or
            # no write would ever start again on this connection.
            connection.execute("ROLLBACK")
        if self._before_write is not None:
            # Its own transaction: whether it succeeds (a full disk) is no concern of the
            # batch, which says for itself whether the database can be written.
            with contextlib.suppress(sqlite3.Error, wingspan.WingspanError):
                self._before_write(connection)
        begin_immediate(connection, self._timeout)

    def _settle(
        self, batch: list[Job], txs: list[Tx], values: list[Any] | None, error: Exception | None
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for position, (_, _, loop, future) in enumerate(batch):
            if values is None:
                settled = (future, None, error)
            else:
                for effect in txs[position].effects:
                    effect()
                settled = (future, values[position], None)
            by_loop.setdefault(loop, []).append(settled)
        self._outbox.extend(by_loop.items())

    def _deliver(self) -> None:
        """Hand the results of the jobs run to their loops: once the connection is free
        again, so that the callers' next calls find it free (and may run inline)."""
        outbox, self._outbox = self._outbox, []
        for loop, results in outbox:
            notify(loop, results)


def checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database, best effort: a reader in the way leaves
    the rest for the next time."""
    with contextlib.suppress(sqlite3.Error):
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class Checkpointer:
    """A thread with a connection of its own that copies the write-ahead log into the
    database file when asked (:meth:`due`), best effort (:func:`checkpoint`).

    A checkpoint syncs the database file to disk: tens of milliseconds. Done on the
    writer's connection, it kept that connection as long, and every write of the event
    loop waited behind it (a sixth of the time of a 100-step run). A ``PASSIVE``
    checkpoint runs beside a writer when it is on another connection; but SQLite starts
    the log over only when a write begins with every frame copied, which never happens
    while writes go on beside the checkpoint. So the writer is then asked to copy the
    frames committed meanwhile (a few, quickly): its next write starts the log over.
    """

    def __init__(self, name: str, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        #: What to call once each checkpoint is done; ``None``: stop.
        self._asked: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def due(self, then: Callable[[], None]) -> None:
        """Checkpoint the log, then call ``then`` (in the checkpointer's thread)."""
        self._asked.put(then)

    async def stop(self) -> None:
        self._asked.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while (then := self._asked.get()) is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection = connection or self._open()  # opened when first needed
                if connection is not None:
                    checkpoint(connection)
                then()
        finally:
            if connection is not None:
                connection.close()


Result: TypeAlias = tuple[asyncio.Future[Any], Any, Any]

#: Results handed to each event loop that it has not taken yet (see :func:`notify`).
_pending: dict[asyncio.AbstractEventLoop, list[Result]] = {}
_pending_lock = threading.Lock()


def notify(loop: asyncio.AbstractEventLoop, results: list[Result]) -> None:
    """Hand ``results`` to ``loop``. Waking a loop is a thread switch (tens of µs here), so
    results that arrive before it has taken the previous ones (from the writer and the
    reader, or from several jobs) ride on the same wake-up: whoever finds no results
    pending schedules the one :func:`_deliver` that takes them all."""
    with _pending_lock:
        pending = _pending.get(loop)
        if pending is not None:
            pending.extend(results)
            return
        # A loop closed before it ran its delivery leaves its results here: drop them.
        for closed in [other for other in _pending if other.is_closed()]:
            del _pending[closed]
        _pending[loop] = results
    try:
        loop.call_soon_threadsafe(_deliver, loop)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        with _pending_lock:
            _pending.pop(loop, None)


def _deliver(loop: asyncio.AbstractEventLoop) -> None:
    with _pending_lock:
        results = _pending.pop(loop, [])
    settle(results)


def settle(results: list[Result]) -> None:
    for future, value, error in results:
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
