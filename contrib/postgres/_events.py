"""The event log of each session, run in the store's transactions: the ``events`` table.

A session numbers its events from 1 without gaps; ``sessions.last_seq`` is the last number
given, kept when the events it numbered are pruned, so that no number is given twice. A
run's record keeps the seqs of its first and last events (``first_seq``, and the column
``runs.last_seq``, which every append keeps). Every append tells those waiting on the log,
in this instance and others, once it commits (:meth:`Tx.events`).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

import wingspan
from wingspan import (
    ErrorEvent,
    ErrorInfo,
    LogEvent,
    LoggedEvent,
    NotFoundError,
    PermissionRequest,
    RunFinished,
    RunRecord,
    StoreError,
    wire,
)
from wingspan.permissions import ended_with_run

from ._jobs import RUN_COLUMNS, run_record, session_pk, write_run
from ._tx import Tx

#: The runs that have not finished (the condition of the partial index ``runs_unfinished``).
UNFINISHED = "status IN ('queued', 'running', 'waiting')"
QUEUED = "status = 'queued'"
FINISHED = "status IN ('completed', 'failed', 'aborted', 'interrupted')"
#: The events pruned once their run has finished: the history keeps what they made up.
PRUNED_TYPES = "('text_delta', 'input_json_delta', 'ping')"
#: The most runs whose deltas one write transaction prunes (others wait for the lock).
PRUNE_BATCH = 50


async def log(tx: Tx, pk: int, run_id: str, events: Sequence[LogEvent]) -> int:
    """Append ``events`` of ``run_id`` to the log of session ``pk``, keep the run's
    ``last_seq``, and tell the log's waiters once the transaction commits.

    :returns: the session's ``last_seq`` afterwards.
    """
    last = await _append(tx, "pk", pk, run_id, events)
    if last is None:
        raise NotFoundError(f"session (pk {pk}) not found")
    return last


async def _append(
    tx: Tx, column: str, key: int | str, run_id: str, events: Sequence[LogEvent]
) -> int | None:
    """:func:`log` to the session whose ``column`` (``pk`` or ``id``) is ``key``.

    :returns: its ``last_seq`` afterwards, ``None`` when there is no such session.
    """
    assert column in ("pk", "id")
    conn = tx.conn
    if not events:
        last = await conn.fetchval(f"SELECT last_seq FROM sessions WHERE {column} = $1", key)
        return None if last is None else int(last)
    # One statement (one round trip): the seqs given, the events inserted, and the run's
    # last_seq kept — a run that logs an event is looked at by the next prune again. The run
    # of another session, or one not stored yet (``_runs.admit`` logs first), is left alone.
    row = await conn.fetchrow(
        f"WITH s AS (UPDATE sessions SET last_seq = last_seq + $1 WHERE {column} = $2 "
        "RETURNING pk, id, last_seq), "
        "e AS (INSERT INTO events (session_pk, seq, run_id, type, body) "
        "SELECT s.pk, s.last_seq - $1 + n, $3, kind, body FROM s, "
        "unnest($4::text[], $5::text[]) WITH ORDINALITY AS e(kind, body, n)), "
        "r AS (UPDATE runs SET last_seq = s.last_seq, deltas_pruned = false FROM s "
        "WHERE runs.id = $3 AND runs.session_pk = s.pk) "
        "SELECT pk, id, last_seq FROM s",
        len(events), key, run_id, [event.type for event in events],
        [wire.dumps(event) for event in events])
    if row is None:
        return None
    session_id, last = str(row[1]), int(row[2])
    tx.events(session_id)
    return last


async def end_run(tx: Tx, pk: int, run: RunRecord, events: Sequence[LogEvent]) -> RunRecord:
    """Append ``events`` and the :class:`~wingspan.RunFinished` of ``run`` (finished), and
    store it with ``last_seq`` the seq of that ``run_finished``. :returns: it as stored."""
    last = await log(tx, pk, run.id, [*events, RunFinished(run_id=run.id, status=run.status)])
    run = attrs.evolve(run, last_seq=last)
    await write_run(tx, run)
    await end_requests(tx, run.id)
    return run


async def end_requests(tx: Tx, run_id: str) -> None:
    """Resolve the pending permission requests of a run that ends
    (:func:`wingspan.permissions.ended_with_run`)."""
    for (body,) in await tx.conn.fetch(
            "SELECT body FROM permission_requests WHERE run_id = $1 AND status = 'pending'",
            run_id):
        await write_request(tx, ended_with_run(wire.loads(body, PermissionRequest)))


async def write_request(tx: Tx, request: PermissionRequest) -> None:
    """Store a new state of a permission request that exists."""
    await tx.conn.execute("UPDATE permission_requests SET status = $1, body = $2 WHERE id = $3",
                          request.status, wire.dumps(request), request.id)


async def interrupt(
    tx: Tx, pk: int, run_id: str, reason: str, statuses: str = UNFINISHED
) -> None:
    """Record run ``run_id`` of session ``pk`` ``interrupted`` for ``reason``, with an
    ``error`` event saying so and its ``run_finished``, if its status is one of
    ``statuses`` (a finished run keeps its first ending); its pending permission requests
    end with it.

    Waiters on the log hear of it as of any append (:func:`log`), in every instance.
    """
    row = await tx.conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND session_pk = $2 AND {statuses}",
        run_id, pk)
    if row is None:
        return
    run = attrs.evolve(
        run_record(row[0], row[1]),
        status="interrupted",
        finished_at=wingspan.utc_now(),
        error=reason,
    )
    await end_run(tx, pk, run, [ErrorEvent(error=ErrorInfo(code="interrupted", message=reason))])


async def append_events(
    tx: Tx, session_id: str, run_id: str, events: Sequence[LogEvent]
) -> int:
    """:meth:`PostgresStore.append_events`' job (the messages are appended before, by
    ``_jobs.append``): :func:`log` to the session named by its id.

    :returns: the session's ``last_seq`` afterwards.
    """
    last = await _append(tx, "id", session_id, run_id, events)
    if last is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return last


async def read_events(
    tx: Tx, session_id: str, after: int, limit: int, run_id: str | None
) -> list[LoggedEvent]:
    """Up to ``limit`` events of the session with a seq above ``after``, oldest first (only
    ``run_id``'s, when given).

    Run it in a ``REPEATABLE READ`` transaction (read only): one snapshot for the session
    and its events, so that a session deleted between the two reads is not answered empty.
    """
    pk = await session_pk(tx, session_id)
    if run_id is None:
        rows = await tx.conn.fetch(
            "SELECT seq, run_id, body FROM events WHERE session_pk = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3",
            pk, after, limit)
    else:
        rows = await tx.conn.fetch(
            "SELECT seq, run_id, body FROM events WHERE session_pk = $1 AND seq > $2 "
            "AND run_id = $3 ORDER BY seq LIMIT $4",
            pk, after, run_id, limit)
    try:
        return [
            LoggedEvent(seq=seq, run_id=run, event=wire.loads(body, LogEvent))  # type: ignore[arg-type]
            for seq, run, body in rows
        ]
    except wingspan.ValidationError as exc:
        raise StoreError(f"a stored event of session {session_id} is damaged: {exc}") from None


async def last_seq(tx: Tx, session_id: str) -> tuple[int, int]:
    """``(pk, last_seq)`` of a session."""
    row = await tx.conn.fetchrow("SELECT pk, last_seq FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return int(row[0]), int(row[1])


async def prune(tx: Tx, before: str) -> tuple[int, bool]:
    """Drop the deltas and pings of up to :data:`PRUNE_BATCH` runs that finished before
    ``before`` (an RFC 3339 timestamp, as ``runs.finished_at``: text order is time order),
    and were not pruned since they last changed or logged an event.

    The events of a session are looked through once for the runs of the batch that it has
    (by their run id, not by the seqs their records say, which a ``save_run`` may set to
    anything).

    :returns: how many events were dropped, and whether runs are left to prune.
    """
    conn = tx.conn
    runs = await conn.fetch(
        "SELECT id FROM runs "
        f"WHERE NOT deltas_pruned AND finished_at < $1 AND {FINISHED} LIMIT $2",
        before, PRUNE_BATCH + 1)
    # Marked first: an append to one of these runs meanwhile (which clears the mark, and
    # holds the run's row until it commits) either committed before, and its events are
    # seen by the deletes below, or waits for this transaction, and clears the mark after it.
    batch = await conn.fetch(
        "UPDATE runs SET deltas_pruned = true WHERE id = ANY($1::text[]) AND NOT deltas_pruned "
        "RETURNING id, session_pk",
        [run_id for (run_id,) in runs[:PRUNE_BATCH]])
    by_session: dict[int, list[str]] = {}
    for run_id, pk in batch:
        by_session.setdefault(pk, []).append(run_id)
    dropped = 0
    for pk, run_ids in by_session.items():
        dropped += len(await conn.fetch(
            f"DELETE FROM events WHERE session_pk = $1 AND type IN {PRUNED_TYPES} "
            "AND run_id = ANY($2::text[]) RETURNING 1",
            pk, run_ids))
    return dropped, len(runs) > PRUNE_BATCH
