"""Stores: the protocol every persistence back-end implements, and the records it keeps.

A store keeps agents, sessions, message history (append-only, ordered), run records, the
leases that serialise runs on a session, and provider credentials. It is opened from a URL
by the plugin claiming the URL's scheme: ``await wingspan.open_store("sqlite:///path")``.
Helpers for writing one (:class:`~wingspan.KeyValueStore`, :class:`~wingspan.ClaimQueue`,
:func:`~wingspan.paginate`) are in :mod:`wingspan.storekit`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs

from .types import Message, Usage

__all__ = [
    "AgentRecord",
    "Credential",
    "Page",
    "RunRecord",
    "RunStatus",
    "SessionRecord",
    "Store",
    "StoreSpec",
    "utc_now",
]

T = TypeVar("T")
RunStatus: TypeAlias = Literal["running", "completed", "failed", "aborted", "interrupted"]


def utc_now() -> datetime:
    """Now, in UTC, to the millisecond (the precision of the wire format)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@attrs.frozen(kw_only=True)
class AgentRecord:
    """A stored agent definition; :meth:`wingspan.Agent.from_record` makes it runnable."""

    id: str
    name: str
    instructions: str = ""
    tools: tuple[str, ...] = ()
    provider: str = "test"
    model: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    output_schema: Mapping[str, Any] | None = None
    max_steps: int = 50
    created_at: datetime = attrs.field(factory=utc_now)
    updated_at: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class SessionRecord:
    """A stored session, without its history. ``message_count`` is kept by the store."""

    id: str
    title: str = ""
    work_dir: str | None = None
    created_at: datetime = attrs.field(factory=utc_now)
    updated_at: datetime = attrs.field(factory=utc_now)
    message_count: int = 0


@attrs.frozen(kw_only=True)
class RunRecord:
    """One run of an agent on a session."""

    id: str
    session_id: str
    agent_id: str | None = None
    status: RunStatus = "running"
    started_at: datetime = attrs.field(factory=utc_now)
    finished_at: datetime | None = None
    steps: int = 0
    usage: Usage = Usage()  # noqa: RUF009 (frozen, so sharing one default is safe)
    stop_reason: str | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class Credential:
    """A provider credential. Its ``repr`` never shows the key.

    :ivar type: what kind of credential ``key`` is (``"api_key"``).
    :ivar key: the secret itself.
    :ivar base_url: the endpoint the key may be sent to, when that is not the provider's
        official one (a proxy, a self-hosted server); ``None``: the provider's own.
    """

    type: str = "api_key"
    key: str = attrs.field(repr=False)
    base_url: str | None = None


@attrs.frozen(kw_only=True)
class Page(Generic[T]):
    """One page of a listing, newest first. Pass ``next_cursor`` to get the next page;
    it is ``None`` on the last page."""

    items: tuple[T, ...]
    next_cursor: str | None = None


@runtime_checkable
class Store(Protocol):
    """The persistence contract, checked by ``wingspan.testing.StoreStateMachine``.

    Every method is async. Lookups, updates and deletes of a missing id raise
    :class:`~wingspan.NotFoundError`; creating an id that exists raises
    :class:`~wingspan.ConflictError`; any call on a closed store raises
    :class:`~wingspan.StoreError`. Listings are newest first (ids are ULIDs, so id order is
    creation order); a page's ``next_cursor`` is the last id it shows.
    """

    # agents
    async def create_agent(self, agent: AgentRecord) -> AgentRecord: ...
    async def get_agent(self, agent_id: str) -> AgentRecord: ...
    async def update_agent(self, agent: AgentRecord) -> AgentRecord: ...
    async def delete_agent(self, agent_id: str) -> None: ...
    async def list_agents(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[AgentRecord]: ...

    # sessions
    async def create_session(self, session: SessionRecord) -> SessionRecord: ...
    async def get_session(self, session_id: str) -> SessionRecord: ...
    async def update_session(self, session: SessionRecord) -> SessionRecord: ...
    async def delete_session(self, session_id: str) -> None:
        """Delete a session with its messages and runs."""
    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SessionRecord]: ...

    # history
    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        """Append ``messages`` atomically (all or none), after the existing ones.

        :returns: the session's message count afterwards.
        """
    async def load_messages(self, session_id: str) -> list[Message]:
        """The whole history, in order."""

    # runs and their serialisation
    async def claim_session(
        self, session_id: str, holder: str, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        """Become the one holder allowed to run on ``session_id``.

        With ``wait`` the call waits its turn (first come, first served) up to ``timeout``
        seconds (``None``: forever). :returns: whether the claim was granted.

        A store that serves several processes recovers a claim whose holder died: it marks
        that run ``interrupted`` and appends the repair of the history
        (:func:`wingspan.repair_history`) before granting the claim. It records the process
        behind each claim (:class:`wingspan.procs.ProcessIdentity`), so a claimant on the
        same host that finds that process gone (killed, even with ``SIGKILL``, or crashed)
        recovers the claim at once, waiting or not; a claim of another host, or one whose
        process cannot be judged, is recovered once its lease expires. A store may also
        recover, when it is opened, the claims that ended processes of its host left.
        """
    async def release_session(self, session_id: str, holder: str) -> None:
        """Give the claim up (a no-op if ``holder`` does not hold it).

        A release is not refused for want of a write: a store that cannot write it now (a
        full disk) stops renewing the claim and writes the release, with the recovery a
        dead holder gets if the run's end was not recorded, as soon as it can write again;
        other processes get the session once the claim expires at the latest.
        """
    async def save_run(self, run: RunRecord) -> None:
        """Insert or replace a run record."""
    async def get_run(self, run_id: str) -> RunRecord: ...

    # credentials
    async def set_credential(self, provider: str, credential: Credential) -> None:
        """Store ``credential`` (key, type and ``base_url``) for ``provider``, replacing any."""
    async def get_credential(self, provider: str) -> Credential | None:
        """The credential stored for ``provider`` (``None``: none is).

        :raises StoreError: when it is stored encrypted and cannot be decrypted (no secret
            key, or another one, is configured); the message says which key to set.
        """
    async def delete_credential(self, provider: str) -> bool:
        """:returns: whether a credential was stored."""
    async def list_credentials(self) -> dict[str, str]:
        """Provider name -> credential type; never the keys."""

    async def close(self) -> None:
        """Release the store's resources. Idempotent."""


@attrs.frozen(kw_only=True)
class StoreSpec:
    """What a plugin registers for a store back-end.

    :ivar scheme: the URL scheme it claims (``"sqlite"``), unique across plugins.
    :ivar open: opens a store from a URL and the runtime's store settings.
    """

    scheme: str
    open: Callable[[str, Mapping[str, Any]], Awaitable[Store]]
    description: str = ""
