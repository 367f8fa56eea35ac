"""Sessions: ``/sessions`` and ``/sessions/{id}`` (their runs are in :mod:`.runs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
from quart import Blueprint, Response, g, request

from wingspan import SessionRecord, new_id, utc_now, wire

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..idempotency import create_once, idempotency_key
from ..shapes import SessionRequest, SessionSummary, SessionView, Status

blueprint = Blueprint("sessions", __name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _check_work_dir(server: ServerState, value: str) -> str:
    """An existing absolute directory inside the configured roots, resolved (symlinks
    followed, so a later link swap cannot move the session elsewhere)."""
    field = "$.work_dir"
    path = Path(value)
    if not path.is_absolute():
        raise ApiError(400, f"work_dir must be an absolute path, got {value!r}",
                       details=[(field, "must be an absolute path")])
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise ApiError(400, f"work_dir {value!r} does not exist",
                       details=[(field, "does not exist")]) from None
    if not resolved.is_dir():
        raise ApiError(400, f"work_dir {value!r} is not a directory",
                       details=[(field, "is not a directory")])
    roots = server.config.work_dir_roots
    if roots and not any(resolved.is_relative_to(root) for root in roots):
        raise ApiError(400, f"work_dir {value!r} is outside the directories this server allows "
                       f"({', '.join(roots)})", details=[(field, "outside the allowed roots")])
    return str(resolved)


async def _view(server: ServerState, record: SessionRecord) -> Any:
    history = await server.require_store().load_messages(record.id)
    view = SessionView(id=record.id, title=record.title, work_dir=record.work_dir,
                       history=tuple(history), created_at=record.created_at,
                       updated_at=record.updated_at)
    return wire.unstructure(view, server.converter)


@blueprint.post("/sessions")
async def create_session() -> Any:
    server = state()
    key = idempotency_key()
    body, _ = await read_body(SessionRequest, optional=True, what="session")
    work_dir = _check_work_dir(server, body.work_dir) if body.work_dir is not None else None
    record = SessionRecord(id=new_id(), title=body.title or "", work_dir=work_dir)
    store = server.require_store()
    record, status = await create_once(server, "sessions", key, body, record,
                                       store.create_session, store.get_session)
    g.session_id = record.id
    return await _view(server, record), status


@blueprint.get("/sessions")
async def list_sessions() -> Any:
    server = state()
    limit = read_limit()
    cursor = request.args.get("cursor") or None
    page = await server.require_store().list_sessions(limit=limit, cursor=cursor)
    items = [
        SessionSummary(id=r.id, title=r.title, work_dir=r.work_dir, message_count=r.message_count,
                       created_at=r.created_at, updated_at=r.updated_at)
        for r in page.items
    ]
    return listing(wire.unstructure(items, server.converter), "/sessions", limit,
                   page.next_cursor)


def read_limit() -> int:
    """The ``?limit=`` of a listing: 1 to :data:`MAX_LIMIT`, :data:`DEFAULT_LIMIT` if absent."""
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    # isdigit() alone takes "²" and "①", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw[:20]!r}",
                       details=[("limit", f"an integer from 1 to {MAX_LIMIT}")])
    return int(raw)


def listing(items: Any, path: str, limit: int, next_cursor: str | None) -> Response:
    """A page of a listing, with the next page's URL in its ``Link`` header."""
    body = json.dumps(items, separators=(",", ":"), ensure_ascii=False)
    response = Response(body, mimetype="application/json")
    if next_cursor is not None:
        url = f"{path}?limit={limit}&cursor={quote(next_cursor, safe='')}"
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


@blueprint.get("/sessions/<session_id>")
async def get_session(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    return await _view(server, await server.require_store().get_session(session_id))


@blueprint.put("/sessions/<session_id>")
async def update_session(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    store = server.require_store()
    current = await store.get_session(session_id)
    body, fields = await read_body(SessionRequest, what="session")
    changes: dict[str, Any] = {}
    if "title" in fields:
        if body.title is None:
            raise ApiError(400, "title must be a string", details=[("$.title", "must not be null")])
        changes["title"] = body.title
    if "work_dir" in fields:
        changes["work_dir"] = (
            _check_work_dir(server, body.work_dir) if body.work_dir is not None else None
        )
    updated = await store.update_session(attrs.evolve(current, **changes, updated_at=utc_now()))
    return await _view(server, updated)


@blueprint.delete("/sessions/<session_id>")
async def delete_session(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    store = server.require_store()
    await store.get_session(session_id)
    await server.runs.abort_session(store, session_id)
    await store.delete_session(session_id)
    return wire.unstructure(Status(status="deleted"), server.converter)
