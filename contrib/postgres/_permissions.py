"""Permission requests and the sessions' grants, run in the store's transactions.

A request's answer and the grant it makes are one transaction, and so is the change of its
run's status (``waiting`` while a request of it is pending, ``running`` again after).
"""

from __future__ import annotations

import attrs

from wingspan import (
    FINISHED_STATUSES,
    ConflictError,
    NotFoundError,
    PermissionDecision,
    PermissionRequest,
    ResolvedBy,
    Rule,
    wire,
)
from wingspan.permissions import resolved

from ._events import write_request
from ._jobs import session_pk, stored_run, write_run
from ._tx import Tx


async def add(tx: Tx, request: PermissionRequest) -> PermissionRequest:
    _, run = await stored_run(tx, request.run_id)
    if run.status in FINISHED_STATUSES or run.status == "queued":
        raise ConflictError(f"run {run.id} cannot wait for a permission: it is {run.status}")
    pk = await session_pk(tx, request.session_id)
    if await tx.conn.fetchval("SELECT 1 FROM permission_requests WHERE id = $1",
                              request.id) is not None:
        raise ConflictError(f"permission request {request.id!r} already exists")
    await tx.conn.execute(
        "INSERT INTO permission_requests (id, session_pk, run_id, status, expires_at, body) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        request.id, pk, request.run_id, request.status, request.expires_at.timestamp(),
        wire.dumps(request))
    if run.status != "waiting":
        await write_run(tx, attrs.evolve(run, status="waiting"))
    return request


async def resolve(tx: Tx, request_id: str, decision: PermissionDecision, by: ResolvedBy,
                  message: str | None, grant: Rule | None) -> PermissionRequest:
    row = await tx.conn.fetchrow("SELECT session_pk, body FROM permission_requests WHERE id = $1",
                                 request_id)
    if row is None:
        raise NotFoundError(f"permission request {request_id!r} not found")
    pk, request = row[0], wire.loads(row[1], PermissionRequest)
    if request.status != "pending":
        raise ConflictError(f"permission request {request_id} was already answered "
                            f"({request.decision} by {request.by})")
    request = resolved(request, decision=decision, by=by, message=message)
    await write_request(tx, request)
    if grant is not None:
        await tx.conn.execute("INSERT INTO grants (session_pk, body) VALUES ($1, $2)",
                              pk, wire.dumps(grant))
    still = await tx.conn.fetchval(
        "SELECT 1 FROM permission_requests WHERE run_id = $1 AND status = 'pending' LIMIT 1",
        request.run_id)
    if still is None:
        _, run = await stored_run(tx, request.run_id)
        if run.status == "waiting":
            await write_run(tx, attrs.evolve(run, status="running"))
    return request


async def get(tx: Tx, request_id: str) -> PermissionRequest:
    body = await tx.conn.fetchval("SELECT body FROM permission_requests WHERE id = $1",
                                  request_id)
    if body is None:
        raise NotFoundError(f"permission request {request_id!r} not found")
    return wire.loads(body, PermissionRequest)


async def of_session(tx: Tx, session_id: str, pending_only: bool) -> list[PermissionRequest]:
    pk = await session_pk(tx, session_id)
    where = " AND status = 'pending'" if pending_only else ""
    return [wire.loads(body, PermissionRequest) for (body,) in await tx.conn.fetch(
        f"SELECT body FROM permission_requests WHERE session_pk = $1{where} ORDER BY id", pk)]


async def grants(tx: Tx, session_id: str) -> list[Rule]:
    pk = await session_pk(tx, session_id)
    return [wire.loads(body, Rule) for (body,) in await tx.conn.fetch(
        "SELECT body FROM grants WHERE session_pk = $1 ORDER BY id", pk)]
