"""The lifecycle of runs, run in the store's transactions: admission, start, end, abort,
listing.

Every change of a run's status appends its event to the session's log (``_events``) in the
same transaction, which tells the waiters on that log, in every instance, once it commits.
"""

from __future__ import annotations

from collections.abc import Sequence

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
)
from wingspan.plugins._stores.sql import MESSAGE_COUNT

from ._events import UNFINISHED, end_run, log
from ._jobs import (
    RUN_COLUMNS,
    append,
    get_run,
    insert_run,
    run_record,
    session_pk,
    stored_run,
    write_run,
)
from ._leases import Claimant, abort_parked, join_queue, take_if_free
from ._tx import Tx

ABORTED_QUEUED = ErrorInfo(code="aborted", message="the run was aborted before it started")


async def admit(
    tx: Tx, me: Claimant, run: RunRecord, if_busy: str,
    start: Sequence[Message] | None, history_length: int | None,
) -> tuple[RunRecord, bool, bool, bool]:
    """Store ``run`` queued, give it its place in the claim queue — the claim itself when
    the session is free and nobody is in line, else a ticket (whichever instance claims
    next) — and log its ``run_queued``; with ``start``, a run claimed at once on a history
    of ``history_length`` messages starts too (:meth:`Store.admit_run`).
    :returns: ``(stored run, created, claimed, started)``."""
    conn = tx.conn
    pk = await session_pk(tx, run.session_id)
    if run.idempotency_key is not None:
        # Not unique (a saved run may repeat a key): the first run with it answers.
        row = await conn.fetchrow(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_pk = $1 AND idempotency_key = $2 "
            "ORDER BY id LIMIT 1",
            pk, run.idempotency_key)
        if row is not None:
            first = run_record(row[0], row[1])
            if first.request_hash != run.request_hash:
                raise ConflictError(
                    f"idempotency key {run.idempotency_key!r} was already used for another "
                    f"request on session {run.session_id}; send a new key for a new request"
                )
            return first, False, False, False
    unfinished = await conn.fetch(
        f"SELECT id, {RUN_COLUMNS} FROM runs WHERE session_pk = $1 AND {UNFINISHED} "
        "ORDER BY id",
        pk)
    if unfinished and if_busy == "reject":
        raise ConflictError(f"session {run.session_id} is busy with run {unfinished[0][0]}")
    if if_busy == "interrupt":
        for _, body, last_seq in unfinished:
            busy = run_record(body, last_seq)
            if busy.status == "queued" or not await abort_parked(tx, pk, busy, me):
                await _abort(tx, pk, busy)
    if await conn.fetchval("SELECT 1 FROM runs WHERE id = $1", run.id) is not None:
        raise ConflictError(f"run {run.id} already exists")
    claimed = await take_if_free(tx, pk, run.id, me)
    if not claimed:
        await join_queue(tx, pk, run.id, me)
    started = start is not None and claimed and await conn.fetchval(
        f"SELECT {MESSAGE_COUNT} FROM sessions WHERE pk = $1", pk) == history_length
    if started:
        seq = await log(tx, pk, run.id, [RunQueued(run_id=run.id), RunStarted(run_id=run.id)])
        stored = attrs.evolve(run, status="running", started_at=wingspan.utc_now(),
                              finished_at=None, first_seq=seq - 1, last_seq=seq)
    else:
        seq = await log(tx, pk, run.id, [RunQueued(run_id=run.id)])
        stored = attrs.evolve(run, status="queued", started_at=None, finished_at=None,
                              first_seq=seq, last_seq=seq)
    await insert_run(tx, pk, stored)
    if started and start:
        await append(tx, run.session_id, start)
    return stored, True, claimed, started


async def start(tx: Tx, run_id: str, messages: Sequence[Message]) -> RunRecord:
    """A queued run starts, its user message appended to the history with it."""
    pk, run = await stored_run(tx, run_id)
    if run.status != "queued":
        raise ConflictError(f"run {run_id} cannot start: it is {run.status}, not queued")
    seq = await log(tx, pk, run_id, [RunStarted(run_id=run_id)])
    run = attrs.evolve(run, status="running", started_at=wingspan.utc_now(), last_seq=seq)
    await write_run(tx, run)
    if messages:
        await append(tx, run.session_id, messages)
    return run


async def finish(
    tx: Tx, run: RunRecord, events: Sequence[LogEvent], messages: Sequence[Message] = (),
) -> RunRecord:
    """End ``run`` (finished) with ``events`` and ``messages``, unless its stored record has
    ended already: the first ending (a recovery's, say) wins. :returns: the run as stored."""
    # The stored record is decoded only if it has ended already: its status is a column.
    row = await tx.conn.fetchrow(
        "SELECT session_pk, status, (body::json ->> 'first_seq')::bigint FROM runs "
        "WHERE id = $1",
        run.id)
    if row is None:
        raise NotFoundError(f"run {run.id!r} not found")
    pk, status, first_seq = row
    if status in FINISHED_STATUSES:
        return await get_run(tx, run.id)
    if run.first_seq is None:
        run = attrs.evolve(run, first_seq=first_seq)
    if messages:
        await append(tx, run.session_id, messages)
    return await end_run(tx, pk, run, events)


async def abort(tx: Tx, me: Claimant, run_id: str) -> tuple[RunRecord, bool]:
    """:returns: the run as stored, and whether its session's claim was handed on."""
    pk, run = await stored_run(tx, run_id)
    if run.status in FINISHED_STATUSES:
        raise ConflictError(f"run {run_id} has already finished ({run.status})")
    if run.status != "queued" and await abort_parked(tx, pk, run, me):
        return await get_run(tx, run_id), True
    return await _abort(tx, pk, run), False


async def _abort(tx: Tx, pk: int, run: RunRecord) -> RunRecord:
    """Abort an unfinished run: a queued one ends now (its place in the queue stays: its
    executor, granted the claim, finds it finished and lets go); a running or waiting one
    is asked to stop by the instance running it (told by ``write_run``'s notice; one no
    instance runs, parked, ends now: see :func:`abort`)."""
    if run.status != "queued":
        run = attrs.evolve(run, abort_requested=True)
        await write_run(tx, run)
        return run
    run = attrs.evolve(
        run, status="aborted", finished_at=wingspan.utc_now(), error="aborted before it started"
    )
    return await end_run(tx, pk, run, [ErrorEvent(error=ABORTED_QUEUED)])


async def page(
    tx: Tx, session_id: str, limit: int, cursor: str | None
) -> tuple[list[RunRecord], str | None]:
    """One page of a session's runs, newest first, and the next cursor."""
    pk = await session_pk(tx, session_id)
    # Newest first by id, as every listing (see ``_jobs.page``); a range of the index
    # ``runs_by_session`` either way.
    if cursor is None:
        rows = await tx.conn.fetch(
            f"SELECT id, {RUN_COLUMNS} FROM runs WHERE session_pk = $1 "
            "ORDER BY id DESC LIMIT $2",
            pk, limit + 1)
    else:
        rows = await tx.conn.fetch(
            f"SELECT id, {RUN_COLUMNS} FROM runs WHERE session_pk = $1 AND id < $2 "
            "ORDER BY id DESC LIMIT $3",
            pk, cursor, limit + 1)
    shown = rows[:limit]
    return ([run_record(body, last_seq) for _, body, last_seq in shown],
            shown[-1][0] if len(rows) > limit else None)
