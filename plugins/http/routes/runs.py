"""Runs and the event log: ``.../message``, ``.../message/stream``, ``.../abort``,
``/sessions/{id}/runs``, ``/runs/{id}`` (and its ``abort`` and ``events``) and
``/sessions/{id}/events``.

Every message is admitted as a run in the store first (:meth:`wingspan.Session.start`);
the blocking route then waits for its result and the streaming routes follow the session's
event log (:func:`wingspan.runs.follow`), so a client can come back with ``Last-Event-ID``
to any process sharing the store and get every event after it.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import AsyncGenerator
from typing import Any, cast

import attrs
from quart import Blueprint, Response, g, request

from wingspan import (
    ConfigError,
    IfBusy,
    LoggedEvent,
    ProviderError,
    RunRecord,
    Session,
    SessionRecord,
    Store,
    wire,
)
from wingspan.runs import RunFailed, RunHandle, before_run, follow

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..idempotency import idempotency_key as _idempotency_key
from ..runs import STOPPING, STREAM_STOPPED, TIMEOUT, runs_of
from ..shapes import AbortAnswer, MessageRequest, RunView
from ..sse import HEADERS, event_stream
from .agents import build_agent
from .sessions import listing, read_limit

blueprint = Blueprint("runs", __name__)

IF_BUSY = typing.get_args(IfBusy)
#: The answer of the blocking route to a run that ended with an ``error`` event, by code.
ERROR_STATUS = {"provider_error": 502, "aborted": 409, STOPPING: 503, TIMEOUT: 504}


# --- admission -------------------------------------------------------------------------------


async def _admit(
    session_id: str, *, resume: bool = False
) -> tuple[ServerState, RunHandle, int | None]:
    """Check the request in the order the API promises, then admit the run.

    :param resume: take a ``Last-Event-ID`` (or ``?after=``): the request comes back to
        the run of that event, which is followed again instead of admitting a new one, when
        the request is that run's (same agent and message) — with or without its key.
    :returns: the state, the run's handle, and the seq to follow it after (``None``: from
        its start).
    """
    g.session_id = session_id
    server = state()
    if server.stopping:
        raise ApiError(503, "the server is stopping; send the message again later",
                       code="unavailable")
    store = server.require_store()
    record = await store.get_session(session_id)  # 404
    after = _cursor(record) if resume else None
    key = _idempotency_key()
    body, _ = await read_body(MessageRequest, what="message request")  # 400
    if body.message is None:
        raise ApiError(400, "message is required", details=[("$.message", "required")])
    if not body.message.strip():
        raise ApiError(400, "message must not be empty", details=[("$.message", "empty")])
    if body.agent_id is None:
        raise ApiError(400, "agent_id is required", details=[("$.agent_id", "required")])
    if body.if_busy is not None and body.if_busy not in IF_BUSY:
        raise ApiError(400, f"if_busy must be one of {', '.join(IF_BUSY)}, got "
                       f"{body.if_busy[:40]!r}", details=[("$.if_busy", "queue|reject|interrupt")])
    agent_record = await store.get_agent(body.agent_id)  # 404
    agent = await build_agent(server, agent_record)  # 400
    request_hash = _request_hash(body)
    if after is not None and key is None:
        handle = await _resumed(server, store, session_id, after, request_hash)
        g.run_id = handle.id
        return server, handle, after
    try:
        session = Session.from_record(record, agent=agent, store=store, runtime=server.runtime)
    except ConfigError as exc:
        raise ApiError(400, f"session {session_id}: {exc}") from None
    # A repair of the history (error results for calls left pending) is stored only by the
    # holder of the session's claim: with the run's admission when its turn is now and the
    # history is as long as it was read (Session.start), else once its turn comes. Never
    # while a run still going in another process holds the claim.
    handle = await server.runs.admit(
        session, body.message, agent, if_busy=cast(IfBusy, body.if_busy or "queue"),
        idempotency_key=key, request_hash=request_hash,
    )
    g.run_id = handle.id
    first = handle.record.first_seq
    if after is not None and first is not None and after < first:
        after = None  # an event before this run: follow it from its start
    return server, handle, after


async def _resumed(server: ServerState, store: Store, session_id: str, after: int,
                   request_hash: str) -> RunHandle:
    """The run a reconnecting request comes back to: the one whose events go on after seq
    ``after``, if the request is that run's."""
    following = await store.read_events(session_id, after=max(after - 1, 0), limit=1)
    run = await store.get_run(following[0].run_id) if following else None
    if run is None or run.request_hash != request_hash:
        raise ApiError(409, f"Last-Event-ID {after} is an event of another request's run: "
                       "send the same message to resume its stream, or no Last-Event-ID to "
                       "start a new run", details=[("Last-Event-ID", "of another request")])
    return server.runtime.runs.get(run.id) or RunHandle(record=run, store=store)


def _request_hash(body: MessageRequest) -> str:
    """What a repeat of a request must match: the agent and the message (``if_busy`` only
    decides what happens to a new one)."""
    text = json.dumps([body.agent_id, body.message], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- the seed's message routes ---------------------------------------------------------------


@blueprint.post("/sessions/<session_id>/message")
async def send_message(session_id: str) -> Any:
    server, handle, _ = await _admit(session_id)
    try:
        result = await handle.result()
    except ProviderError as exc:
        raise ApiError(502, str(exc)) from None
    except RunFailed as exc:
        raise ApiError(ERROR_STATUS.get(exc.error.code, 500), exc.error.message,
                       code=exc.error.code if exc.error.code in ERROR_STATUS else None) from None
    return wire.unstructure(result, server.converter)


@blueprint.post("/sessions/<session_id>/message/stream")
async def stream_message(session_id: str) -> Any:
    server, handle, after = await _admit(session_id, resume=True)
    start = after if after is not None else before_run(handle.record)
    return _sse(server, follow(handle.store, session_id, after=start, run_id=handle.id,
                               heartbeat=server.config.ping_interval, task=handle.task),
                lifecycle=False, until_terminal=True)


@blueprint.post("/sessions/<session_id>/abort")
async def abort_session_run(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    store = server.require_store()
    await store.get_session(session_id)
    active = await _active_run(store, session_id)
    if active is None:
        raise ApiError(409, f"no run is active on session {session_id}")
    g.run_id = active.id
    await server.runs.abort(store, active.id)
    return wire.unstructure(AbortAnswer(status="aborted", run_id=active.id), server.converter)


async def _active_run(store: Store, session_id: str) -> RunRecord | None:
    """The session's run that holds it (running or waiting), if any."""
    async for run in runs_of(store, session_id):
        if run.status in ("running", "waiting"):
            return run
    return None


# --- runs ------------------------------------------------------------------------------------


def _view(run: RunRecord) -> RunView:
    """The run as the API shows it: its record's fields but the store's own
    (``request_hash``, ``abort_requested``)."""
    return RunView(**{field.name: getattr(run, field.name) for field in attrs.fields(RunView)})


@blueprint.post("/sessions/<session_id>/runs")
async def create_run(session_id: str) -> Any:
    server, handle, _ = await _admit(session_id)
    body = wire.unstructure(_view(handle.record), server.converter)
    return body, 202, {"Location": f"/runs/{handle.id}"}


@blueprint.get("/sessions/<session_id>/runs")
async def list_runs(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    limit = read_limit()
    cursor = request.args.get("cursor") or None
    page = await server.require_store().list_runs(session_id, limit=limit, cursor=cursor)
    items = wire.unstructure([_view(run) for run in page.items], server.converter)
    return listing(items, f"/sessions/{session_id}/runs", limit, page.next_cursor)


@blueprint.get("/runs/<run_id>")
async def get_run(run_id: str) -> Any:
    g.run_id = run_id
    server = state()
    run = await server.require_store().get_run(run_id)
    g.session_id = run.session_id
    return wire.unstructure(_view(run), server.converter)


@blueprint.post("/runs/<run_id>/abort")
async def abort_run(run_id: str) -> Any:
    g.run_id = run_id
    server = state()
    store = server.require_store()
    await server.runs.abort(store, run_id)  # 404, 409
    return wire.unstructure(_view(await store.get_run(run_id)), server.converter)


@blueprint.get("/runs/<run_id>/events")
async def run_events(run_id: str) -> Any:
    g.run_id = run_id
    server = state()
    store = server.require_store()
    run = await store.get_run(run_id)
    g.session_id = run.session_id
    cursor = _cursor(await store.get_session(run.session_id))
    after = before_run(run) if cursor is None else cursor
    here = server.runtime.runs.get(run_id)
    return _sse(server, follow(store, run.session_id, after=after, run_id=run_id,
                               heartbeat=server.config.ping_interval,
                               task=here.task if here is not None else None))


@blueprint.get("/sessions/<session_id>/events")
async def session_events(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    store = server.require_store()
    record = await store.get_session(session_id)
    after = _cursor(record)
    return _sse(server, follow(store, session_id,
                               after=record.last_seq if after is None else after,
                               heartbeat=server.config.ping_interval))


def _cursor(session: SessionRecord) -> int | None:
    """Where a replay resumes: ``Last-Event-ID`` or ``?after=`` (a seq of ``session``'s
    log), ``None`` when neither is given."""
    if "Last-Event-ID" in request.headers:
        raw, name = request.headers["Last-Event-ID"], "Last-Event-ID"
    elif "after" in request.args:
        raw, name = request.args["after"], "after"
    else:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(400, f"{name} must be the seq of an event (a whole number), got "
                       f"{raw[:40]!r}", details=[(name, "a whole number")])
    seq = int(raw)
    if seq > session.last_seq:
        raise ApiError(400, f"{name} {seq} is not an event of session {session.id} (its "
                       f"latest is {session.last_seq}): it is from another session, or the "
                       "future", details=[(name, "after the session's latest event")])
    return seq


def _sse(server: ServerState, batches: AsyncGenerator[list[LoggedEvent], None], *,
         lifecycle: bool = True, until_terminal: bool = False) -> Response:
    response = Response(
        event_stream(batches, server.converter, stopped=server.runs.stopped,
                     stop_error=STREAM_STOPPED, lifecycle=lifecycle,
                     until_terminal=until_terminal),
        headers=HEADERS,
    )
    response.timeout = None  # a stream lasts as long as its run (or its client)
    return response
