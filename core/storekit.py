"""Helpers for store plugins: the parts of a store that do not depend on where it keeps things.

- :class:`KeyValueStore` is a whole :class:`~wingspan.Store` for one process on top of four
  methods that read, write, remove and list values by table and key: a dict-backed or
  file-backed store is those four methods;
- :class:`ClaimQueue` serves :meth:`Store.claim_session` / :meth:`Store.release_session` for a
  store used by one process: per-session claims, first come first served, with waits that time
  out, can be cancelled and end when the session is deleted or the store closed;
- :func:`paginate` pages records kept in a mapping by id, newest first, as every listing is.

A store that several processes share (``sqlite://``) must serialise claims across them, in the
storage itself: it can use neither :class:`ClaimQueue` nor :class:`KeyValueStore`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from .errors import ConfigError, ConflictError, NotFoundError, StoreError
from .store import AgentRecord, Credential, Page, RunRecord, SessionRecord
from .types import Message

__all__ = ["MAX_PAGE", "ClaimQueue", "KeyValueStore", "paginate"]

T = TypeVar("T")

#: The largest ``limit`` a listing accepts.
MAX_PAGE = 500

_Waiter = tuple[str, "asyncio.Future[None]"]


class ClaimQueue:
    """The claims on a store's sessions, for a store used by one process.

    A store calls :meth:`claim` from ``claim_session`` (after checking that the session
    exists), :meth:`release` from ``release_session``, :meth:`delete_session` from
    ``delete_session`` and :meth:`close` from ``close``. What it guarantees is what the
    store contract (``wingspan.testing.ClaimContract``) checks:

    - one holder per session; claiming again as that holder is granted at once;
    - waiters are served first come, first served, as each holder releases;
    - a wait that times out, or is cancelled, leaves the queue (a claim granted just as the
      wait was cancelled is handed on to the next waiter);
    - deleting the session makes its waiters raise :class:`~wingspan.NotFoundError`, and
      closing the store makes every waiter raise :class:`~wingspan.StoreError`.

    Waits are futures of the event loop they run on: use a store built on it from one event
    loop at a time.
    """

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}
        self._waiters: dict[str, collections.deque[_Waiter]] = {}

    def __repr__(self) -> str:
        waiting = sum(len(queue) for queue in self._waiters.values())
        return f"<ClaimQueue held={len(self._holders)} waiting={waiting}>"

    async def claim(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        """Make ``holder`` the holder of ``session_id``'s claim, waiting for its turn if
        ``wait`` (up to ``timeout`` seconds; ``None``: forever).

        :returns: whether the claim was granted.
        :raises NotFoundError: when the session is deleted while waiting.
        :raises StoreError: when the queue is closed while waiting.
        """
        current = self._holders.get(session_id)
        if current == holder or (current is None and not self._waiters.get(session_id)):
            self._holders[session_id] = holder
            return True
        if not wait:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(session_id, collections.deque())
        entry = (holder, future)
        queue.append(entry)
        try:
            # shield: a timeout must not cancel the future a release may be completing.
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if future.done():  # granted (or ended) just as the wait ran out
                future.result()
                return True
            self._leave(session_id, entry)
            return False
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(session_id, holder)  # it was granted: hand it on
            else:
                self._leave(session_id, entry)
            raise
        return True

    def release(self, session_id: str, holder: str) -> None:
        """Give the claim up, granting it to the first waiter; a no-op if ``holder`` does
        not hold it."""
        if self._holders.get(session_id) != holder:
            return
        queue = self._waiters.get(session_id)
        while queue:
            waiter, future = queue.popleft()
            if not future.done():
                self._holders[session_id] = waiter
                future.set_result(None)
                break
        else:
            del self._holders[session_id]
        if not queue:
            self._waiters.pop(session_id, None)

    def delete_session(self, session_id: str) -> None:
        """Forget a deleted session: its claim goes, and its waiters raise
        :class:`~wingspan.NotFoundError`."""
        self._holders.pop(session_id, None)
        self._end(self._waiters.pop(session_id, ()), NotFoundError,
                  f"session {session_id!r} was deleted while waiting for its claim")

    def close(self) -> None:
        """Drop every claim; every waiter raises :class:`~wingspan.StoreError`."""
        self._holders.clear()
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            self._end(queue, StoreError, "the store was closed while waiting for a claim")

    def _leave(self, session_id: str, entry: _Waiter) -> None:
        queue = self._waiters.get(session_id)
        if queue is not None and entry in queue:
            queue.remove(entry)
            if not queue:
                del self._waiters[session_id]

    @staticmethod
    def _end(
        queue: collections.deque[_Waiter] | tuple[()], error: type[Exception], message: str
    ) -> None:
        for _, future in queue:
            if not future.done():
                future.set_exception(error(message))


def paginate(records: Mapping[str, T], limit: int, cursor: str | None) -> Page[T]:
    """One page of a listing of ``records`` (id -> record): newest first, as
    :meth:`Store.list_sessions` and :meth:`Store.list_agents` are.

    Ids are ULIDs (:func:`wingspan.new_id`), so sorting them sorts by creation time. The
    cursor is the last id shown: records added meanwhile never shift or repeat a later page.

    :param limit: at most this many records, from 1 to :data:`MAX_PAGE`.
    :param cursor: the ``next_cursor`` of the page before, ``None`` for the first page.
    :raises ConfigError: for a ``limit`` out of range.
    """
    shown, next_cursor = _page_ids(records, limit, cursor)
    return Page(items=tuple(records[i] for i in shown), next_cursor=next_cursor)


def _page_ids(ids: Iterable[str], limit: int, cursor: str | None) -> tuple[list[str], str | None]:
    """The ids one page shows, and its ``next_cursor``."""
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    older = sorted((i for i in ids if cursor is None or i < cursor), reverse=True)
    shown = older[:limit]
    return shown, shown[-1] if len(older) > limit else None


_KINDS = {"agents": "agent", "sessions": "session", "runs": "run"}


class KeyValueStore:
    """A whole :class:`~wingspan.Store` for one process, on four methods a subclass writes.

    The subclass keeps values by table and key, where it likes (dicts, files...):

    - :meth:`read` ``(table, key)``: the value, or ``None`` when there is none;
    - :meth:`write` ``(table, key, value)``: insert or replace it, all or nothing;
    - :meth:`remove` ``(table, key)``: delete it (nothing to delete is no error);
    - :meth:`keys` ``(table)``: every key of the table.

    The tables (:attr:`TABLES` gives each one's value type, to read back what a subclass
    serialised with :mod:`wingspan.wire`): ``agents`` (:class:`~wingspan.AgentRecord` by id),
    ``sessions`` (:class:`~wingspan.SessionRecord` by id, stored with ``message_count`` 0),
    ``messages`` (a session's history, a list of :class:`~wingspan.Message`, by session id),
    ``runs`` (:class:`~wingspan.RunRecord` by id) and ``credentials``
    (:class:`~wingspan.Credential` by provider name; keys are written as they are).

    The base does the rest of the contract: ids that exist or not, message counts, cascading
    deletes, newest-first pages (:func:`paginate`), claims (:class:`ClaimQueue`) and the closed
    state. The four methods are synchronous and each store call makes its reads and writes
    without awaiting in between, so the calls of one event loop never interleave. Keys and
    values are whatever the callers give: a subclass that turns keys into file names must
    encode them. Override :meth:`append` to add to a history without rewriting it, and
    :meth:`close` (calling ``super().close()``) to release resources.
    """

    #: Each table's value type.
    TABLES: ClassVar[Mapping[str, Any]] = {
        "agents": AgentRecord,
        "sessions": SessionRecord,
        "messages": list[Message],
        "runs": RunRecord,
        "credentials": Credential,
    }
    #: What the store is called in its errors (``"the memory store is closed"``).
    label: ClassVar[str] = "store"

    def __init__(self) -> None:
        self._claims = ClaimQueue()
        self._closed = False

    # --- what a subclass implements -----------------------------------------------------

    def read(self, table: str, key: str) -> Any:
        """The value kept under ``key`` in ``table``, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(table, key)")

    def write(self, table: str, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` in ``table``, replacing any: all or nothing."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(table, key, value)")

    def remove(self, table: str, key: str) -> None:
        """Delete the value under ``key`` in ``table``, if there is one."""
        raise NotImplementedError(f"{type(self).__name__} must implement remove(table, key)")

    def keys(self, table: str) -> Iterable[str]:
        """Every key of ``table``."""
        raise NotImplementedError(f"{type(self).__name__} must implement keys(table)")

    def append(self, table: str, key: str, values: Sequence[Any]) -> int:
        """Add ``values`` to the list under ``key``, all or nothing; by default, by writing
        the whole new list.

        :returns: the list's length afterwards.
        """
        extended = [*(self.read(table, key) or ()), *values]
        self.write(table, key, extended)
        return len(extended)

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the {self.label} is closed")

    def _get(self, table: str, key: str) -> Any:
        self._check_open()
        value = self.read(table, key)
        if value is None:
            raise NotFoundError(f"{_KINDS[table]} {key!r} not found")
        return value

    def _insert(self, table: str, record: Any) -> None:
        self._check_open()
        if self.read(table, record.id) is not None:
            raise ConflictError(f"{_KINDS[table]} {record.id!r} already exists")
        self.write(table, record.id, record)

    def _page(self, table: str, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
        self._check_open()
        shown, next_cursor = _page_ids(self.keys(table), limit, cursor)
        return [self.read(table, key) for key in shown], next_cursor

    def _counted(self, session: SessionRecord) -> SessionRecord:
        count = len(self.read("messages", session.id) or ())
        return attrs.evolve(session, message_count=count)

    # --- agents ----------------------------------------------------------------------------

    async def create_agent(self, agent: AgentRecord) -> AgentRecord:
        self._insert("agents", agent)
        return agent

    async def get_agent(self, agent_id: str) -> AgentRecord:
        agent: AgentRecord = self._get("agents", agent_id)
        return agent

    async def update_agent(self, agent: AgentRecord) -> AgentRecord:
        self._get("agents", agent.id)
        self.write("agents", agent.id, agent)
        return agent

    async def delete_agent(self, agent_id: str) -> None:
        self._get("agents", agent_id)
        self.remove("agents", agent_id)

    async def list_agents(self, *, limit: int = 50, cursor: str | None = None) -> Page[AgentRecord]:
        agents, next_cursor = self._page("agents", limit, cursor)
        return Page(items=tuple(agents), next_cursor=next_cursor)

    # --- sessions --------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        self._check_open()
        if self.read("sessions", session.id) is not None:
            raise ConflictError(f"session {session.id!r} already exists")
        session = attrs.evolve(session, message_count=0)
        self.write("messages", session.id, [])  # first: a session always has its history
        self.write("sessions", session.id, session)
        return session

    async def get_session(self, session_id: str) -> SessionRecord:
        return self._counted(self._get("sessions", session_id))

    async def update_session(self, session: SessionRecord) -> SessionRecord:
        self._get("sessions", session.id)
        self.write("sessions", session.id, attrs.evolve(session, message_count=0))
        return self._counted(session)

    async def delete_session(self, session_id: str) -> None:
        self._get("sessions", session_id)
        self.remove("sessions", session_id)  # first: what is left behind is unreachable
        self.remove("messages", session_id)
        for run_id in list(self.keys("runs")):
            run = self.read("runs", run_id)
            if run is not None and run.session_id == session_id:
                self.remove("runs", run_id)
        self._claims.delete_session(session_id)

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]:
        sessions, next_cursor = self._page("sessions", limit, cursor)
        return Page(items=tuple(map(self._counted, sessions)), next_cursor=next_cursor)

    # --- history ---------------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        self._get("sessions", session_id)
        for message in messages:
            if not isinstance(message, Message):
                raise TypeError(f"append_messages takes Messages, got {type(message).__name__}")
        return self.append("messages", session_id, tuple(messages))

    async def load_messages(self, session_id: str) -> list[Message]:
        self._get("sessions", session_id)
        return list(self.read("messages", session_id) or ())

    # --- runs ------------------------------------------------------------------------------

    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        self._get("sessions", session_id)
        return await self._claims.claim(session_id, holder, wait=wait, timeout=timeout)

    async def release_session(self, session_id: str, holder: str) -> None:
        self._check_open()
        self._claims.release(session_id, holder)

    async def save_run(self, run: RunRecord) -> None:
        self._get("sessions", run.session_id)
        self.write("runs", run.id, run)

    async def get_run(self, run_id: str) -> RunRecord:
        run: RunRecord = self._get("runs", run_id)
        return run

    # --- credentials -----------------------------------------------------------------------

    async def set_credential(self, provider: str, credential: Credential) -> None:
        self._check_open()
        self.write("credentials", provider, credential)

    async def get_credential(self, provider: str) -> Credential | None:
        self._check_open()
        credential: Credential | None = self.read("credentials", provider)
        return credential

    async def delete_credential(self, provider: str) -> bool:
        self._check_open()
        if self.read("credentials", provider) is None:
            return False
        self.remove("credentials", provider)
        return True

    async def list_credentials(self) -> dict[str, str]:
        self._check_open()
        listed = {}
        for provider in sorted(self.keys("credentials")):
            credential = self.read("credentials", provider)
            if credential is not None:
                listed[provider] = credential.type
        return listed

    async def close(self) -> None:
        """Close the store: every later call raises :class:`~wingspan.StoreError`, and
        waiting claims end with it. Idempotent."""
        self._closed = True
        self._claims.close()
