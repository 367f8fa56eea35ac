"""The ``memory://`` store: everything in this process's memory, gone when it ends.

It keeps the full store contract (the same state machine checks it as the SQLite store), so
it suits tests and short-lived embedding. Claims are served first come, first served. They
live and end with this process, so there is never a dead holder's claim to recover, and a
release, which writes nothing, is never put off.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import attrs

import wingspan
from wingspan import (
    AgentRecord,
    ConfigError,
    Credential,
    Message,
    NotFoundError,
    Page,
    RunRecord,
    SessionRecord,
    StoreSpec,
)

T = TypeVar("T")
MAX_PAGE = 500


class MemoryStore:
    """A :class:`wingspan.Store` in memory."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._messages: dict[str, list[Message]] = {}
        self._runs: dict[str, RunRecord] = {}
        self._credentials: dict[str, Credential] = {}
        self._holders: dict[str, str] = {}
        self._waiters: dict[str, collections.deque[tuple[str, asyncio.Future[None]]]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryStore sessions={len(self._sessions)} agents={len(self._agents)}>"

    # --- agents -----------------------------------------------------------------------------

    async def create_agent(self, agent: AgentRecord) -> AgentRecord:
        self._check_open()
        if agent.id in self._agents:
            raise wingspan.ConflictError(f"agent {agent.id} already exists")
        self._agents[agent.id] = agent
        return agent

    async def get_agent(self, agent_id: str) -> AgentRecord:
        self._check_open()
        try:
            return self._agents[agent_id]
        except KeyError:
            raise NotFoundError(f"agent {agent_id!r} not found") from None

    async def update_agent(self, agent: AgentRecord) -> AgentRecord:
        await self.get_agent(agent.id)
        self._agents[agent.id] = agent
        return agent

    async def delete_agent(self, agent_id: str) -> None:
        await self.get_agent(agent_id)
        del self._agents[agent_id]

    async def list_agents(self, *, limit: int = 50, cursor: str | None = None) -> Page[AgentRecord]:
        self._check_open()
        return _page(self._agents, limit, cursor)

    # --- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        self._check_open()
        if session.id in self._sessions:
            raise wingspan.ConflictError(f"session {session.id} already exists")
        session = attrs.evolve(session, message_count=0)
        self._sessions[session.id] = session
        self._messages[session.id] = []
        return session

    async def get_session(self, session_id: str) -> SessionRecord:
        self._check_open()
        try:
            record = self._sessions[session_id]
        except KeyError:
            raise NotFoundError(f"session {session_id!r} not found") from None
        return attrs.evolve(record, message_count=len(self._messages[session_id]))

    async def update_session(self, session: SessionRecord) -> SessionRecord:
        await self.get_session(session.id)
        self._sessions[session.id] = session
        return await self.get_session(session.id)

    async def delete_session(self, session_id: str) -> None:
        await self.get_session(session_id)
        del self._sessions[session_id]
        del self._messages[session_id]
        for run_id in [r.id for r in self._runs.values() if r.session_id == session_id]:
            del self._runs[run_id]
        self._holders.pop(session_id, None)
        for _, future in self._waiters.pop(session_id, ()):
            if not future.done():
                future.set_exception(NotFoundError(f"session {session_id!r} was deleted"))

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]:
        self._check_open()
        page = _page(self._sessions, limit, cursor)
        items = tuple(
            attrs.evolve(s, message_count=len(self._messages[s.id])) for s in page.items
        )
        return Page(items=items, next_cursor=page.next_cursor)

    # --- history ----------------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        await self.get_session(session_id)
        for message in messages:
            if not isinstance(message, Message):
                raise TypeError(f"append_messages takes Messages, got {type(message).__name__}")
        history = self._messages[session_id]
        history.extend(messages)
        return len(history)

    async def load_messages(self, session_id: str) -> list[Message]:
        await self.get_session(session_id)
        return list(self._messages[session_id])

    # --- runs -------------------------------------------------------------------------------

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        await self.get_session(session_id)
        if self._holders.get(session_id) in (None, holder) and not self._waiters.get(session_id):
            self._holders[session_id] = holder
            return True
        if not wait:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(session_id, collections.deque())
        entry = (holder, future)
        queue.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            if future.done():  # granted (or the session deleted) just as the wait ran out
                future.result()
                return True
            queue.remove(entry)
            return False
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._grant_next(session_id)  # it was ours; hand it on
            elif entry in queue:
                queue.remove(entry)
            raise

    async def release_session(self, session_id: str, holder: str) -> None:
        self._check_open()
        if self._holders.get(session_id) == holder:
            self._grant_next(session_id)

    def _grant_next(self, session_id: str) -> None:
        queue = self._waiters.get(session_id)
        while queue:
            holder, future = queue.popleft()
            if not future.done():
                self._holders[session_id] = holder
                future.set_result(None)
                return
        self._holders.pop(session_id, None)

    async def save_run(self, run: RunRecord) -> None:
        await self.get_session(run.session_id)
        self._runs[run.id] = run

    async def get_run(self, run_id: str) -> RunRecord:
        self._check_open()
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFoundError(f"run {run_id!r} not found") from None

    # --- credentials ------------------------------------------------------------------------

    async def set_credential(self, provider: str, credential: Credential) -> None:
        self._check_open()
        self._credentials[provider] = credential

    async def get_credential(self, provider: str) -> Credential | None:
        self._check_open()
        return self._credentials.get(provider)

    async def delete_credential(self, provider: str) -> bool:
        self._check_open()
        return self._credentials.pop(provider, None) is not None

    async def list_credentials(self) -> dict[str, str]:
        self._check_open()
        return {name: c.type for name, c in sorted(self._credentials.items())}

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise wingspan.StoreError("the memory store is closed")


def _page(records: Mapping[str, T], limit: int, cursor: str | None) -> Page[T]:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    # Ids are ULIDs: sorting them sorts by creation time. Newest first; the cursor is the
    # last id shown, so rows added meanwhile never shift a later page.
    ids = sorted((i for i in records if cursor is None or i < cursor), reverse=True)
    shown = ids[:limit]
    next_cursor = shown[-1] if len(ids) > limit else None
    return Page(items=tuple(records[i] for i in shown), next_cursor=next_cursor)


async def open_memory_store(url: str, settings: Mapping[str, Any]) -> MemoryStore:
    if url not in ("memory://", "memory:"):
        raise ConfigError(f"a memory store URL is just 'memory://', got {url!r}")
    return MemoryStore()


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [
        StoreSpec(
            scheme="memory",
            open=open_memory_store,
            description="in this process's memory; lost when it ends",
        )
    ]
