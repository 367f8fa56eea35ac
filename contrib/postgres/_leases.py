"""Claims on sessions, run in the store's transactions: the ``leases`` and ``lease_waiters``
tables.

A claim is a row of ``leases``: its holder (a run id), the store instance that renews it (the
owner) and when it lapses if nobody does (the database's clock, :meth:`Tx.now`). A claim is
recovered — its run recorded interrupted, the history repaired, the claim handed to the next
waiter — once it lapses, or at once when its owner is gone: every instance holds an advisory
lock of its own for as long as it lives (:func:`owner_gone`), so the claims of an instance
that died or lost its connection to the database are recovered by any other, on any host.

A waiting ticket is renewed by its owner likewise, and dropped when it lapses or its owner is
gone. ``admit_run`` takes a ticket for the run it admits (``_runs.admit``), so that claims are
granted in admission order whichever instance admitted: a queued run whose ticket is dropped
can never get its turn, and is recorded interrupted.

Whenever a claim is freed or handed on, the session's waiters in every instance are told to
look again (:meth:`Tx.claims`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import attrs

import wingspan
from wingspan import ErrorEvent, ErrorInfo, NotFoundError, PermissionRequest, RunRecord, wire
from wingspan.plugins._stores.claims import Unreleased

from ._events import QUEUED, end_run, interrupt
from ._jobs import RUN_COLUMNS, append, get_run, last_message, run_record, session_pk
from ._tx import Tx

INTERRUPTED_RUN = "the process running it stopped before the run finished (its claim expired)"
ENDED_RUN = (
    "the wingspan instance running it lost its connection to the database before the run "
    "finished"
)
CLOSED_RUN = "the store was closed before the run finished"
UNRECORDED_RUN = "the run ended while the store could not record it ({why})"
LAPSED_QUEUED = (
    "the process that admitted it stopped before the run started (its place in the queue expired)"
)
ENDED_QUEUED = (
    "the wingspan instance that admitted it lost its connection to the database before the run "
    "started"
)
CLOSED_QUEUED = "the store was closed before the run started"
UNANSWERED_RUN = (
    "the run waited for a permission answer after its process stopped, and nobody answered "
    "before the request expired"
)
ABORTED_PARKED = ErrorInfo(code="aborted", message="the run was aborted while it waited for a "
                                                   "permission answer")
#: The owner of a parked claim (:func:`park`): nobody renews it.
PARKED = ""

#: The keys of the session-level advisory locks granted in this database (one
#: ``pg_advisory_lock(bigint)`` key each): those of the live owners among them.
_LIVE_KEYS = (
    "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
    "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@attrs.frozen
class Claimant:
    """A store instance as it takes part in claims.

    :ivar owner: the id under which it renews its claims and waiting tickets; it holds the
        advisory lock ``pg_advisory_lock(hashtextextended(owner, 0))`` for as long as it lives.
    :ivar ttl: seconds they last when it stops renewing them.
    """

    owner: str
    ttl: float


async def owner_gone(tx: Tx, me: Claimant, owner: str) -> bool:
    """Whether the store instance ``owner`` of a claim or ticket is gone: no connection holds
    its advisory lock (it died, or lost its connection to the database). This instance and
    the parked owner are never judged gone."""
    return owner in await _gone(tx, me, (owner,))


async def _gone(tx: Tx, me: Claimant, owners: Iterable[str]) -> set[str]:
    """Those of ``owners`` that are gone (:func:`owner_gone`), judged in one look at the
    locks."""
    judged = {owner for owner in owners if owner not in (me.owner, PARKED)}
    if not judged:
        return set()
    rows = await tx.conn.fetch(
        f"SELECT o FROM unnest($1::text[]) AS o WHERE hashtextextended(o, 0) NOT IN ({_LIVE_KEYS})",
        sorted(judged),
    )
    return {row[0] for row in rows}


async def _insert_lease(
    tx: Tx, pk: int, holder: str, owner: str, ticket: int | None, expires_at: float
) -> None:
    await tx.conn.execute(
        "INSERT INTO leases (session_pk, holder, owner, ticket, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        pk, holder, owner, ticket, expires_at,
    )


async def take_if_free(tx: Tx, pk: int, holder: str, me: Claimant) -> bool:
    """Give ``holder`` the claim on session ``pk`` if nobody holds it and nobody is in
    line (a lapsed or gone holder is not judged here: its claim waits for a claimant to
    recover it). :returns: whether it was given."""
    conn = tx.conn
    if await conn.fetchval("SELECT 1 FROM leases WHERE session_pk = $1", pk):
        return False
    if await conn.fetchval("SELECT 1 FROM lease_waiters WHERE session_pk = $1 LIMIT 1", pk):
        return False
    await _insert_lease(tx, pk, holder, me.owner, None, await tx.now() + me.ttl)
    return True


async def join_queue(tx: Tx, pk: int, holder: str, me: Claimant) -> int:
    """Queue ``holder`` for the claim on session ``pk``, last. :returns: its ticket."""
    ticket = await tx.conn.fetchval(
        "INSERT INTO lease_waiters (session_pk, holder, owner, expires_at) "
        "VALUES ($1, $2, $3, $4) RETURNING ticket",
        pk, holder, me.owner, await tx.now() + me.ttl,
    )
    return int(ticket)


async def drop_dead_waiters(tx: Tx, pk: int, me: Claimant) -> None:
    """Take out of the queue the tickets that lapsed, and those of owners that are gone
    (their queued runs are recorded interrupted)."""
    conn = tx.conn
    lapsed = await conn.fetch(
        "DELETE FROM lease_waiters WHERE session_pk = $1 AND expires_at < $2 RETURNING holder",
        pk, await tx.now(),
    )
    for (holder,) in lapsed:
        await interrupt(tx, pk, holder, LAPSED_QUEUED, QUEUED)
    rows = await conn.fetch(
        "SELECT ticket, holder, owner FROM lease_waiters WHERE session_pk = $1 AND owner <> $2 "
        "ORDER BY ticket",
        pk, me.owner,
    )
    gone = await _gone(tx, me, {owner for _, _, owner in rows})
    for ticket, holder, owner in rows:
        if owner in gone:
            await conn.execute("DELETE FROM lease_waiters WHERE ticket = $1", ticket)
            await interrupt(tx, pk, holder, ENDED_QUEUED, QUEUED)


async def grant_next(tx: Tx, pk: int, me: Claimant) -> None:
    """Hand a free lease to the first live waiter, if any (its instance is told: the
    session's waiters look again)."""
    await drop_dead_waiters(tx, pk, me)
    conn = tx.conn
    head = await conn.fetchrow(
        "SELECT w.ticket, w.holder, w.owner, s.id FROM lease_waiters w "
        "JOIN sessions s ON s.pk = w.session_pk WHERE w.session_pk = $1 "
        "ORDER BY w.ticket LIMIT 1",
        pk,
    )
    if head is not None:
        ticket, holder, owner, session_id = head
        await _insert_lease(tx, pk, holder, owner, ticket, await tx.now() + me.ttl)
        await conn.execute("DELETE FROM lease_waiters WHERE ticket = $1", ticket)
        tx.claims(session_id)


async def end_lease(
    tx: Tx, session_id: str, pk: int, holder: str, reason: str, me: Claimant
) -> None:
    """The holder is gone: record its run interrupted (unless it finished), repair the
    history, hand the lease on."""
    await interrupt(tx, pk, holder, reason)
    last = await last_message(tx, pk)
    if last is not None:
        repair = wingspan.repair_history([last])
        if repair:
            await append(tx, session_id, tuple(repair))
    await tx.conn.execute("DELETE FROM leases WHERE session_pk = $1", pk)
    tx.claims(session_id)
    await grant_next(tx, pk, me)


async def recover(tx: Tx, session_id: str, pk: int, me: Claimant) -> None:
    """End the session's claim if it lapsed, or if its owner is gone — or park it, when
    its run was waiting for a person's answer (:func:`park`)."""
    row = await tx.conn.fetchrow(
        "SELECT holder, expires_at, owner FROM leases WHERE session_pk = $1", pk
    )
    if row is None:
        return
    holder, expires_at, owner = row
    if expires_at < await tx.now():
        if owner == PARKED or not await park(tx, pk, holder, me):
            reason = UNANSWERED_RUN if owner == PARKED else INTERRUPTED_RUN
            await end_lease(tx, session_id, pk, holder, reason, me)
    elif await owner_gone(tx, me, owner) and not await park(tx, pk, holder, me):
        await end_lease(tx, session_id, pk, holder, ENDED_RUN, me)


async def park(tx: Tx, pk: int, holder: str, me: Claimant) -> bool:
    """Keep the claim of a run whose instance stopped while the run waited for a person's
    answer, for whoever answers to adopt (:func:`adopt`): it is not renewed and its owner is
    never judged gone, and it lapses when the run's last request expires (then the run is
    recorded interrupted, its requests denied by ``timeout``) — not before ``me.ttl`` from
    now, so that an answer given already is taken up. :returns: whether it did; only a run
    stopped inside the tool step that asked (its history ends with that turn) can be
    re-entered."""
    conn = tx.conn
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND session_pk = $2 AND status IN "
        "('running', 'waiting')",
        holder, pk,
    )
    if row is None or run_record(row[0], row[1]).abort_requested:
        return False
    requests = await conn.fetch(
        "SELECT body, status, expires_at FROM permission_requests WHERE run_id = $1", holder
    )
    asked = {wire.loads(body, PermissionRequest).tool_use_id for body, _, _ in requests}
    turn = await last_message(tx, pk)
    if not asked or turn is None:
        return False
    if turn.role != "assistant" or not any(use.id in asked for use in turn.tool_uses):
        return False
    pending = [expires_at for _, status, expires_at in requests if status == "pending"]
    until = max([*pending, await tx.now() + me.ttl])
    await conn.execute(
        "UPDATE leases SET owner = $1, expires_at = $2 WHERE session_pk = $3", PARKED, until, pk
    )
    return True


async def adopt(tx: Tx, me: Claimant, run_id: str) -> RunRecord | None:
    """Take over the parked claim of ``run_id`` (its instance stopped while it waited), for
    this store's instance to execute the run. :returns: the run's record, or ``None`` when
    a live instance holds it, or it has finished."""
    conn = tx.conn
    row = await conn.fetchrow(
        "SELECT r.session_pk, s.id FROM runs r JOIN sessions s ON s.pk = r.session_pk "
        "WHERE r.id = $1",
        run_id,
    )
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    pk, session_id = row
    await recover(tx, session_id, pk, me)  # a holder found gone now is parked first
    if not await _parked(tx, pk, run_id):
        return None
    await conn.execute(
        "UPDATE leases SET owner = $1, expires_at = $2 WHERE session_pk = $3",
        me.owner, await tx.now() + me.ttl, pk,
    )
    return await get_run(tx, run_id)


async def _parked(tx: Tx, pk: int, run_id: str) -> bool:
    """Whether the session's claim is ``run_id``'s, parked (:func:`park`)."""
    lease = await tx.conn.fetchrow(
        "SELECT holder, owner FROM leases WHERE session_pk = $1", pk
    )
    return lease is not None and lease[0] == run_id and lease[1] == PARKED


async def abort_parked(tx: Tx, pk: int, run: RunRecord, me: Claimant) -> bool:
    """End ``run`` aborted now if its claim is parked (no instance executes it), with the
    history repaired and the claim handed on. :returns: whether it did."""
    if not await _parked(tx, pk, run.id):
        return False
    session_id = await tx.conn.fetchval("SELECT id FROM sessions WHERE pk = $1", pk)
    ended = attrs.evolve(run, status="aborted", finished_at=wingspan.utc_now(),
                         error=ABORTED_PARKED.message)
    await end_run(tx, pk, ended, [ErrorEvent(error=ABORTED_PARKED)])
    await end_lease(tx, session_id, pk, run.id, ABORTED_PARKED.message, me)
    return True


async def claim(
    tx: Tx,
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
    pk = await session_pk(tx, session_id)
    await recover(tx, session_id, pk, me)
    lease = await conn.fetchval("SELECT holder FROM leases WHERE session_pk = $1", pk)
    if lease is None:
        # A free session goes to the first in line (a run admitted before), if any.
        await grant_next(tx, pk, me)
        lease = await conn.fetchval("SELECT holder FROM leases WHERE session_pk = $1", pk)
        if lease is None:
            await _insert_lease(tx, pk, holder, me.owner, None, await tx.now() + me.ttl)
            lease = holder
    if lease == holder:
        if unreleased:
            # Held again by a holder whose release failed: its own again, to renew.
            tx.effects.append(lambda: unreleased.discard([(session_id, holder)]))
        return True, None
    if not wait:
        return False, None
    admitted = await conn.fetchval(
        "SELECT ticket FROM lease_waiters WHERE session_pk = $1 AND holder = $2 AND owner = $3 "
        "ORDER BY ticket LIMIT 1",
        pk, holder, me.owner,
    )
    if admitted is not None:
        return False, int(admitted)
    return False, await join_queue(tx, pk, holder, me)


async def claim_state(tx: Tx, session_id: str, ticket: int, me: Claimant) -> tuple[str, float]:
    """``("granted" | "act" | "wait", when the lease lapses)`` for a waiting ticket; the
    time is the database's clock (:meth:`Tx.now`), not this host's."""
    row = await tx.conn.fetchrow(
        "SELECT l.ticket, l.expires_at, "
        "EXISTS (SELECT 1 FROM lease_waiters w WHERE w.ticket = $2), l.owner "
        "FROM sessions s LEFT JOIN leases l ON l.session_pk = s.pk WHERE s.id = $1",
        session_id, ticket,
    )
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    lease_ticket, expires_at, waiting, owner = row
    if lease_ticket == ticket:
        return "granted", 0.0
    if (expires_at is None or expires_at < await tx.now() or not waiting
            or await owner_gone(tx, me, owner)):
        return "act", 0.0
    return "wait", float(expires_at)


async def poll_claim(
    tx: Tx, session_id: str, ticket: int, holder: str, me: Claimant
) -> tuple[bool, int]:
    """Act for a waiting ticket (:func:`claim_state` said ``"act"``): recover a lapsed or
    gone holder's claim, take the free lease if it is ours, or queue again if our place
    lapsed. :returns: ``(granted, ticket)``."""
    conn = tx.conn
    pk = await session_pk(tx, session_id)
    await recover(tx, session_id, pk, me)
    lease = await conn.fetchrow("SELECT ticket FROM leases WHERE session_pk = $1", pk)
    if lease is None:
        await grant_next(tx, pk, me)
        lease = await conn.fetchrow("SELECT ticket FROM leases WHERE session_pk = $1", pk)
    if lease is not None and lease[0] == ticket:
        return True, ticket
    if await conn.fetchval("SELECT 1 FROM lease_waiters WHERE ticket = $1", ticket):
        return False, ticket
    # Our place lapsed (this instance could not renew it in time): queue again.
    return False, await join_queue(tx, pk, holder, me)


async def abandon(tx: Tx, session_id: str, ticket: int, hand_on: bool, me: Claimant) -> bool:
    """Stop waiting. :returns: whether the lease was granted meanwhile (and is kept unless
    ``hand_on``)."""
    conn = tx.conn
    await conn.execute("DELETE FROM lease_waiters WHERE ticket = $1", ticket)
    pk = await conn.fetchval(
        "SELECT l.session_pk FROM leases l JOIN sessions s ON s.pk = l.session_pk "
        "WHERE s.id = $1 AND l.ticket = $2",
        session_id, ticket,
    )
    if pk is None:
        return False
    if hand_on:
        await conn.execute("DELETE FROM leases WHERE session_pk = $1", pk)
        tx.claims(session_id)
        await grant_next(tx, pk, me)
    return True


async def release(tx: Tx, session_id: str, holder: str, me: Claimant) -> bool:
    """Give up the claim, or else the place in line ``holder`` was admitted to (a run
    that will not claim it). :returns: whether there was either."""
    conn = tx.conn
    pk = await conn.fetchval(
        "DELETE FROM leases WHERE holder = $1 AND session_pk = "
        "(SELECT pk FROM sessions WHERE id = $2) RETURNING session_pk",
        holder, session_id,
    )
    if pk is not None:
        tx.claims(session_id)
        await grant_next(tx, pk, me)
        return True
    # The next in line is granted the session by its claim (or the next release).
    places = await conn.fetch(
        "DELETE FROM lease_waiters WHERE holder = $1 AND session_pk = "
        "(SELECT pk FROM sessions WHERE id = $2) RETURNING ticket",
        holder, session_id,
    )
    return bool(places)


async def release_unreleased(
    tx: Tx, unreleased: Unreleased, me: Claimant, session_id: str
) -> bool:
    """Write the releases of ``session_id`` that failed. A run still ``running`` ended
    without its end being recorded: it is marked interrupted, and the history repaired, as
    for a gone holder. (One session a transaction: each holds that session's lock.)

    :returns: whether a claim was released.
    """
    pending = {claim: why for claim, why in unreleased.snapshot().items()
               if claim[0] == session_id}
    released = False
    for (_, holder), why in pending.items():
        pk = await tx.conn.fetchval(
            "SELECT l.session_pk FROM leases l JOIN sessions s ON s.pk = l.session_pk "
            "WHERE s.id = $1 AND l.holder = $2 AND l.owner = $3",
            session_id, holder, me.owner,
        )
        if pk is not None:
            await end_lease(tx, session_id, pk, holder, UNRECORDED_RUN.format(why=why), me)
            released = True
    tx.effects.append(lambda: unreleased.discard(pending))
    return released


async def renew(tx: Tx, me: Claimant, unreleased: Collection[tuple[str, str]]) -> None:
    """Keep this store's claims and tickets alive, except the claims it gave up."""
    conn, expires_at = tx.conn, await tx.now() + me.ttl
    await conn.execute(
        "UPDATE lease_waiters SET expires_at = $1 WHERE owner = $2", expires_at, me.owner
    )
    if not unreleased:
        await conn.execute(
            "UPDATE leases SET expires_at = $1 WHERE owner = $2", expires_at, me.owner
        )
        return
    held = await conn.fetch(
        "SELECT l.session_pk, s.id, l.holder FROM leases l "
        "JOIN sessions s ON s.pk = l.session_pk WHERE l.owner = $1",
        me.owner,
    )
    await conn.execute(
        "UPDATE leases SET expires_at = $1 WHERE session_pk = ANY($2::bigint[])",
        expires_at,
        [pk for pk, session_id, holder in held if (session_id, holder) not in unreleased],
    )


async def own_sessions(tx: Tx, me: Claimant) -> list[str]:
    """The sessions where this instance holds a claim or a place in line (a read, before
    :func:`give_up` takes them one by one)."""
    rows = await tx.conn.fetch(
        "SELECT s.id FROM sessions s WHERE s.pk IN (SELECT session_pk FROM leases WHERE "
        "owner = $1 UNION SELECT session_pk FROM lease_waiters WHERE owner = $1) ORDER BY s.pk",
        me.owner)
    return [row[0] for row in rows]


async def give_up(tx: Tx, me: Claimant, session_id: str) -> None:
    """Drop this instance's tickets on ``session_id`` (their queued runs are recorded
    interrupted) and end its claim there, as it closes."""
    conn = tx.conn
    pk = await conn.fetchval("SELECT pk FROM sessions WHERE id = $1", session_id)
    if pk is None:
        return
    tickets = await conn.fetch(
        "DELETE FROM lease_waiters WHERE owner = $1 AND session_pk = $2 "
        "RETURNING ticket, holder", me.owner, pk)
    for _, holder in sorted(tickets, key=lambda row: row[0]):
        await interrupt(tx, pk, holder, CLOSED_QUEUED, QUEUED)
    holder = await conn.fetchval(
        "SELECT holder FROM leases WHERE owner = $1 AND session_pk = $2", me.owner, pk)
    if holder is not None and not await park(tx, pk, holder, me):
        # (a run waiting for an answer outlives us: parked, it is taken up where answered)
        await end_lease(tx, session_id, pk, holder, CLOSED_RUN, me)


async def gone_owners(tx: Tx, me: Claimant) -> list[str]:
    """The instances that are gone yet hold claims or places in line."""
    owners = await tx.conn.fetch(
        "SELECT owner FROM leases UNION SELECT owner FROM lease_waiters")
    return sorted(await _gone(tx, me, [owner for (owner,) in owners]))


async def sessions_to_sweep(tx: Tx, me: Claimant) -> list[str]:
    """The sessions where an instance that is gone holds a claim or a place in line (a
    read: the store looks every second, and sweeps those sessions one by one)."""
    gone = await gone_owners(tx, me)
    if not gone:
        return []
    rows = await tx.conn.fetch(
        "SELECT s.id FROM sessions s WHERE s.pk IN (SELECT session_pk FROM leases WHERE "
        "owner = ANY($1::text[]) UNION SELECT session_pk FROM lease_waiters WHERE "
        "owner = ANY($1::text[])) ORDER BY s.pk", gone)
    return [row[0] for row in rows]


async def sweep(tx: Tx, me: Claimant, session_id: str) -> int:
    """Recover the claim, and drop the tickets (recording their queued runs interrupted),
    of the instances that are gone, whatever their host, on ``session_id`` (when a store
    opens, and every second after: a crashed server's sessions are free before anybody
    waits on them). A claim that merely lapsed is left to the claimants, who judge it.

    :returns: how many claims were recovered (0 or 1).
    """
    conn = tx.conn
    pk = await conn.fetchval("SELECT pk FROM sessions WHERE id = $1", session_id)
    if pk is None:
        return 0
    owners = await conn.fetch(
        "SELECT owner FROM leases WHERE session_pk = $1 UNION "
        "SELECT owner FROM lease_waiters WHERE session_pk = $1", pk)
    gone = sorted(await _gone(tx, me, [owner for (owner,) in owners]))
    if not gone:
        return 0
    tickets = await conn.fetch(
        "DELETE FROM lease_waiters WHERE owner = ANY($1::text[]) AND session_pk = $2 "
        "RETURNING ticket, holder",
        gone, pk,
    )
    for _, holder in sorted(tickets, key=lambda row: row[0]):  # in the order queued
        await interrupt(tx, pk, holder, ENDED_QUEUED, QUEUED)
    holder = await conn.fetchval(
        "SELECT holder FROM leases WHERE owner = ANY($1::text[]) AND session_pk = $2",
        gone, pk)
    if holder is None or await park(tx, pk, holder, me):
        return 0
    await end_lease(tx, session_id, pk, holder, ENDED_RUN, me)
    return 1
