"""Claims on sessions, run in the store's threads: the ``leases`` and ``lease_waiters`` tables.

A claim is a row of ``leases``: its holder (a run id), the store instance that renews it (the
owner), when it lapses if nobody does, and the process behind it (``wingspan.procs``). A claim
is recovered — its run recorded interrupted, the history repaired, the claim handed to the next
waiter — once it lapses, or at once when a claimant of the same host finds its process gone.

A waiting ticket is renewed by its owner likewise, and dropped when it lapses or its process is
gone. ``admit_run`` takes a ticket for the run it admits (``_runs.admit``), so that claims are
granted in admission order whichever process admitted: a queued run whose ticket is dropped
can never get its turn, and is recorded interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import attrs

import wingspan
from wingspan import (
    ErrorEvent,
    ErrorInfo,
    Message,
    NotFoundError,
    PermissionRequest,
    ProcessIdentity,
    RunRecord,
    wire,
)

from .._stores.claims import Unreleased
from .._stores.history import HistoryCache
from ._events import QUEUED, RUN_BODY, end_run, interrupt
from ._jobs import append, returning, session_pk
from ._worker import Tx

INTERRUPTED_RUN = "the process running it stopped before the run finished (its claim expired)"
ENDED_RUN = "the process running it (pid {pid}, this host) stopped before the run finished"
CLOSED_RUN = "the store was closed before the run finished"
UNRECORDED_RUN = "the run ended while the store could not record it ({why})"
LAPSED_QUEUED = (
    "the process that admitted it stopped before the run started (its place in the queue expired)"
)
ENDED_QUEUED = "the process that admitted it (pid {pid}, this host) stopped before the run started"
CLOSED_QUEUED = "the store was closed before the run started"
UNANSWERED_RUN = (
    "the run waited for a permission answer after its process stopped, and nobody answered "
    "before the request expired"
)
ABORTED_PARKED = ErrorInfo(code="aborted", message="the run was aborted while it waited for a "
                                                   "permission answer")
#: The owner of a parked claim (:func:`park`): nobody renews it.
PARKED = ""


@attrs.frozen
class Claimant:
    """A store instance as it takes part in claims.

    :ivar owner: the id under which it renews its claims and waiting tickets.
    :ivar ttl: seconds they last when it stops renewing them.
    :ivar process: the process it runs in.
    """

    owner: str
    ttl: float
    process: ProcessIdentity

    @property
    def columns(self) -> tuple[str | None, int, int | None]:
        """``(host, pid, started)`` as stored; a host that cannot be judged is NULL."""
        process = self.process
        return process.host or None, process.pid, process.started

    def sees_gone(self, owner: str, host: str | None, pid: int | None, started: int | None) -> bool:
        """Whether a claim or ticket of another store instance belongs to a process of this
        host that has ended. Rows of other hosts, and rows written before processes were
        recorded (NULL), are never judged: they lapse."""
        process = self.process
        if owner == self.owner or host is None or host != process.host or pid is None:
            return False
        if pid == process.pid and started == process.started:
            return False  # another store of this very process
        return ProcessIdentity(host=host, pid=pid, started=started).is_gone()


def _insert_lease(
    tx: Tx,
    pk: int,
    holder: str,
    owner: str,
    ticket: int | None,
    expires_at: float,
    columns: tuple[object, ...],
) -> None:
    tx.conn.execute(
        "INSERT INTO leases (session_pk, holder, owner, ticket, expires_at, host, pid, started) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (pk, holder, owner, ticket, expires_at, *columns),
    )


def take_if_free(tx: Tx, pk: int, holder: str, me: Claimant) -> bool:
    """Give ``holder`` the claim on session ``pk`` if nobody holds it and nobody is in
    line (a lapsed or dead holder is not judged here: its claim waits for a claimant to
    recover it). :returns: whether it was given."""
    conn = tx.conn
    if conn.execute("SELECT 1 FROM leases WHERE session_pk = ?", (pk,)).fetchone():
        return False
    if conn.execute("SELECT 1 FROM lease_waiters WHERE session_pk = ? LIMIT 1",
                    (pk,)).fetchone():
        return False
    _insert_lease(tx, pk, holder, me.owner, None, time.time() + me.ttl, me.columns)
    return True


def join_queue(tx: Tx, pk: int, holder: str, me: Claimant) -> int:
    """Queue ``holder`` for the claim on session ``pk``, last. :returns: its ticket."""
    cursor = tx.conn.execute(
        "INSERT INTO lease_waiters (session_pk, holder, owner, expires_at, host, pid, started) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (pk, holder, me.owner, time.time() + me.ttl, *me.columns),
    )
    return cursor.lastrowid or 0


def drop_dead_waiters(tx: Tx, pk: int, me: Claimant) -> None:
    """Take out of the queue the tickets that lapsed, and those of ended processes (their
    queued runs are recorded interrupted)."""
    conn = tx.conn
    lapsed = conn.execute(
        "DELETE FROM lease_waiters WHERE session_pk = ? AND expires_at < ? RETURNING holder",
        (pk, time.time()),
    ).fetchall()
    for (holder,) in lapsed:
        interrupt(tx, pk, holder, LAPSED_QUEUED, QUEUED)
    if me.process.host:
        rows = conn.execute(
            "SELECT ticket, holder, owner, host, pid, started FROM lease_waiters "
            "WHERE session_pk = ? AND host = ? AND owner != ?",
            (pk, me.process.host, me.owner),
        ).fetchall()
        for ticket, holder, *process in rows:
            if me.sees_gone(*process):
                conn.execute("DELETE FROM lease_waiters WHERE ticket = ?", (ticket,))
                interrupt(tx, pk, holder, ENDED_QUEUED.format(pid=process[2]), QUEUED)


def grant_next(tx: Tx, pk: int, me: Claimant) -> None:
    """Hand a free lease to the first live waiter, if any."""
    drop_dead_waiters(tx, pk, me)
    conn = tx.conn
    head = conn.execute(
        "SELECT ticket, holder, owner, host, pid, started FROM lease_waiters "
        "WHERE session_pk = ? ORDER BY ticket LIMIT 1",
        (pk,),
    ).fetchone()
    if head is not None:
        ticket, holder, owner, *columns = head
        _insert_lease(tx, pk, holder, owner, ticket, time.time() + me.ttl, tuple(columns))
        conn.execute("DELETE FROM lease_waiters WHERE ticket = ?", (ticket,))


def end_lease(
    tx: Tx, cache: HistoryCache, session_id: str, pk: int, holder: str, reason: str, me: Claimant
) -> None:
    """The holder is gone: record its run interrupted (unless it finished), repair the
    history, hand the lease on."""
    conn = tx.conn
    interrupt(tx, pk, holder, reason)
    last = conn.execute(
        "SELECT body FROM messages WHERE session_pk = ? ORDER BY seq DESC LIMIT 1", (pk,)
    ).fetchone()
    if last is not None:
        repair = wingspan.repair_history([wire.loads(last[0], Message)])
        if repair:
            append(tx, cache, session_id, tuple(repair))
    conn.execute("DELETE FROM leases WHERE session_pk = ?", (pk,))
    grant_next(tx, pk, me)


def recover(tx: Tx, cache: HistoryCache, session_id: str, pk: int, me: Claimant) -> None:
    """End the session's claim if it lapsed, or if its process (on this host) ended — or
    park it, when its run was waiting for a person's answer (:func:`park`)."""
    row = tx.conn.execute(
        "SELECT holder, expires_at, owner, host, pid, started FROM leases WHERE session_pk = ?",
        (pk,),
    ).fetchone()
    if row is None:
        return
    holder, expires_at, *process = row
    if expires_at < time.time():
        if process[0] == PARKED or not park(tx, pk, holder, me):
            reason = UNANSWERED_RUN if process[0] == PARKED else INTERRUPTED_RUN
            end_lease(tx, cache, session_id, pk, holder, reason, me)
    elif me.sees_gone(*process) and not park(tx, pk, holder, me):
        end_lease(tx, cache, session_id, pk, holder, ENDED_RUN.format(pid=process[2]), me)


def park(tx: Tx, pk: int, holder: str, me: Claimant) -> bool:
    """Keep the claim of a run whose process ended while the run waited for a person's
    answer, for whoever answers to adopt (:func:`adopt`): it is not renewed and judges no
    process, and lapses when the run's last request expires (then the run is recorded
    interrupted, its requests denied by ``timeout``) — not before ``me.ttl`` from now, so
    that an answer given already is taken up. :returns: whether it did; only a run stopped
    inside the tool step that asked (its history ends with that turn) can be re-entered."""
    conn = tx.conn
    row = conn.execute(
        "SELECT body FROM runs WHERE id = ? AND session_pk = ? AND status IN "
        "('running', 'waiting')", (holder, pk)).fetchone()
    if row is None or wire.loads(row[0], RunRecord).abort_requested:
        return False
    requests = conn.execute(
        "SELECT body, status, expires_at FROM permission_requests WHERE run_id = ?",
        (holder,)).fetchall()
    asked = {wire.loads(body, PermissionRequest).tool_use_id for body, _, _ in requests}
    last = conn.execute(
        "SELECT body FROM messages WHERE session_pk = ? ORDER BY seq DESC LIMIT 1", (pk,)
    ).fetchone()
    if not asked or last is None:
        return False
    turn = wire.loads(last[0], Message)
    if turn.role != "assistant" or not any(use.id in asked for use in turn.tool_uses):
        return False
    pending = [expires_at for _, status, expires_at in requests if status == "pending"]
    until = max([*pending, time.time() + me.ttl])
    conn.execute(
        "UPDATE leases SET owner = ?, host = NULL, pid = NULL, started = NULL, expires_at = ? "
        "WHERE session_pk = ?", (PARKED, until, pk))
    return True


def adopt(tx: Tx, cache: HistoryCache, me: Claimant, run_id: str) -> str | None:
    """Take over the parked claim of ``run_id`` (its process ended while it waited), for
    this store's process to execute the run. :returns: the run's record, or ``None`` when
    a live process holds it, or it has finished."""
    conn = tx.conn
    row = conn.execute(
        "SELECT r.session_pk, s.id FROM runs r JOIN sessions s ON s.pk = r.session_pk "
        "WHERE r.id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    pk, session_id = row
    recover(tx, cache, session_id, pk, me)  # a holder found gone now is parked first
    if not _parked(tx, pk, run_id):
        return None
    conn.execute(
        "UPDATE leases SET owner = ?, host = ?, pid = ?, started = ?, expires_at = ? "
        "WHERE session_pk = ?", (me.owner, *me.columns, time.time() + me.ttl, pk))
    body: str = conn.execute(f"SELECT {RUN_BODY} FROM runs WHERE id = ?",
                             (run_id,)).fetchone()[0]
    return body


def _parked(tx: Tx, pk: int, run_id: str) -> bool:
    """Whether the session's claim is ``run_id``'s, parked (:func:`park`)."""
    lease = tx.conn.execute("SELECT holder, owner FROM leases WHERE session_pk = ?",
                            (pk,)).fetchone()
    return lease is not None and lease[0] == run_id and lease[1] == PARKED


def abort_parked(tx: Tx, cache: HistoryCache, pk: int, run: RunRecord, me: Claimant) -> bool:
    """End ``run`` aborted now if its claim is parked (no process executes it), with the
    history repaired and the claim handed on. :returns: whether it did."""
    if not _parked(tx, pk, run.id):
        return False
    session_id = tx.conn.execute("SELECT id FROM sessions WHERE pk = ?", (pk,)).fetchone()[0]
    ended = attrs.evolve(run, status="aborted", finished_at=wingspan.utc_now(),
                         error=ABORTED_PARKED.message)
    end_run(tx, pk, ended, [ErrorEvent(error=ABORTED_PARKED)])
    end_lease(tx, cache, session_id, pk, run.id, ABORTED_PARKED.message, me)
    return True


def claim(
    tx: Tx,
    cache: HistoryCache,
    unreleased: Unreleased,
    session_id: str,
    holder: str,
    me: Claimant,
    wait: bool,
) -> tuple[bool, int | None]:
    """Grant the lease now if it is ``holder``'s already, or free with ``holder`` first in
    line (or nobody in line); else, with ``wait``, wait in the place this store admitted
    ``holder`` to (``_runs.admit``), or join the queue. :returns: ``(granted, ticket)``."""
    conn = tx.conn
    pk = session_pk(tx, session_id)
    recover(tx, cache, session_id, pk, me)
    lease = conn.execute("SELECT holder FROM leases WHERE session_pk = ?", (pk,)).fetchone()
    if lease is None:
        # A free session goes to the first in line (a run admitted before), if any.
        grant_next(tx, pk, me)
        lease = conn.execute("SELECT holder FROM leases WHERE session_pk = ?", (pk,)).fetchone()
        if lease is None:
            _insert_lease(tx, pk, holder, me.owner, None, time.time() + me.ttl, me.columns)
            lease = (holder,)
    if lease[0] == holder:
        if unreleased:
            # Held again by a holder whose release failed: its own again, to renew.
            tx.effects.append(lambda: unreleased.discard([(session_id, holder)]))
        return True, None
    if not wait:
        return False, None
    admitted = conn.execute(
        "SELECT ticket FROM lease_waiters WHERE session_pk = ? AND holder = ? AND owner = ? "
        "ORDER BY ticket LIMIT 1",
        (pk, holder, me.owner),
    ).fetchone()
    if admitted is not None:
        return False, admitted[0]
    return False, join_queue(tx, pk, holder, me)


def claim_state(tx: Tx, session_id: str, ticket: int, me: Claimant) -> tuple[str, float]:
    """``("granted" | "act" | "wait", when the lease lapses)`` for a waiting ticket."""
    row = tx.conn.execute(
        "SELECT l.ticket, l.expires_at, "
        "EXISTS (SELECT 1 FROM lease_waiters w WHERE w.ticket = ?2), "
        "l.owner, l.host, l.pid, l.started "
        "FROM sessions s LEFT JOIN leases l ON l.session_pk = s.pk WHERE s.id = ?1",
        (session_id, ticket),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    lease_ticket, expires_at, waiting, *process = row
    if lease_ticket == ticket:
        return "granted", 0.0
    if expires_at is None or expires_at < time.time() or not waiting or me.sees_gone(*process):
        return "act", 0.0
    return "wait", float(expires_at)


def poll_claim(
    tx: Tx, cache: HistoryCache, session_id: str, ticket: int, holder: str, me: Claimant
) -> tuple[bool, int]:
    conn = tx.conn
    pk = session_pk(tx, session_id)
    recover(tx, cache, session_id, pk, me)
    lease = conn.execute("SELECT ticket FROM leases WHERE session_pk = ?", (pk,)).fetchone()
    if lease is None:
        grant_next(tx, pk, me)
        lease = conn.execute("SELECT ticket FROM leases WHERE session_pk = ?", (pk,)).fetchone()
    if lease is not None and lease[0] == ticket:
        return True, ticket
    if conn.execute("SELECT 1 FROM lease_waiters WHERE ticket = ?", (ticket,)).fetchone():
        return False, ticket
    # Our place lapsed (this process could not renew it in time): queue again.
    return False, join_queue(tx, pk, holder, me)


def abandon(tx: Tx, session_id: str, ticket: int, hand_on: bool, me: Claimant) -> bool:
    """Stop waiting. :returns: whether the lease was granted meanwhile (and is kept unless
    ``hand_on``)."""
    conn = tx.conn
    conn.execute("DELETE FROM lease_waiters WHERE ticket = ?", (ticket,))
    row = conn.execute(
        "SELECT l.session_pk FROM leases l JOIN sessions s ON s.pk = l.session_pk "
        "WHERE s.id = ? AND l.ticket = ?",
        (session_id, ticket),
    ).fetchone()
    if row is None:
        return False
    if hand_on:
        conn.execute("DELETE FROM leases WHERE session_pk = ?", (row[0],))
        grant_next(tx, row[0], me)
    return True


def release(tx: Tx, session_id: str, holder: str, me: Claimant) -> bool:
    """Give up the claim, or else the place in line ``holder`` was admitted to (a run
    that will not claim it). :returns: whether there was either."""
    row = returning(
        tx.conn.execute(
            "DELETE FROM leases WHERE holder = ? AND session_pk = "
            "(SELECT pk FROM sessions WHERE id = ?) RETURNING session_pk",
            (holder, session_id),
        )
    )
    if row is not None:
        grant_next(tx, row[0], me)
        return True
    # The next in line is granted the session by its claim (or the next release).
    place = returning(
        tx.conn.execute(
            "DELETE FROM lease_waiters WHERE holder = ? AND session_pk = "
            "(SELECT pk FROM sessions WHERE id = ?) RETURNING ticket",
            (holder, session_id),
        )
    )
    return place is not None


def release_unreleased(
    tx: Tx, cache: HistoryCache, unreleased: Unreleased, me: Claimant
) -> list[str]:
    """Write the releases that failed. A run still ``running`` ended without its end being
    recorded: it is marked interrupted, and the history repaired, as for a dead holder.

    :returns: the sessions released.
    """
    pending = unreleased.snapshot()
    released = []
    for (session_id, holder), why in pending.items():
        row = tx.conn.execute(
            "SELECT l.session_pk FROM leases l JOIN sessions s ON s.pk = l.session_pk "
            "WHERE s.id = ? AND l.holder = ? AND l.owner = ?",
            (session_id, holder, me.owner),
        ).fetchone()
        if row is not None:
            end_lease(tx, cache, session_id, row[0], holder, UNRECORDED_RUN.format(why=why), me)
            released.append(session_id)
    tx.effects.append(lambda: unreleased.discard(pending))
    return released


def renew(tx: Tx, me: Claimant, unreleased: Collection[tuple[str, str]]) -> None:
    """Keep this store's claims and tickets alive, except the claims it gave up."""
    conn, expires_at = tx.conn, time.time() + me.ttl
    conn.execute("UPDATE lease_waiters SET expires_at = ? WHERE owner = ?", (expires_at, me.owner))
    if not unreleased:
        conn.execute("UPDATE leases SET expires_at = ? WHERE owner = ?", (expires_at, me.owner))
        return
    held = conn.execute(
        "SELECT l.session_pk, s.id, l.holder FROM leases l "
        "JOIN sessions s ON s.pk = l.session_pk WHERE l.owner = ?",
        (me.owner,),
    ).fetchall()
    conn.executemany(
        "UPDATE leases SET expires_at = ? WHERE session_pk = ?",
        [
            (expires_at, pk)
            for pk, session_id, holder in held
            if (session_id, holder) not in unreleased
        ],
    )


def give_up(tx: Tx, cache: HistoryCache, me: Claimant) -> None:
    """Drop this store's tickets (their queued runs are recorded interrupted) and end its
    claims, as it closes."""
    conn = tx.conn
    tickets = conn.execute(
        "DELETE FROM lease_waiters WHERE owner = ? RETURNING session_pk, holder", (me.owner,)
    ).fetchall()
    for pk, holder in tickets:
        interrupt(tx, pk, holder, CLOSED_QUEUED, QUEUED)
    held = conn.execute(
        "SELECT s.id, s.pk, l.holder FROM leases l JOIN sessions s ON s.pk = l.session_pk "
        "WHERE l.owner = ?",
        (me.owner,),
    ).fetchall()
    for session_id, pk, holder in held:
        if not park(tx, pk, holder, me):  # a run waiting for an answer outlives us
            end_lease(tx, cache, session_id, pk, holder, CLOSED_RUN, me)


def sweep(tx: Tx, cache: HistoryCache, me: Claimant) -> int:
    """Recover the claims, and drop the tickets (recording their queued runs interrupted),
    of the processes of this host that ended (when a store opens: a crashed server's sessions
    are free before its successor serves).

    :returns: how many claims were recovered.
    """
    if not me.process.host:
        return 0
    conn = tx.conn
    judged: dict[tuple[str, int | None, int | None], bool] = {}

    def gone(owner: str, pid: int | None, started: int | None) -> bool:
        key = owner, pid, started
        if key not in judged:
            judged[key] = me.sees_gone(owner, me.process.host, pid, started)
        return judged[key]

    tickets = conn.execute(
        "SELECT ticket, session_pk, holder, owner, pid, started FROM lease_waiters "
        "WHERE host = ?",
        (me.process.host,),
    ).fetchall()
    for ticket, pk, holder, owner, pid, started in tickets:
        if gone(owner, pid, started):
            conn.execute("DELETE FROM lease_waiters WHERE ticket = ?", (ticket,))
            interrupt(tx, pk, holder, ENDED_QUEUED.format(pid=pid), QUEUED)
    held = conn.execute(
        "SELECT s.id, s.pk, l.holder, l.owner, l.pid, l.started FROM leases l "
        "JOIN sessions s ON s.pk = l.session_pk WHERE l.host = ?",
        (me.process.host,),
    ).fetchall()
    recovered = 0
    for session_id, pk, holder, owner, pid, started in held:
        if gone(owner, pid, started) and not park(tx, pk, holder, me):
            end_lease(tx, cache, session_id, pk, holder, ENDED_RUN.format(pid=pid), me)
            recovered += 1
    return recovered
