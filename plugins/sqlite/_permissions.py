"""Permission requests and the sessions' grants, run in the store's threads.

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

from ._events import write_request, write_run
from ._jobs import session_pk
from ._runs import stored_run
from ._worker import Tx


def add(tx: Tx, request: PermissionRequest) -> PermissionRequest:
    _, run = stored_run(tx, request.run_id)
    if run.status in FINISHED_STATUSES or run.status == "queued":
        raise ConflictError(f"run {run.id} cannot wait for a permission: it is {run.status}")
    pk = session_pk(tx, request.session_id)
    if tx.conn.execute("SELECT 1 FROM permission_requests WHERE id = ?",
                       (request.id,)).fetchone():
        raise ConflictError(f"permission request {request.id!r} already exists")
    tx.conn.execute(
        "INSERT INTO permission_requests (id, session_pk, run_id, status, expires_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (request.id, pk, request.run_id, request.status, request.expires_at.timestamp(),
         wire.dumps(request)))
    if run.status != "waiting":
        write_run(tx, attrs.evolve(run, status="waiting"))
    return request


def resolve(tx: Tx, request_id: str, decision: PermissionDecision, by: ResolvedBy,
            message: str | None,
            grant: Rule | None) -> PermissionRequest:
    row = tx.conn.execute("SELECT session_pk, body FROM permission_requests WHERE id = ?",
                          (request_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"permission request {request_id!r} not found")
    pk, request = row[0], wire.loads(row[1], PermissionRequest)
    if request.status != "pending":
        raise ConflictError(f"permission request {request_id} was already answered "
                            f"({request.decision} by {request.by})")
    request = resolved(request, decision=decision, by=by, message=message)
    write_request(tx, request)
    if grant is not None:
        tx.conn.execute("INSERT INTO grants (session_pk, body) VALUES (?, ?)",
                        (pk, wire.dumps(grant)))
    still = tx.conn.execute(
        "SELECT 1 FROM permission_requests WHERE run_id = ? AND status = 'pending'",
        (request.run_id,)).fetchone()
    if still is None:
        _, run = stored_run(tx, request.run_id)
        if run.status == "waiting":
            write_run(tx, attrs.evolve(run, status="running"))
    return request


def get(tx: Tx, request_id: str) -> str:
    row = tx.conn.execute("SELECT body FROM permission_requests WHERE id = ?",
                          (request_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"permission request {request_id!r} not found")
    body: str = row[0]
    return body


def of_session(tx: Tx, session_id: str, pending_only: bool) -> list[str]:
    pk = session_pk(tx, session_id)
    where = " AND status = 'pending'" if pending_only else ""
    return [body for (body,) in tx.conn.execute(
        f"SELECT body FROM permission_requests WHERE session_pk = ?{where} ORDER BY id",
        (pk,)).fetchall()]


def grants(tx: Tx, session_id: str) -> list[str]:
    pk = session_pk(tx, session_id)
    return [body for (body,) in tx.conn.execute(
        "SELECT body FROM grants WHERE session_pk = ? ORDER BY id", (pk,)).fetchall()]
