"""The lifecycle of runs, run in the store's threads: admission, start, end, abort, listing.

Every change of a run's status appends its event to the session's log (``_events``) in the
same transaction, and wakes this store's waiters on that log once it commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

import wingspan
from wingspan import (
    FINISHED_STATUSES,
    ConflictError,
    ErrorEvent,
    ErrorInfo,
    LogEvent,
    Message,
    NotFoundError,
    RunQueued,
    RunRecord,
    RunStarted,
    wire,
)

from .._stores.history import HistoryCache
from .._stores.sql import MESSAGE_COUNT
from ._events import RUN_BODY, UNFINISHED, end_run, log, write_run
from ._jobs import append, session_pk
from ._leases import Claimant, abort_parked, join_queue, take_if_free
from ._worker import Tx

if TYPE_CHECKING:
    from ._watch import LogWatch

ABORTED_QUEUED = ErrorInfo(code="aborted", message="the run was aborted before it started")


def get(tx: Tx, run_id: str) -> str:
    """The body of a run's record (:data:`~._events.RUN_BODY`)."""
    return stored_body(tx, run_id)[1]


def stored_body(tx: Tx, run_id: str) -> tuple[int, str]:
    """``(session pk, body)`` of a run's record (:data:`~._events.RUN_BODY`)."""
    row = tx.conn.execute(f"SELECT session_pk, {RUN_BODY} FROM runs WHERE id = ?",
                          (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return row[0], row[1]


def stored_run(tx: Tx, run_id: str) -> tuple[int, RunRecord]:
    """``(session pk, record)`` of a run."""
    pk, body = stored_body(tx, run_id)
    return pk, wire.loads(body, RunRecord)


def _woken(tx: Tx, watch: LogWatch, pk: int, run: RunRecord) -> RunRecord:
    """Wake the waiters on the log of ``run``'s session once the transaction commits."""
    session_id, last_seq = run.session_id, run.last_seq or 0
    tx.effects.append(lambda: watch.appended(session_id, pk, last_seq))
    return run


def admit(
    tx: Tx, watch: LogWatch, cache: HistoryCache, me: Claimant, run: RunRecord, if_busy: str,
    start: tuple[Message, ...] | None, history_length: int | None,
) -> tuple[RunRecord, bool, bool, bool]:
    """Store ``run`` queued, give it its place in the claim queue — the claim itself when
    the session is free and nobody is in line, else a ticket (whichever process claims
    next) — and log its ``run_queued``; with ``start``, a run claimed at once on a history
    of ``history_length`` messages starts too (:meth:`Store.admit_run`).
    :returns: ``(stored run, created, claimed, started)``."""
    conn = tx.conn
    pk = session_pk(tx, run.session_id)
    if run.idempotency_key is not None:
        row = conn.execute(
            f"SELECT {RUN_BODY} FROM runs WHERE session_pk = ? AND idempotency_key = ?",
            (pk, run.idempotency_key),
        ).fetchone()
        if row is not None:
            first = wire.loads(row[0], RunRecord)
            if first.request_hash != run.request_hash:
                raise ConflictError(
                    f"idempotency key {run.idempotency_key!r} was already used for another "
                    f"request on session {run.session_id}; send a new key for a new request"
                )
            return first, False, False, False
    unfinished = conn.execute(
        f"SELECT id, {RUN_BODY} FROM runs WHERE session_pk = ? AND {UNFINISHED} ORDER BY id",
        (pk,),
    ).fetchall()
    if unfinished and if_busy == "reject":
        raise ConflictError(f"session {run.session_id} is busy with run {unfinished[0][0]}")
    if if_busy == "interrupt":
        for _, body in unfinished:
            busy = wire.loads(body, RunRecord)
            if busy.status == "queued" or not abort_parked(tx, cache, pk, busy, me):
                _abort(tx, watch, pk, busy)
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run.id,)).fetchone():
        raise ConflictError(f"run {run.id} already exists")
    claimed = take_if_free(tx, pk, run.id, me)
    if not claimed:
        join_queue(tx, pk, run.id, me)
    started = start is not None and claimed and conn.execute(
        f"SELECT {MESSAGE_COUNT} FROM sessions WHERE pk = ?", (pk,)
    ).fetchone()[0] == history_length
    if started:
        seq = log(tx, pk, run.id, [RunQueued(run_id=run.id), RunStarted(run_id=run.id)])
        stored = attrs.evolve(run, status="running", started_at=wingspan.utc_now(),
                              finished_at=None, first_seq=seq - 1, last_seq=seq)
    else:
        seq = log(tx, pk, run.id, [RunQueued(run_id=run.id)])
        stored = attrs.evolve(run, status="queued", started_at=None, finished_at=None,
                              first_seq=seq, last_seq=seq)
    conn.execute(
        "INSERT INTO runs (id, session_pk, status, body) VALUES (?, ?, ?, ?)",
        (stored.id, pk, stored.status, wire.dumps(stored)),
    )
    if started and start:
        append(tx, cache, run.session_id, start)
    return _woken(tx, watch, pk, stored), True, claimed, started


def start(tx: Tx, watch: LogWatch, cache: HistoryCache, run_id: str,
          messages: tuple[Message, ...]) -> RunRecord:
    """A queued run starts, its user message appended to the history with it."""
    pk, run = stored_run(tx, run_id)
    if run.status != "queued":
        raise ConflictError(f"run {run_id} cannot start: it is {run.status}, not queued")
    seq = log(tx, pk, run_id, [RunStarted(run_id=run_id)])
    run = attrs.evolve(run, status="running", started_at=wingspan.utc_now(), last_seq=seq)
    write_run(tx, run)
    if messages:
        append(tx, cache, run.session_id, messages)
    return _woken(tx, watch, pk, run)


def finish(
    tx: Tx, watch: LogWatch, cache: HistoryCache, run: RunRecord,
    events: tuple[LogEvent, ...], messages: tuple[Message, ...] = (),
) -> RunRecord:
    # The stored record is decoded only if it has ended already: its status is a column.
    row = tx.conn.execute(
        "SELECT session_pk, status, json_extract(body, '$.first_seq') FROM runs WHERE id = ?",
        (run.id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"run {run.id!r} not found")
    pk, status, first_seq = row
    if status in FINISHED_STATUSES:
        return stored_run(tx, run.id)[1]  # the first ending (a recovery's, say) wins
    if run.first_seq is None:
        run = attrs.evolve(run, first_seq=first_seq)
    if messages:
        append(tx, cache, run.session_id, messages)
    return _woken(tx, watch, pk, end_run(tx, pk, run, events))


def abort(tx: Tx, watch: LogWatch, cache: HistoryCache, me: Claimant,
          run_id: str) -> tuple[RunRecord, bool]:
    """:returns: the run as stored, and whether its session's claim was handed on."""
    pk, run = stored_run(tx, run_id)
    if run.status in FINISHED_STATUSES:
        raise ConflictError(f"run {run_id} has already finished ({run.status})")
    if run.status != "queued" and abort_parked(tx, cache, pk, run, me):
        return _woken(tx, watch, pk, stored_run(tx, run_id)[1]), True
    return _abort(tx, watch, pk, run), False


def _abort(tx: Tx, watch: LogWatch, pk: int, run: RunRecord) -> RunRecord:
    """Abort an unfinished run: a queued one ends now (its place in the queue stays: its
    executor, granted the claim, finds it finished and lets go); a running or waiting one
    is asked to stop by the process running it (one no process runs, parked, ends now:
    see :func:`abort`)."""
    if run.status != "queued":
        run = attrs.evolve(run, abort_requested=True)
        write_run(tx, run)
        return run
    run = attrs.evolve(
        run, status="aborted", finished_at=wingspan.utc_now(), error="aborted before it started"
    )
    return _woken(tx, watch, pk, end_run(tx, pk, run, [ErrorEvent(error=ABORTED_QUEUED)]))


def page(
    tx: Tx, session_id: str, limit: int, cursor: str | None
) -> tuple[list[str], str | None]:
    """The bodies of one page of a session's runs, newest first, and the next cursor."""
    pk = session_pk(tx, session_id)
    # Newest first by id, as every listing (see ``_jobs.page``); a range of the index
    # ``runs_by_session`` either way.
    args: tuple[object, ...]
    where, args = "session_pk = ?", (pk, limit + 1)
    if cursor is not None:
        where, args = "session_pk = ? AND id < ?", (pk, cursor, limit + 1)
    rows = tx.conn.execute(
        f"SELECT id, {RUN_BODY} FROM runs WHERE {where} ORDER BY id DESC LIMIT ?", args
    ).fetchall()
    shown = rows[:limit]
    return [body for _, body in shown], shown[-1][0] if len(rows) > limit else None

