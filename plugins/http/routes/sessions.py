"""Sessions and their runs: ``/sessions``, ``/sessions/{id}``, ``.../message``,
``.../message/stream`` and ``.../abort``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
from quart import Blueprint, Response, g, request

from wingspan import (
    ConfigError,
    Done,
    ErrorEvent,
    Session,
    SessionRecord,
    new_id,
    utc_now,
    wire,
)

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..runs import ABORTED, STOPPING, TIMEOUT, Run
from ..shapes import (
    AbortAnswer,
    MessageRequest,
    SessionRequest,
    SessionSummary,
    SessionView,
    Status,
)
from ..sse import HEADERS, event_stream
from .agents import build_agent

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
    body, _ = await read_body(SessionRequest, optional=True, what="session")
    work_dir = _check_work_dir(server, body.work_dir) if body.work_dir is not None else None
    record = SessionRecord(id=new_id(), title=body.title or "", work_dir=work_dir)
    record = await server.require_store().create_session(record)
    g.session_id = record.id
    return await _view(server, record), 201


@blueprint.get("/sessions")
async def list_sessions() -> Any:
    server = state()
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    # isdigit() alone takes "²" and "①", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw[:20]!r}",
                       details=[("limit", f"an integer from 1 to {MAX_LIMIT}")])
    limit = int(raw)
    cursor = request.args.get("cursor") or None
    page = await server.require_store().list_sessions(limit=limit, cursor=cursor)
    items = [
        SessionSummary(id=r.id, title=r.title, work_dir=r.work_dir, message_count=r.message_count,
                       created_at=r.created_at, updated_at=r.updated_at)
        for r in page.items
    ]
    response = Response(
        _dumps(wire.unstructure(items, server.converter)), mimetype="application/json"
    )
    if page.next_cursor is not None:
        url = f"/sessions?limit={limit}&cursor={quote(page.next_cursor, safe='')}"
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


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
    await server.runs.abort_session(session_id)
    await store.delete_session(session_id)
    return wire.unstructure(Status(status="deleted"), server.converter)


# --- runs -------------------------------------------------------------------------------------


async def _start_run(session_id: str) -> tuple[ServerState, Run]:
    """Check the request in the order the API promises, then start the run."""
    g.session_id = session_id
    server = state()
    if server.stopping:
        raise ApiError(503, "the server is stopping; send the message again later",
                       code="unavailable")
    store = server.require_store()
    record = await store.get_session(session_id)  # 404
    body, _ = await read_body(MessageRequest, what="message request")  # 400
    if body.message is None:
        raise ApiError(400, "message is required", details=[("$.message", "required")])
    if not body.message.strip():
        raise ApiError(400, "message must not be empty", details=[("$.message", "empty")])
    if body.agent_id is None:
        raise ApiError(400, "agent_id is required", details=[("$.agent_id", "required")])
    agent_record = await store.get_agent(body.agent_id)  # 404
    agent = await build_agent(server, agent_record)  # 400
    try:
        session = Session(agent=agent, work_dir=record.work_dir, store=store, id=record.id,
                          title=record.title, runtime=server.runtime)
    except ConfigError as exc:
        raise ApiError(400, f"session {session_id}: {exc}") from None
    # The history is loaded once the run holds the session's claim, not here: loading (and
    # repairing) it before, as Session.resume does, could add error results to the tool
    # calls of a run still going on the same session in another process.
    return server, server.runs.start(session, body.message, agent)


ERROR_STATUS = {"provider_error": 502, ABORTED: 409, STOPPING: 503, "too_slow": 500,
                TIMEOUT: 504}


@blueprint.post("/sessions/<session_id>/message")
async def send_message(session_id: str) -> Any:
    server, run = await _start_run(session_id)
    outcome = await run.wait()
    g.run_id = run.run_id
    if type(outcome) is Done:
        return wire.unstructure(outcome.result, server.converter)
    assert type(outcome) is ErrorEvent
    raise ApiError(ERROR_STATUS.get(outcome.error.code, 500), outcome.error.message)


@blueprint.post("/sessions/<session_id>/message/stream")
async def stream_message(session_id: str) -> Any:
    server, run = await _start_run(session_id)
    response = Response(
        event_stream(run, server.converter, ping_interval=server.config.ping_interval),
        headers=HEADERS,
    )
    response.timeout = None  # a stream lasts as long as its run
    return response


@blueprint.post("/sessions/<session_id>/abort")
async def abort(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    await server.require_store().get_session(session_id)
    run = server.runs.active_run(session_id)
    if run is None:
        raise ApiError(409, f"no run is active on session {session_id} in this server")
    g.run_id = run.run_id
    await server.runs.abort(run)
    return wire.unstructure(AbortAnswer(status="aborted", run_id=run.run_id), server.converter)
