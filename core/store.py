"""Stores: the protocol every persistence back-end implements, and the records it keeps.

A store keeps agents, sessions, message history (append-only, ordered), run records, the
leases that serialise runs on a session, the idempotency keys of creations, and provider
credentials. It is opened from a URL by the plugin claiming the URL's scheme:
``await wingspan.open_store("sqlite:///path")``. Helpers for writing one
(:class:`~wingspan.KeyValueStore`, :class:`~wingspan.ClaimQueue`, :func:`~wingspan.paginate`)
are in :mod:`wingspan.storekit`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs

from .types import (
    LogEvent,
    LoggedEvent,
    Message,
    PermissionDecision,
    PermissionRequest,
    ResolvedBy,
    Rule,
    RunStatus,
    Usage,
)

__all__ = [
    "Admission",
    "AgentRecord",
    "Credential",
    "IfBusy",
    "Page",
    "RunRecord",
    "RunStatus",
    "SessionRecord",
    "Store",
    "StoreSpec",
    "utc_now",
]

T = TypeVar("T")
#: What admitting a run does when its session is busy (a run queued, running or waiting):
#: wait its turn, be refused (:class:`~wingspan.ConflictError`), or abort the runs ahead.
IfBusy: TypeAlias = Literal["queue", "reject", "interrupt"]


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
    #: Rules for the agent's tool calls (:class:`~wingspan.Rule`), after the server's.
    permissions: tuple[Rule, ...] = ()
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
    #: The seq of the session's latest event (0: none yet), kept by the store.
    last_seq: int = 0


@attrs.frozen(kw_only=True)
class RunRecord:
    """One run of an agent on a session.

    :ivar status: see :data:`wingspan.RunStatus`.
    :ivar created_at: when it was admitted.
    :ivar started_at: when it got its turn (``None`` while queued).
    :ivar idempotency_key: the client's key for its admission, if it gave one (a repeat
        with the same key is this run again, not a new one).
    :ivar request_hash: a digest of what was asked, to tell a repeat from a reuse of the key.
    :ivar first_seq: the seq of its first event in the session's log (``run_queued``).
    :ivar last_seq: the seq of its last event so far (``run_finished`` once it ended).
    :ivar abort_requested: an abort was asked for while it ran; the process running it
        stops it (and records it ``aborted``).
    """

    id: str
    session_id: str
    agent_id: str | None = None
    status: RunStatus = "running"
    created_at: datetime = attrs.field(factory=utc_now)
    started_at: datetime | None = attrs.field(factory=utc_now)
    finished_at: datetime | None = None
    steps: int = 0
    usage: Usage = Usage()  # noqa: RUF009 (frozen, so sharing one default is safe)
    stop_reason: str | None = None
    error: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    abort_requested: bool = False


@attrs.frozen(kw_only=True)
class Admission:
    """What :meth:`Store.admit_run` did: ``run`` as stored, whether it is new (``False``: a
    repeat of an idempotency key, so ``run`` is the first admission's run), and whether it
    holds the session's claim already (the session was free and nobody in line: its turn
    is now, and :meth:`Store.claim_session` for it can be skipped)."""

    run: RunRecord
    created: bool = True
    claimed: bool = False
    #: Whether the run started with its admission (``start`` given, its turn now, the
    #: history as long as the caller said): ``run`` is then ``running``.
    started: bool = False


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

    # runs: admission, lifecycle and listing
    async def admit_run(
        self, run: RunRecord, *, if_busy: IfBusy = "queue",
        start: Sequence[Message] | None = None, history_length: int | None = None,
    ) -> Admission:
        """Admit ``run`` (status ``queued``) to its session, atomically: the record is
        stored, the run takes its place in the session's claim queue (holder ``run.id``:
        claims are granted in admission order, whichever process admitted), and a
        :class:`~wingspan.RunQueued` event is appended to the log (``first_seq`` and
        ``last_seq`` are its seq).

        - ``run.idempotency_key`` already used by a run of the session: with the same
          ``request_hash``, nothing is done and that run is answered (``created=False``);
          with another, :class:`~wingspan.ConflictError` naming the key.
        - ``if_busy="reject"`` and the session has a run queued, running or waiting:
          :class:`~wingspan.ConflictError`.
        - ``if_busy="interrupt"``: every unfinished run of the session is aborted as by
          :meth:`abort_run`, then this one is admitted.

        With ``start`` (the messages :meth:`start_run` would append: the run's user
        message, after any repair of the history), a run whose turn is now (``claimed``)
        also starts in the same transaction, as :meth:`start_run` with ``start`` would —
        its :class:`~wingspan.RunStarted` logged after its ``run_queued``, the messages
        appended — provided the session's history holds exactly ``history_length``
        messages (the caller's copy of it is current): one write where there would be two.
        ``started`` says whether it did; if not, ``start`` is ignored and the run is
        started later with :meth:`start_run`.

        The place in the queue is kept while this store is open; a process that dies
        leaves its queued runs to be recorded ``interrupted`` by whoever notices. Whoever
        admits a run then claims its place (:meth:`claim_session` with holder ``run.id``) or
        gives it up (:meth:`release_session`), so that it never holds up the queue.

        :raises NotFoundError: when the session does not exist.
        """
    async def start_run(self, run_id: str, messages: Sequence[Message] = ()) -> RunRecord:
        """Mark a queued run ``running`` (``started_at`` now), append its
        :class:`~wingspan.RunStarted`, and append ``messages`` (its user message) to the
        session's history, atomically; called by the holder of its session's claim.

        :raises ConflictError: when the run is no longer queued (aborted meanwhile); then
            nothing is written.
        """
    async def finish_run(
        self, run: RunRecord, events: Sequence[LogEvent] = (),
        messages: Sequence[Message] = (),
    ) -> RunRecord:
        """End a run, atomically: append ``messages`` to the session's history (its last
        turn, which nothing needed stored before its end), ``events`` (its last events, e.g.
        the terminal ``done`` or ``error``) and a :class:`~wingspan.RunFinished` with
        ``run.status`` to its log, store ``run`` (a finished status, its ``finished_at``)
        with ``last_seq`` set to the seq of that ``run_finished``, and give up the session's
        claim (or place in line) held by ``run.id``, as :meth:`release_session` does. A run
        that had finished already is left as stored (nothing is appended: compare the
        status answered with ``run.status``), and its claim is given up all the same.

        :returns: the run as stored.
        """
    async def abort_run(self, run_id: str) -> RunRecord:
        """Abort a run from any process. A queued run is finished ``aborted`` at once (with
        an ``error`` event of code ``aborted`` and its ``run_finished``); a running or
        waiting one gets ``abort_requested``, and the process running it stops it; a waiting
        one that no process executes (see :meth:`adopt_run`) is finished ``aborted`` at
        once, its history repaired.

        :returns: the run as stored after the request.
        :raises ConflictError: when the run has already finished.
        :raises NotFoundError: when there is no such run.
        """
    async def list_runs(
        self, session_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[RunRecord]:
        """The session's runs, newest first. :raises NotFoundError: unknown session."""

    # the event log
    async def append_events(
        self, session_id: str, run_id: str, events: Sequence[LogEvent],
        messages: Sequence[Message] = (),
    ) -> int:
        """Append ``events`` of run ``run_id`` to the session's log, numbered on from the
        session's ``last_seq`` with no gap, and ``messages`` to its history (a step's last
        events go with the message that step made), atomically; wake those waiting on the
        session (:meth:`wait_events`), in this process and others. :returns: the session's
        ``last_seq`` afterwards.
        """
    async def read_events(
        self, session_id: str, *, after: int = 0, limit: int = 1000,
        run_id: str | None = None,
    ) -> list[LoggedEvent]:
        """Up to ``limit`` retained events with a seq above ``after``, oldest first (only
        ``run_id``'s, when given). Seqs are numbered without gaps, so a jump in them is
        a pruned range (:meth:`prune_events`).
        """
    async def wait_events(self, session_id: str, *, after: int, timeout: float) -> int:
        """Wait until the session's log has an event with a seq above ``after``
        (appended by this process or another sharing the store), or ``timeout`` seconds
        pass. :returns: the session's ``last_seq`` then.

        :raises NotFoundError: when the session does not exist or is deleted meanwhile.
        :raises StoreError: when the store is closed meanwhile.
        """
    async def prune_events(self, *, before: datetime) -> int:
        """Drop the deltas (``text_delta``, ``input_json_delta``) and ``ping`` s of runs that
        finished before ``before``; every other event is kept as long as its session.
        :returns: how many were dropped.
        """

    # permission requests and the session's grants
    async def add_permission_request(self, request: PermissionRequest) -> PermissionRequest:
        """Store a pending request of a running (or waiting) run, and mark the run
        ``waiting``, atomically.

        :raises NotFoundError: when its run does not exist.
        :raises ConflictError: when its id is taken, or its run is queued or has finished.
        """
    async def resolve_permission_request(
        self, request_id: str, *, decision: PermissionDecision, by: ResolvedBy,
        message: str | None = None, grant: Rule | None = None,
    ) -> PermissionRequest:
        """Answer a pending request, atomically: its status becomes ``allowed`` (``allow``,
        ``allow_always``) or ``denied``, with ``decision``, ``by``, ``message`` and
        ``resolved_at`` now; ``grant`` (with ``allow_always``) is added to its session's
        grants; its run, ``waiting``, becomes ``running`` again once no other request of
        it is pending. Of concurrent answers, in any process, exactly one wins.

        :returns: the request as stored.
        :raises NotFoundError: when there is no such request.
        :raises ConflictError: when it was resolved already.
        """
    async def get_permission_request(self, request_id: str) -> PermissionRequest:
        """:raises NotFoundError: when there is no such request."""
    async def list_permission_requests(
        self, session_id: str, *, pending_only: bool = True
    ) -> list[PermissionRequest]:
        """The session's requests (only the pending ones by default), oldest first.

        :raises NotFoundError: when the session does not exist.
        """
    async def adopt_run(self, run_id: str) -> RunRecord | None:
        """Take over a run that no process executes any more: one whose process ended
        while it waited for a permission answer (a store that serves several processes
        keeps such a run's claim, parked, until its requests expire). The caller's process
        then holds the session's claim under the run's id, and must execute the run
        (:meth:`wingspan.Session.reenter`), which continues from the stored history.

        :returns: the run, or ``None`` when a live process executes it or it has finished
            (a store serving one process only always answers ``None``).
        :raises NotFoundError: when there is no such run.
        """
    async def list_grants(self, session_id: str) -> list[Rule]:
        """The session's grants (rules made by ``allow_always`` answers), oldest first.

        :raises NotFoundError: when the session does not exist.
        """

    # idempotency keys of creations
    async def reserve_key(self, scope: str, key: str, request_hash: str, new_id: str) -> str:
        """The id an idempotent creation must use: ``new_id`` the first time ``key`` is seen
        in ``scope`` (it is remembered with ``request_hash`` from then on), the first call's
        id on a repeat with the same ``request_hash``. Atomic across the processes sharing
        the store: of concurrent first calls, one id wins and every call answers it.

        The key only names an id; the caller creates the record with it (a
        :class:`~wingspan.ConflictError` from that create means the record exists: a repeat).

        :param scope: what the key is for (``"sessions"``, ``"agents"``): scopes never share
            keys.
        :raises ConflictError: naming the key, when it was reserved with another
            ``request_hash``.
        """
    async def prune_keys(self, *, before: datetime) -> int:
        """Forget the keys reserved before ``before`` (a repeat of one is then a new
        creation). :returns: how many were dropped."""

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
