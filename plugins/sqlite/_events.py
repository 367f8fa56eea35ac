"""The event log of each session, run in the store's threads: the ``events`` table.

A session numbers its events from 1 without gaps; ``sessions.last_seq`` is the last number
given, kept when the events it numbered are pruned, so that no number is given twice. A
run's record keeps the seqs of its first and last events (``first_seq``, ``last_seq``).
Wake-ups of those waiting on a log are in ``_watch``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

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

from ._jobs import LONG, returning, session_pk, yielding
from ._worker import Tx

if TYPE_CHECKING:
    from ._watch import LogWatch

#: The runs that have not finished (the condition of the partial index ``runs_unfinished``).
UNFINISHED = "status IN ('queued', 'running', 'waiting')"
QUEUED = "status = 'queued'"
FINISHED = "status IN ('completed', 'failed', 'aborted', 'interrupted')"
#: The events pruned once their run has finished: the history keeps what they made up.
PRUNED_TYPES = "('text_delta', 'input_json_delta', 'ping')"
#: The most runs whose deltas one write transaction prunes (others wait for the lock).
PRUNE_BATCH = 50
#: The runs whose stored record an append leaves alone: their ``last_seq`` is read from
#: the log (:data:`RUN_BODY`).
EXECUTING = "status IN ('running', 'waiting')"
#: A run's record as read from ``runs``: that of a running or waiting run with the seq of
#: its latest event as its ``last_seq``, found from the end of its session's log (where an
#: executing run's events are). Appending a step's events rewrote the record for it
#: before: a statement and three more pages written each commit (the row and the two
#: indexes read out of its body).
RUN_BODY = (
    f"CASE WHEN runs.{EXECUTING} THEN coalesce(("
    "SELECT json_set(runs.body, '$.last_seq', e.seq) FROM events e "
    "WHERE e.session_pk = runs.session_pk "
    "AND e.seq > coalesce(json_extract(runs.body, '$.last_seq'), 0) AND e.run_id = runs.id "
    "ORDER BY e.seq DESC LIMIT 1), runs.body) ELSE runs.body END"
)


def log(tx: Tx, pk: int, run_id: str, events: Sequence[LogEvent]) -> int:
    """Append ``events`` of ``run_id`` to the log of session ``pk``.

    :returns: the session's ``last_seq`` afterwards.
    """
    rows = [(event.type, wire.dumps(event)) for event in yielding(events)]
    (last,) = returning(
        tx.conn.execute(
            "UPDATE sessions SET last_seq = last_seq + ? WHERE pk = ? RETURNING last_seq",
            (len(rows), pk),
        )
    )
    _insert(tx, pk, last - len(rows), run_id, rows)
    return int(last)


def _insert(tx: Tx, pk: int, start: int, run_id: str, rows: list[tuple[str, str]]) -> None:
    tx.conn.executemany(
        "INSERT INTO events (session_pk, seq, run_id, type, body) VALUES (?, ?, ?, ?, ?)",
        [(pk, start + n, run_id, kind, body) for n, (kind, body) in enumerate(rows, 1)],
    )


def write_run(tx: Tx, run: RunRecord) -> None:
    """Store a new state of a run that exists (to be looked at by the next prune)."""
    tx.conn.execute(
        "UPDATE runs SET status = ?, body = ?, deltas_pruned = 0 WHERE id = ?",
        (run.status, wire.dumps(run), run.id),
    )


def end_run(tx: Tx, pk: int, run: RunRecord, events: Sequence[LogEvent]) -> RunRecord:
    """Append ``events`` and the :class:`~wingspan.RunFinished` of ``run`` (finished), and
    store it with ``last_seq`` the seq of that ``run_finished``. :returns: it as stored."""
    last = log(tx, pk, run.id, [*events, RunFinished(run_id=run.id, status=run.status)])
    run = attrs.evolve(run, last_seq=last)
    write_run(tx, run)
    end_requests(tx, run.id)
    return run


def end_requests(tx: Tx, run_id: str) -> None:
    """Resolve the pending permission requests of a run that ends
    (:func:`wingspan.permissions.ended_with_run`)."""
    for (body,) in tx.conn.execute(
            "SELECT body FROM permission_requests WHERE run_id = ? AND status = 'pending'",
            (run_id,)).fetchall():
        write_request(tx, ended_with_run(wire.loads(body, PermissionRequest)))


def write_request(tx: Tx, request: PermissionRequest) -> None:
    """Store a new state of a permission request that exists."""
    tx.conn.execute("UPDATE permission_requests SET status = ?, body = ? WHERE id = ?",
                    (request.status, wire.dumps(request), request.id))


def interrupt(tx: Tx, pk: int, run_id: str, reason: str, statuses: str = UNFINISHED) -> None:
    """Record run ``run_id`` of session ``pk`` ``interrupted`` for ``reason``, with an
    ``error`` event saying so and its ``run_finished``, if its status is one of
    ``statuses`` (a finished run keeps its first ending).

    Waiters on the log hear of it from their poll (``_watch``), as of another process's.
    """
    row = tx.conn.execute(
        f"SELECT body FROM runs WHERE id = ? AND session_pk = ? AND {statuses}", (run_id, pk)
    ).fetchone()
    if row is None:
        return
    run = attrs.evolve(
        wire.loads(row[0], RunRecord),
        status="interrupted",
        finished_at=wingspan.utc_now(),
        error=reason,
    )
    end_run(tx, pk, run, [ErrorEvent(error=ErrorInfo(code="interrupted", message=reason))])


def append_events(
    tx: Tx, watch: LogWatch, session_id: str, run_id: str, events: tuple[LogEvent, ...]
) -> int:
    conn = tx.conn
    if not events:
        return last_seq(tx, session_id)[1]
    rows = [(event.type, wire.dumps(event)) for event in yielding(events)]
    row = returning(
        conn.execute(
            "UPDATE sessions SET last_seq = last_seq + ? WHERE id = ? RETURNING pk, last_seq",
            (len(rows), session_id),
        )
    )
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    pk, last = row
    _insert(tx, pk, last - len(rows), run_id, rows)
    # An executing run's last_seq is read from the log after the one its record says
    # (RUN_BODY), so its record is left alone — unless that record says a seq the log had
    # not reached (a saved record can say anything): then these events would not count.
    conn.execute(
        "UPDATE runs SET body = json_set(body, '$.last_seq', ?1), deltas_pruned = 0 "
        f"WHERE id = ?2 AND session_pk = ?3 AND (NOT {EXECUTING} "
        "OR json_extract(body, '$.last_seq') > ?1 - ?4)",
        (last, run_id, pk, len(rows)),
    )
    tx.effects.append(lambda: watch.appended(session_id, pk, last))
    return int(last)


#: The most events :func:`read_recent_events` decodes: more, and the read is left to the
#: reader's thread.
RECENT_EVENTS = 64


def read_recent_events(
    tx: Tx, session_id: str, after: int, limit: int, run_id: str | None
) -> list[LoggedEvent]:
    """:func:`read_events` of at most :data:`RECENT_EVENTS` events (a live follower's
    read: the few appended since its last), else ``jobs.LONG`` with nothing read."""
    return read_events(tx, session_id, after, limit, run_id, RECENT_EVENTS)


def read_events(
    tx: Tx, session_id: str, after: int, limit: int, run_id: str | None,
    most: int | None = None,
) -> list[LoggedEvent]:
    conn = tx.conn
    conn.execute("BEGIN")  # one snapshot for the session and its events
    try:
        if most is None:
            pk = session_pk(tx, session_id)
        else:
            pk, last = last_seq(tx, session_id)
            if min(limit, last - after) > most:  # seqs after ``after``: at most this many
                return LONG  # type: ignore[no-any-return]
        if run_id is None:
            rows = conn.execute(
                "SELECT seq, run_id, body FROM events WHERE session_pk = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (pk, after, limit),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT seq, run_id, body FROM events WHERE session_pk = ? AND seq > ? "
                "AND run_id = ? ORDER BY seq LIMIT ?",
                (pk, after, run_id, limit),
            ).fetchall()
    finally:
        conn.execute("COMMIT")
    try:
        return [
            LoggedEvent(seq=seq, run_id=run, event=wire.loads(body, LogEvent))  # type: ignore[arg-type]
            for seq, run, body in yielding(rows)
        ]
    except wingspan.ValidationError as exc:
        raise StoreError(f"a stored event of session {session_id} is damaged: {exc}") from None


def last_seq(tx: Tx, session_id: str) -> tuple[int, int]:
    """``(pk, last_seq)`` of a session."""
    row = tx.conn.execute(
        "SELECT pk, last_seq FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return row[0], row[1]


def last_seqs(
    tx: Tx, known: int | None, session_ids: Sequence[str]
) -> tuple[int, dict[str, tuple[int, int]] | None]:
    """``(version, {session id: (pk, last_seq)})`` of the sessions that exist among
    ``session_ids``; ``None`` for the sessions when the database has not changed since
    ``version`` was ``known`` (nothing is read then)."""
    conn = tx.conn
    # Changes with every commit of another connection (this store's writer too). Read
    # first: a commit between the two reads is seen now, and again next time.
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    if version == known:
        return version, None
    rows = conn.execute(
        "SELECT id, pk, last_seq FROM sessions WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(session_ids)),),
    ).fetchall()
    return version, {session_id: (pk, seq) for session_id, pk, seq in rows}


def prune(tx: Tx, before: str) -> tuple[int, bool]:
    """Drop the deltas and pings of up to :data:`PRUNE_BATCH` runs that finished before
    ``before`` (an RFC 3339 timestamp), and were not pruned since they last changed.

    A run's ``first_seq`` and ``last_seq`` are what its record says, which a ``save_run``
    may set to anything: the events of its session are looked through, once for the runs
    of the batch that it has.

    :returns: how many events were dropped, and whether runs are left to prune.
    """
    conn = tx.conn
    runs = conn.execute(
        "SELECT id, session_pk FROM runs "
        f"WHERE deltas_pruned = 0 AND finished_at < ? AND {FINISHED} LIMIT ?",
        (before, PRUNE_BATCH + 1),
    ).fetchall()
    batch = runs[:PRUNE_BATCH]
    by_session: dict[int, list[str]] = {}
    for run_id, pk in batch:
        by_session.setdefault(pk, []).append(run_id)
    dropped = 0
    for pk, run_ids in by_session.items():
        dropped += conn.execute(
            f"DELETE FROM events WHERE session_pk = ? AND type IN {PRUNED_TYPES} "
            "AND run_id IN (SELECT value FROM json_each(?))",
            (pk, json.dumps(run_ids)),
        ).rowcount
    conn.executemany("UPDATE runs SET deltas_pruned = 1 WHERE id = ?", [(r,) for r, _ in batch])
    return dropped, len(runs) > PRUNE_BATCH
