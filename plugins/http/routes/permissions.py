"""Permission requests: ``/sessions/{id}/permissions`` lists them, a POST answers one.

An answer is stored first (of two racing answers, from any process, one wins: the other is
409); then the run continues: at once where it waits in this process, within
:data:`wingspan.permissions.ANSWER_POLL` seconds where it waits in another, and here — under
the same run id, from its stored history — when no process runs it any more (its server
was restarted or killed meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quart import Blueprint, g, request

from wingspan import FINISHED_STATUSES, ErrorInfo, NotFoundError, Session, WingspanError, wire
from wingspan.permissions import ANSWER_POLL, Answer, answer
from wingspan.runs import abandon, keep_task

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..shapes import AnswerRequest
from .agents import build_agent

blueprint = Blueprint("permissions", __name__)
log = logging.getLogger("wingspan.http")

STATUSES = ("pending", "all")
#: Seconds an answer given here keeps checking whether its run needs a process to take it
#: up: one whose process ended unseen (on another host) is found once that process's
#: claim lapses.
TAKE_UP_WINDOW = 90.0


@blueprint.get("/sessions/<session_id>/permissions")
async def list_permissions(session_id: str) -> Any:
    g.session_id = session_id
    server = state()
    status = request.args.get("status", "pending")
    if status not in STATUSES:
        raise ApiError(400, f"status must be pending or all, got {status!r}",
                       details=[("status", "must be pending or all")])
    requests = await server.require_store().list_permission_requests(
        session_id, pending_only=status == "pending")
    return wire.unstructure(requests, server.converter)


@blueprint.post("/sessions/<session_id>/permissions/<request_id>")
async def answer_permission(session_id: str, request_id: str) -> Any:
    g.session_id = session_id
    server = state()
    store = server.require_store()
    body, _ = await read_body(AnswerRequest, what="answer")
    asked = await store.get_permission_request(request_id)
    if asked.session_id != session_id:  # another session's: not found here
        raise NotFoundError(f"permission request {request_id!r} not found in session "
                            f"{session_id!r}")
    g.run_id = asked.run_id
    stored = await answer(store, request_id, Answer(decision=body.decision, message=body.message,
                                                    pattern=body.pattern))  # 409
    if server.runtime.runs.get(stored.run_id) is None:  # not here (woken, if it was)
        try:
            adopted = await take_up(server, stored.run_id)
        except WingspanError as exc:  # answered all the same; the run is left as it is
            log.warning("run %s: taking it up after an answer failed: %s", stored.run_id, exc)
            adopted = True
        if not adopted:
            keep_task(_keep_taking_up(server, stored.run_id))
    return wire.unstructure(stored, server.converter)


async def take_up(server: ServerState, run_id: str) -> bool:
    """Execute ``run_id`` here if no process executes it any more (its own ended while it
    waited: :meth:`wingspan.Store.adopt_run`). :returns: whether the question is settled
    (taken up here, or finished); ``False`` while another process holds the run."""
    store = server.require_store()
    run = await store.adopt_run(run_id)
    if run is None:
        return (await store.get_run(run_id)).status in FINISHED_STATUSES
    try:
        if run.agent_id is None:
            raise ApiError(400, f"run {run_id} has no agent to continue with")
        agent = await build_agent(server, await store.get_agent(run.agent_id))
        session = Session.from_record(await store.get_session(run.session_id), agent=agent,
                                      store=store, runtime=server.runtime)
        await session.reenter(run)
    except (ApiError, WingspanError) as exc:
        await abandon(store, run, ErrorInfo(code="failed", message=(
            f"the run could not continue after its permission answer: {exc}")))
    log.info("run %s of session %s taken up after its process ended", run_id, run.session_id)
    return True


async def _keep_taking_up(server: ServerState, run_id: str) -> None:
    """:func:`take_up` until it is settled, for :data:`TAKE_UP_WINDOW` seconds at most."""
    deadline = asyncio.get_running_loop().time() + TAKE_UP_WINDOW
    while asyncio.get_running_loop().time() < deadline and not server.stopping:
        await asyncio.sleep(2 * ANSWER_POLL)
        try:
            if await take_up(server, run_id):
                return
        except WingspanError as exc:
            log.warning("run %s: taking it up after an answer failed: %s", run_id, exc)
            return
