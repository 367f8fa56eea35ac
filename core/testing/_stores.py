"""The store contract suite: a hypothesis state machine driving a store against a model."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.from_thread
import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from ..errors import ConfigError, ConflictError, NotFoundError, StoreError
from ..ids import new_id
from ..store import (
    Admission,
    AgentRecord,
    Credential,
    Page,
    RunRecord,
    SessionRecord,
    Store,
    utc_now,
)
from ..storekit import MAX_PAGE
from ..types import (
    FINISHED_STATUSES,
    ErrorEvent,
    ErrorInfo,
    InputJsonDelta,
    LogEvent,
    LoggedEvent,
    Message,
    MessageStart,
    PermissionDecision,
    PermissionRequest,
    Ping,
    ResolvedBy,
    Rule,
    RunFinished,
    RunQueued,
    RunStarted,
    TextBlock,
    TextDelta,
    ToolResultBlock,
    ToolResultEvent,
    ToolUseBlock,
    Usage,
)

__all__ = ["StoreStateMachine", "store_state_machine"]

_names = st.text(st.characters(codec="utf-8"), max_size=20)
_texts = st.text(max_size=40)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _texts
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)


_log_events = st.lists(
    st.builds(TextDelta, text=_texts, index=st.integers(0, 3))
    | st.builds(InputJsonDelta, partial_json=_texts, index=st.integers(0, 3))
    | st.just(Ping())
    | st.builds(MessageStart, step=st.integers(0, 5))
    | st.builds(ToolResultEvent, tool_use_id=st.just("toolu_1"), tool_name=_names,
                content=_texts, is_error=st.booleans())
    | st.builds(ErrorEvent, error=st.builds(ErrorInfo, code=st.just("provider_error"),
                                            message=_texts)),
    max_size=4,
)
#: The event types prune_events drops once their run has finished.
_PRUNABLE = {"text_delta", "input_json_delta", "ping"}
#: How long before now a run record's ``finished_at`` is.
_ages = st.sampled_from([timedelta(hours=h) for h in (0, 1, 30)])
#: Claimants that are not admitted runs.
_claimants = ["run-a", "run-b", "run-c"]
_if_busy = st.sampled_from(["queue", "reject", "interrupt"])
#: Where a pruning cutoff is from when a run finished: just before, at or just after.
_shifts = st.sampled_from([timedelta(milliseconds=ms) for ms in (-1, 0, 1)])
#: What idempotency keys of creations are for, and keys (the longest the HTTP API takes too).
_key_scopes = st.sampled_from(["sessions", "agents"])
_keys = st.sampled_from(["k1", "~" * 255])
_request_hashes = st.sampled_from(["h1", "h2"])
#: What a permission request asks about, and how it is answered (a few values: every rule
#: draws them, and texts and JSON round-trip in the history already).
_tool_names = st.sampled_from(["bash", "read", "add"])
_subjects = st.sampled_from(["ls -la", "", "git push --force", "src/*.py", "naïve ☃ 🐍"])
_inputs = st.dictionaries(st.sampled_from(["command", "path", "ü"]), _json_scalars, max_size=2)
_decisions = st.sampled_from(["allow", "allow_always", "deny"])
_resolvers = st.sampled_from(["user", "rule", "timeout"])
_grant_patterns = st.sampled_from(["*", "git *", "src/[*]?.py"])


@attrs.frozen
class _Reserved:
    """An idempotency key as the model knows it: what it was reserved with, and when (the
    store's own clock, read between ``earliest`` and ``latest``)."""

    request_hash: str
    id: str
    earliest: datetime
    latest: datetime


@st.composite
def _messages(draw: st.DrawFn) -> list[Message]:
    """A short valid exchange: user text, maybe tool calls with their results."""
    messages = [Message(role="user", content=(TextBlock(text=draw(_texts)),))]
    calls = draw(st.integers(0, 2))
    if calls:
        ids = [f"toolu_{new_id()}" for _ in range(calls)]
        uses = tuple(
            ToolUseBlock(id=i, name=draw(st.sampled_from(["bash", "read", "add"])),
                         input=draw(st.dictionaries(_texts, _json, max_size=3)))
            for i in ids
        )
        messages.append(Message(role="assistant", content=uses))
        messages.append(
            Message(
                role="user",
                content=tuple(
                    ToolResultBlock(
                        tool_use_id=i, content=draw(_texts), is_error=draw(st.booleans())
                    )
                    for i in ids
                ),
            )
        )
    messages.append(Message(role="assistant", content=(TextBlock(text=draw(_texts)),)))
    return messages


class StoreStateMachine(RuleBasedStateMachine):
    """Drives a store through creates, updates, deletes, appends, claims, run admissions
    and lifecycles, permission requests and grants, the event log, listings and
    credentials, checking every answer against a model.

    Subclass it with :func:`store_state_machine`; rules are synchronous and run the store's
    coroutines on an event loop in a helper thread (an anyio blocking portal).
    """

    #: An async callable returning a fresh, empty store (set by :func:`store_state_machine`).
    open_store: Callable[[], Awaitable[Store]]

    agents = Bundle("agents")
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self._exit = contextlib.ExitStack()
        self.portal = self._exit.enter_context(anyio.from_thread.start_blocking_portal())
        self.store: Store = self.portal.call(type(self).open_store)
        self.model_agents: dict[str, AgentRecord] = {}
        #: Each session as stored, with its ``last_seq`` (``message_count`` is counted).
        self.model_sessions: dict[str, SessionRecord] = {}
        self.model_messages: dict[str, list[Message]] = {}
        self.model_events: dict[str, list[LoggedEvent]] = {}
        self.model_holders: dict[str, str] = {}
        #: Per session, the admitted runs whose claim has not been granted, in line.
        self.model_places: dict[str, list[str]] = {}
        self.model_runs: dict[str, RunRecord] = {}
        self.model_credentials: dict[str, Credential] = {}
        self.model_keys: dict[tuple[str, str], _Reserved] = {}
        #: Every permission request stored, by id; each session's grants, in order.
        self.model_requests: dict[str, PermissionRequest] = {}
        self.model_grants: dict[str, list[Rule]] = {}
        #: The runs ``save_run`` stored ``waiting`` with no request (the only waiting runs
        #: with none pending), until one is added.
        self.model_saved_waiting: set[str] = set()

    def call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: method(*args, **kwargs))

    def teardown(self) -> None:
        try:
            self.call(self.store.close)
            try:
                self.call(self.store.list_sessions)
            except StoreError:
                pass
            else:
                raise AssertionError("a closed store should raise StoreError")
        finally:
            self._exit.close()

    # --- agents -----------------------------------------------------------------------------

    @rule(target=agents, name=_names, instructions=_texts, tools=st.lists(_names, max_size=3),
          max_steps=st.integers(1, 500), options=st.dictionaries(_texts, _json, max_size=3))
    def create_agent(
        self, name: str, instructions: str, tools: list[str], max_steps: int,
        options: dict[str, Any],
    ) -> str:
        record = AgentRecord(id=new_id(), name=name, instructions=instructions,
                             tools=tuple(tools), max_steps=max_steps, options=options)
        assert self.call(self.store.create_agent, record) == record
        self.model_agents[record.id] = record
        return record.id

    @precondition(lambda self: bool(self.model_agents) or bool(self.model_sessions))
    @rule(data=st.data())
    def create_duplicate(self, data: st.DataObject) -> None:
        kinds = [k for k, model in (("agent", self.model_agents),
                                    ("session", self.model_sessions)) if model]
        kind = data.draw(st.sampled_from(kinds))
        record: Any
        method: Callable[[Any], Awaitable[Any]]
        if kind == "agent":
            record = self.model_agents[data.draw(st.sampled_from(sorted(self.model_agents)))]
            method = self.store.create_agent
        else:
            record = self.model_sessions[data.draw(st.sampled_from(sorted(self.model_sessions)))]
            method = self.store.create_session
        try:
            self.call(method, record)
        except ConflictError:
            return
        raise AssertionError(f"creating {kind} {record.id} twice should raise ConflictError")

    @rule(agent_id=agents, name=_names, model=st.none() | _names)
    def update_agent(self, agent_id: str, name: str, model: str | None) -> None:
        if agent_id not in self.model_agents:
            return
        record = attrs.evolve(self.model_agents[agent_id], name=name, model=model)
        self.call(self.store.update_agent, record)
        self.model_agents[agent_id] = record

    @rule(agent_id=agents)
    def get_agent(self, agent_id: str) -> None:
        expected = self.model_agents.get(agent_id)
        if expected is None:
            self._assert_missing(self.store.get_agent, agent_id)
        else:
            assert self.call(self.store.get_agent, agent_id) == expected

    @rule(agent_id=consumes(agents))
    def delete_agent(self, agent_id: str) -> None:
        record = self.model_agents.pop(agent_id, None)
        if record is not None:
            self.call(self.store.delete_agent, agent_id)
            self._assert_missing(self.store.update_agent, record)
        self._assert_missing(self.store.get_agent, agent_id)
        self._assert_missing(self.store.delete_agent, agent_id)

    # --- sessions ---------------------------------------------------------------------------

    @initialize(target=sessions, title=_names, work_dir=st.none() | st.just("/tmp"),
                count=st.integers(0, 3), last_seq=st.integers(0, 3))
    def first_session(self, title: str, work_dir: str | None, count: int, last_seq: int) -> str:
        """Every run of the machine has a session to admit runs to from its first step."""
        return self._create_session(title, work_dir, count, last_seq)

    @rule(target=sessions, title=_names, work_dir=st.none() | st.just("/tmp"),
          count=st.integers(0, 3), last_seq=st.integers(0, 3))
    def create_session(self, title: str, work_dir: str | None, count: int, last_seq: int) -> str:
        """The counts passed are the store's to keep: it starts them at 0."""
        return self._create_session(title, work_dir, count, last_seq)

    def _create_session(self, title: str, work_dir: str | None, count: int, last_seq: int) -> str:
        record = SessionRecord(id=new_id(), title=title, work_dir=work_dir,
                               message_count=count, last_seq=last_seq)
        created = self.call(self.store.create_session, record)
        record = attrs.evolve(record, message_count=0, last_seq=0)
        assert created == record, (created, record)
        self.model_sessions[record.id] = record
        self.model_messages[record.id] = []
        self.model_events[record.id] = []
        return record.id

    @rule(session_id=sessions, title=_names, last_seq=st.integers(0, 3))
    def update_session(self, session_id: str, title: str, last_seq: int) -> None:
        """An update keeps the session's ``last_seq``, whatever it is given."""
        if session_id not in self.model_sessions:
            return
        record = attrs.evolve(self.model_sessions[session_id], title=title)
        updated = self.call(self.store.update_session, attrs.evolve(record, last_seq=last_seq))
        assert updated.title == title
        self.model_sessions[session_id] = record

    @rule(session_id=sessions)
    def get_session(self, session_id: str) -> None:
        expected = self.model_sessions.get(session_id)
        if expected is None:
            self._assert_missing(self.store.get_session, session_id)
            return
        got = self.call(self.store.get_session, session_id)
        assert got == attrs.evolve(expected, message_count=len(self.model_messages[session_id]))

    @rule(session_id=consumes(sessions), again=st.booleans())
    def delete_session(self, session_id: str, again: bool) -> None:
        """Everything of the session goes with it: made again with its id, it is empty."""
        record = self.model_sessions.pop(session_id, None)
        if record is not None:
            self.call(self.store.delete_session, session_id)
            del self.model_messages[session_id]
            del self.model_events[session_id]
            self.model_holders.pop(session_id, None)
            self.model_places.pop(session_id, None)
            runs = [k for k, r in self.model_runs.items() if r.session_id == session_id]
            for run_id in runs:  # deleted with their session
                del self.model_runs[run_id]
                self.model_saved_waiting.discard(run_id)
                self._assert_missing(self.store.get_run, run_id)
            if runs:
                self._assert_missing(self.store.abort_run, runs[0])
                self._assert_missing(self.store.start_run, runs[0])
                self._assert_missing(self.store.add_permission_request, self._request(
                    RunRecord(id=runs[0], session_id=session_id)))
            asked = self._requests_of(session_id)
            for request in asked:  # and its permission requests, pending or not
                del self.model_requests[request.id]
                self._assert_missing(self.store.get_permission_request, request.id)
            if asked:
                self._assert_missing(self.store.resolve_permission_request, asked[-1].id,
                                     decision="allow", by="user")
            self.model_grants.pop(session_id, None)
            self._assert_missing(self.store.update_session, record)
            self._assert_missing(self.store.save_run, RunRecord(id=new_id(), session_id=session_id))
        self._assert_missing(self.store.get_session, session_id)
        self._assert_missing(self.store.load_messages, session_id)
        self._assert_missing(self.store.append_messages, session_id, [])
        self._assert_missing(self.store.admit_run, self._queued(session_id))
        self._assert_missing(self.store.list_runs, session_id)
        self._assert_missing(self.store.append_events, session_id, "run", [Ping()])
        self._assert_missing(self.store.read_events, session_id)
        self._assert_missing(self.store.wait_events, session_id, after=0, timeout=0)
        self._assert_missing(self.store.list_permission_requests, session_id)
        self._assert_missing(self.store.list_permission_requests, session_id,
                             pending_only=False)
        self._assert_missing(self.store.list_grants, session_id)
        if record is not None and again:
            self.call(self.store.create_session, SessionRecord(id=session_id))
            assert self.call(self.store.load_messages, session_id) == []
            assert self.call(self.store.read_events, session_id) == []
            assert self.call(self.store.list_runs, session_id) == Page(items=())
            assert self.call(self.store.get_session, session_id).last_seq == 0
            assert self.call(self.store.list_permission_requests, session_id,
                             pending_only=False) == []
            assert self.call(self.store.list_grants, session_id) == []
            self.call(self.store.delete_session, session_id)

    # --- history ----------------------------------------------------------------------------

    @rule(session_id=sessions, messages=_messages())
    def append_messages(self, session_id: str, messages: list[Message]) -> None:
        if session_id not in self.model_sessions:
            return
        count = self.call(self.store.append_messages, session_id, messages)
        self.model_messages[session_id].extend(messages)
        assert count == len(self.model_messages[session_id])

    @rule(session_id=sessions)
    def load_messages(self, session_id: str) -> None:
        if session_id in self.model_sessions:
            assert self.call(self.store.load_messages, session_id) == self.model_messages[
                session_id
            ]

    # --- claims -----------------------------------------------------------------------------

    @rule(session_id=sessions, data=st.data())
    def claim_session(self, session_id: str, data: st.DataObject) -> None:
        """Without waiting: granted to the holder, or when the session is free and no
        admitted run is in line before the claimant (an admitted run is served in its
        place, and keeps it when refused)."""
        if session_id not in self.model_sessions:
            return
        holder = data.draw(st.sampled_from([*_claimants, *self._run_ids(session_id)]))
        granted = self.call(self.store.claim_session, session_id, holder, wait=False)
        current = self.model_holders.get(session_id)
        places = self.model_places.get(session_id, [])
        expected = current == holder or (current is None and places[:1] in ([], [holder]))
        assert granted == expected, (granted, current, places, holder)
        if granted:
            self.model_holders[session_id] = holder
            if places[:1] == [holder]:
                places.pop(0)

    @rule(session_id=sessions, data=st.data())
    def release_session(self, session_id: str, data: st.DataObject) -> None:
        """A release gives the claim up, or the place in line of an admitted run that has
        not claimed it; by anyone else it does nothing."""
        if session_id not in self.model_sessions:
            return
        holder = data.draw(st.sampled_from([*_claimants, *self._run_ids(session_id)]))
        self.call(self.store.release_session, session_id, holder)
        places = self.model_places.get(session_id, [])
        if self.model_holders.get(session_id) == holder:
            del self.model_holders[session_id]
        elif holder in places:
            places.remove(holder)

    # --- runs -------------------------------------------------------------------------------

    @rule(session_id=sessions, status=st.sampled_from(
        ["running", "waiting", "completed", "failed", "aborted", "interrupted"]),
        steps=st.integers(0, 100), tokens=st.integers(0, 10**6),
        key=st.none() | st.just("saved"), first_seq=st.none() | st.integers(1, 5),
        abort_requested=st.booleans(), age=st.none() | _ages)
    def save_run(
        self, session_id: str, status: Any, steps: int, tokens: int, key: str | None,
        first_seq: int | None, abort_requested: bool, age: timedelta | None,
    ) -> None:
        """Insert or replace, every field round-tripping. (Its idempotency key is never one
        an admission uses: what a saved run's key means to admissions is no rule.)"""
        if session_id not in self.model_sessions:
            return
        run = RunRecord(id=new_id(), session_id=session_id, status=status, steps=steps,
                        usage=Usage(input_tokens=tokens, output_tokens=tokens // 2),
                        idempotency_key=key, request_hash=key, first_seq=first_seq,
                        last_seq=first_seq, abort_requested=abort_requested,
                        finished_at=None if age is None else utc_now() - age)
        self.call(self.store.save_run, run)
        self.model_runs[run.id] = run
        if status == "waiting":
            self.model_saved_waiting.add(run.id)
        assert self.call(self.store.get_run, run.id) == run

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data())
    def get_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.model_runs)))
        assert self.call(self.store.get_run, run_id) == self.model_runs[run_id]

    @rule(session_id=sessions, key=st.none() | st.just("k1"),
          request_hash=st.none() | st.just("h1"), if_busy=_if_busy,
          agent_id=st.none() | st.just("agent-1"), said=st.none() | _texts,
          stale=st.sampled_from([0, 0, -1, 1]))
    def admit_run(
        self, session_id: str, key: str | None, request_hash: str | None, if_busy: str,
        agent_id: str | None, said: str | None, stale: int,
    ) -> None:
        """A repeat of an idempotency key with the same request is the first run again,
        with another request a conflict naming the key; ``reject`` refuses a busy session,
        ``interrupt`` aborts its unfinished runs; an admitted run is stored queued, takes
        its place in line and logs its ``run_queued``. Admitted with messages to start
        with, a run whose turn is now on a history of the length the caller said also
        starts (``run_started`` logged, the messages appended); else it stays queued."""
        if session_id not in self.model_sessions:
            return
        run = attrs.evolve(self._queued(session_id), agent_id=agent_id, idempotency_key=key,
                           request_hash=request_hash)
        start = None if said is None else (
            Message(role="user", content=(TextBlock(text=said),)),)
        self._admit(run, if_busy, start, len(self.model_messages[session_id]) + stale)

    @precondition(lambda self: any(r.idempotency_key == "k1" for r in self.model_runs.values()))
    @rule(data=st.data(), same_request=st.booleans(), if_busy=_if_busy)
    def admit_again(self, data: st.DataObject, same_request: bool, if_busy: str) -> None:
        """A client repeats an admission with its idempotency key, asking the same or not."""
        earlier = data.draw(st.sampled_from(
            [run for run in self.model_runs.values() if run.idempotency_key == "k1"]))
        other = None if earlier.request_hash else "h1"
        run = attrs.evolve(self._queued(earlier.session_id), idempotency_key="k1",
                           request_hash=earlier.request_hash if same_request else other)
        self._admit(run, if_busy)

    def _admit(
        self, run: RunRecord, if_busy: str, start: tuple[Message, ...] | None = None,
        history_length: int | None = None,
    ) -> RunRecord | None:
        """Admit ``run`` to the store and the model, checking the answer.
        :returns: the run as admitted, if it was admitted (not a repeat, not refused)."""
        options: dict[str, Any] = {"if_busy": if_busy}
        if start is not None:
            options.update(start=start, history_length=history_length)
        key, session_id = run.idempotency_key, run.session_id
        runs = self._runs_of(session_id)
        admitted = None
        earlier = next((r for r in runs if key is not None and r.idempotency_key == key), None)
        if earlier is not None and earlier.request_hash != run.request_hash:
            error = self._assert_raises(ConflictError, self.store.admit_run, run, **options)
            assert str(key) in str(error), f"the conflict should name the key: {error}"
        elif earlier is not None:
            admission = self.call(self.store.admit_run, run, **options)
            assert admission == Admission(run=earlier, created=False), (admission, earlier)
        elif if_busy == "reject" and any(r.status not in FINISHED_STATUSES for r in runs):
            self._assert_raises(ConflictError, self.store.admit_run, run, **options)
        else:
            # Its turn is now when nobody holds the session and nobody is in line before it.
            claimed = (self.model_holders.get(session_id) is None
                       and not self.model_places.get(session_id))
            before = utc_now()
            admission = self.call(self.store.admit_run, run, **options)
            for aborted in runs if if_busy == "interrupt" else ():
                if aborted.status not in FINISHED_STATUSES:
                    self._model_abort(aborted, before)
            seq = self._model_log(session_id, run.id, [RunQueued(run_id=run.id)])
            run = attrs.evolve(run, started_at=None, finished_at=None, first_seq=seq,
                               last_seq=seq)
            started = (start is not None and claimed
                       and history_length == len(self.model_messages[session_id]))
            if started:
                assert start is not None
                self.model_messages[session_id].extend(start)
                seq = self._model_log(session_id, run.id, [RunStarted(run_id=run.id)])
                run = attrs.evolve(run, status="running", last_seq=seq, started_at=self._now(
                    admission.run.started_at, before))
            assert admission == Admission(run=run, created=True, claimed=claimed,
                                          started=started), (admission, run, claimed)
            self.model_runs[run.id] = admitted = run
            if claimed:
                self.model_holders[session_id] = run.id
            else:
                self.model_places.setdefault(session_id, []).append(run.id)
        self._check_session(session_id)
        return admitted

    @rule(session_id=sessions, deltas=st.lists(st.builds(TextDelta, text=_texts, index=st.just(0))
                                               | st.just(Ping()), min_size=1, max_size=3),
          end=st.sampled_from(["running", "waiting", *sorted(FINISHED_STATUSES)]), age=_ages,
          next_if_busy=st.sampled_from(["reject", "interrupt"]), prune=st.none() | _shifts,
          subject=_subjects)
    def run_a_turn(
        self, session_id: str, deltas: list[LogEvent], end: Any, age: timedelta,
        next_if_busy: str, prune: timedelta | None, subject: str,
    ) -> None:
        """A run as the kernel drives it: admitted (and its id then in use), started,
        streaming, then paused on a permission request (which makes it ``waiting``) or still
        running (and then the next admission is refused, or interrupts it), or finished (and
        maybe its deltas pruned, about when it finished)."""
        if session_id not in self.model_sessions:
            return
        run = self._admit(self._queued(session_id), "queue")
        assert run is not None
        again = attrs.evolve(self._queued(session_id), id=run.id)
        self._assert_raises(ConflictError, self.store.admit_run, again)  # its id is in use
        run = self._start(run)
        self._append(session_id, run.id, deltas)
        run = self.model_runs[run.id]
        if end in ("running", "waiting"):
            if end == "waiting":
                self._ask(run, self._request(run, subject=subject))
            else:
                self.call(self.store.save_run, run)
            self._admit(self._queued(session_id), next_if_busy)
        else:
            finished_at = utc_now() - age
            self._finish(run, attrs.evolve(run, status=end, finished_at=finished_at), [])
            if prune is not None:
                self._prune(finished_at + prune)

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data(), said=st.none() | _texts)
    def start_run(self, data: st.DataObject, said: str | None) -> None:
        """A queued run starts (``running``, ``started_at`` now, its ``run_started``
        logged, the messages given appended to the history); any other is a conflict."""
        run = self._draw_run(data, lambda r: r.status == "queued")
        messages = () if said is None else (Message(role="user", content=(TextBlock(text=said),)),)
        if run.status != "queued":
            self._assert_raises(ConflictError, self.store.start_run, run.id, messages)
            self._check_session(run.session_id)  # nothing appended
        else:
            self._start(run, messages)

    def _start(self, run: RunRecord, messages: tuple[Message, ...] = (), *,
               check: bool = True) -> RunRecord:
        before = utc_now()
        started = self.call(self.store.start_run, run.id, messages)
        self.model_messages[run.session_id].extend(messages)
        seq = self._model_log(run.session_id, run.id, [RunStarted(run_id=run.id)])
        run = attrs.evolve(run, status="running", started_at=self._now(started.started_at, before),
                           last_seq=seq)
        assert started == run, (started, run)
        self.model_runs[run.id] = run
        if check:
            self._check_session(run.session_id)
        return run

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data(), status=st.sampled_from(sorted(FINISHED_STATUSES)),
          events=_log_events, age=st.none() | _ages, steps=st.integers(0, 9),
          keep_first_seq=st.booleans(), said=st.none() | _texts)
    def finish_run(
        self, data: st.DataObject, status: Any, events: list[LogEvent],
        age: timedelta | None, steps: int, keep_first_seq: bool, said: str | None,
    ) -> None:
        """An unfinished run ends: the messages given (its last turn) appended, its events
        and ``run_finished`` logged, the record stored as given with ``last_seq`` that of
        its ``run_finished`` (and the stored ``first_seq`` when it is given none). A
        finished one stays as it is, and nothing is appended."""
        stored = self._draw_run(data, lambda r: r.status not in FINISHED_STATUSES)
        run = attrs.evolve(
            stored, status=status, steps=steps, stop_reason="end_turn",
            finished_at=None if age is None else utc_now() - age,
            first_seq=stored.first_seq if keep_first_seq else None,
        )
        turn = () if said is None else (
            Message(role="assistant", content=(TextBlock(text=said),)),)
        self._finish(stored, run, events, turn)

    def _finish(self, stored: RunRecord, run: RunRecord, events: list[LogEvent],
                messages: tuple[Message, ...] = ()) -> None:
        """Finish ``run``; one that was waiting has its pending requests denied by
        ``abort``."""
        before = utc_now()
        finished = self.call(self.store.finish_run, run, events, messages)
        # A run that ends gives its claim (or its place in line) up, as a release does.
        places = self.model_places.get(run.session_id, [])
        if self.model_holders.get(run.session_id) == run.id:
            del self.model_holders[run.session_id]
        elif run.id in places:
            places.remove(run.id)
        if stored.status in FINISHED_STATUSES:
            assert finished == stored, (finished, stored)  # the first ending wins
            self._check_session(run.session_id)  # nothing appended
            return
        self.model_messages[run.session_id].extend(messages)
        seq = self._model_log(
            run.session_id, run.id, [*events, RunFinished(run_id=run.id, status=run.status)]
        )
        run = attrs.evolve(run, first_seq=stored.first_seq, last_seq=seq)
        assert finished == run, (finished, run)
        self.model_runs[run.id] = run
        self.model_saved_waiting.discard(run.id)
        for request in self._requests_of(run.session_id, pending_only=True):
            if request.run_id == run.id:
                got = self.call(self.store.get_permission_request, request.id)
                self.model_requests[request.id] = attrs.evolve(
                    request, status="denied", decision="deny", by="abort", message=None,
                    resolved_at=self._now(got.resolved_at, before))
                assert got == self.model_requests[request.id], (got, request)
        self._check_session(run.session_id)

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data())
    def abort_run(self, data: st.DataObject) -> None:
        """A queued run is finished ``aborted`` at once (its ``error`` and ``run_finished``
        logged) and keeps its place in line; a running or waiting one gets
        ``abort_requested``; a finished one is a conflict."""
        run = self.model_runs[data.draw(st.sampled_from(sorted(self.model_runs)))]
        if run.status in FINISHED_STATUSES:
            self._assert_raises(ConflictError, self.store.abort_run, run.id)
            return
        before = utc_now()
        aborted = self.call(self.store.abort_run, run.id)
        assert aborted == self._model_abort(run, before)
        self._check_session(run.session_id)

    @rule(session_id=sessions, limit=st.integers(1, 4))
    def list_runs(self, session_id: str, limit: int) -> None:
        if session_id not in self.model_sessions:
            return
        got = self._all_pages(lambda **page: self.store.list_runs(session_id, **page), limit)
        assert got == sorted(self._runs_of(session_id), key=lambda r: r.id, reverse=True)

    @precondition(lambda self: bool(self.model_sessions))
    @rule(data=st.data())
    def refuse_bad_arguments(self, data: st.DataObject) -> None:
        """What the contract rules out is refused, and changes nothing: admitting a run that
        is not queued or with an unknown ``if_busy``, finishing one with an unfinished
        status, adding a permission request that is not pending, or a page limit out of
        range is a ``ConfigError``; starting, aborting or finishing a run that never was,
        a request of one, or getting or answering a request that never was a
        ``NotFoundError``."""
        session_id = data.draw(st.sampled_from(sorted(self.model_sessions)))
        case = data.draw(st.sampled_from(
            ["admit_status", "if_busy", "finish_status", "read_limit", "list_limit",
             "unknown_run", "request_status", "unknown_request"]))
        queued = self._queued(session_id)
        if case == "admit_status":
            run = attrs.evolve(queued, status=data.draw(st.sampled_from(["running", "failed"])))
            self._assert_raises(ConfigError, self.store.admit_run, run)
        elif case == "if_busy":
            self._assert_raises(ConfigError, self.store.admit_run, queued, if_busy="later")
        elif case == "finish_status" and self.model_runs:
            run = self.model_runs[data.draw(st.sampled_from(sorted(self.model_runs)))]
            run = attrs.evolve(run, status=data.draw(st.sampled_from(["running", "queued"])))
            self._assert_raises(ConfigError, self.store.finish_run, run)
        elif case == "read_limit":
            limit = data.draw(st.sampled_from([0, -1, 1.5, "2"]))
            self._assert_raises(ConfigError, self.store.read_events, session_id, limit=limit)
        elif case == "list_limit":
            limit = data.draw(st.sampled_from([0, 501]))
            self._assert_raises(ConfigError, self.store.list_runs, session_id, limit=limit)
        elif case == "unknown_run":
            self._assert_missing(self.store.start_run, queued.id)
            self._assert_missing(self.store.abort_run, queued.id)
            self._assert_missing(self.store.finish_run, attrs.evolve(queued, status="failed"))
            self._assert_missing(self.store.add_permission_request, self._request(queued))
        elif case == "request_status" and (asking := [
                r for r in self.model_runs.values() if r.status in ("running", "waiting")]):
            run = data.draw(st.sampled_from(sorted(asking, key=lambda r: r.id)))
            request = attrs.evolve(self._request(run), status="allowed", decision="allow",
                                   by="user", resolved_at=utc_now())
            self._assert_raises(ConfigError, self.store.add_permission_request, request)
            self._check_session(run.session_id)  # not asked: the run is as it was
        elif case == "unknown_request":
            self._assert_missing(self.store.get_permission_request, queued.id)
            self._assert_missing(self.store.resolve_permission_request, queued.id,
                                 decision="deny", by="user")

    # --- permission requests and grants ----------------------------------------------------

    @rule(session_id=sessions, subjects=st.lists(_subjects, min_size=1, max_size=2),
          answers=st.lists(_decisions, max_size=2), pattern=_grant_patterns,
          then=st.sampled_from(["wait", "interrupt", *sorted(FINISHED_STATUSES)]),
          data=st.data())
    def ask_in_a_turn(self, session_id: str, subjects: list[str],
                      answers: list[PermissionDecision], pattern: str, then: Any,
                      data: st.DataObject) -> None:
        """A run as the kernel drives it when its step's tool calls need a person:
        admitted, started, asking about each call (``waiting``; the calls run at once, so
        their requests, made in order, may be stored in any), some answered at once
        (``running`` again once none is pending); then it waits on, or the next admission
        interrupts it and it stops ``aborted``, or it ends otherwise. Ending, it has what
        is still pending denied by ``abort``. Asking before it starts or after it ended,
        asking again with a request's id, answering a request again: conflicts, which
        change nothing."""
        if session_id not in self.model_sessions:
            return
        run = self._admit(self._queued(session_id), "queue")
        assert run is not None
        requests = [self._request(run, subject=subject) for subject in subjects]
        self._assert_raises(ConflictError, self.store.add_permission_request, requests[0])
        run = self._start(run, check=False)  # checked once it asked
        for request in data.draw(st.permutations(requests)):
            self._ask(self.model_runs[run.id], request)
        self._assert_raises(ConflictError, self.store.add_permission_request,
                            attrs.evolve(requests[-1], subject="again"))
        for request, decision in zip(requests, answers, strict=False):
            self._resolve(request, decision, "user", None, pattern)
        assert self.call(self.store.get_run, run.id) == self.model_runs[run.id]
        if answers:
            self._assert_raises(ConflictError, self.store.resolve_permission_request,
                                requests[0].id, decision="allow_always", by="user",
                                grant=self._grant(requests[0], "allow_always", pattern))
        if then == "interrupt":
            self._admit(self._queued(session_id), "interrupt")
            then = "aborted"
        if then != "wait":
            stored = self.model_runs[run.id]
            self._finish(stored, attrs.evolve(stored, status=then, finished_at=utc_now()), [])
            self._assert_raises(ConflictError, self.store.add_permission_request,
                                self._request(run))
        else:
            self._check_session(session_id)

    @precondition(lambda self: any(r.status in ("running", "waiting")
                                   for r in self.model_runs.values()))
    @rule(data=st.data(), tool_name=_tool_names, input=_inputs,
          subjects=st.lists(_subjects, min_size=1, max_size=2),
          answers=st.lists(_decisions, max_size=2), pattern=_grant_patterns)
    def add_permission_request(
        self, data: st.DataObject, tool_name: str, subjects: list[str], input: dict[str, Any],
        answers: list[PermissionDecision], pattern: str,
    ) -> None:
        """A running or waiting run asks about one call or several (it is ``waiting``
        then), and a person may answer some at once."""
        run = data.draw(st.sampled_from(
            [r for _, r in sorted(self.model_runs.items()) if r.status in ("running", "waiting")]))
        requests = [self._request(run, tool_name=tool_name, subject=subject, input=input)
                    for subject in subjects]
        for request in requests:
            self._ask(self.model_runs[run.id], request)
        for request, decision in zip(requests, answers, strict=False):
            self._resolve(request, decision, "user", None, pattern)
        self._check_session(run.session_id)

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data(), duplicate=st.booleans())
    def add_refused(self, data: st.DataObject, duplicate: bool) -> None:
        """A queued or finished run cannot ask, nor can a request with an id taken (of
        any run, any session); nothing changes."""
        run = self._draw_run(data, lambda r: r.status not in ("running", "waiting"))
        request = self._request(run)
        if duplicate and self.model_requests:
            taken = data.draw(st.sampled_from(sorted(self.model_requests)))
            request = attrs.evolve(request, id=taken)
        elif run.status in ("running", "waiting"):
            return  # it may ask: add_permission_request
        self._assert_raises(ConflictError, self.store.add_permission_request, request)
        self._check_session(run.session_id)

    @precondition(lambda self: any(r.status == "pending" for r in self.model_requests.values()))
    @rule(data=st.data(), decision=_decisions, by=_resolvers, message=st.none() | _texts,
          pattern=_grant_patterns)
    def resolve_permission_request(self, data: st.DataObject, decision: PermissionDecision,
                                   by: ResolvedBy, message: str | None, pattern: str) -> None:
        """A pending request is answered, whenever."""
        request = data.draw(st.sampled_from(self._requests_of(None, pending_only=True)))
        self._resolve(request, decision, by, message, pattern)
        self._check_session(request.session_id)

    @precondition(lambda self: any(r.status != "pending" for r in self.model_requests.values()))
    @rule(data=st.data(), decision=_decisions, pattern=_grant_patterns)
    def resolve_again(self, data: st.DataObject, decision: PermissionDecision,
                      pattern: str) -> None:
        """An answered request (by a person, or by the end of its run) is a conflict to
        answer again: it keeps its first answer, and no grant is made."""
        answered = [r for r in self._requests_of(None) if r.status != "pending"]
        request = data.draw(st.sampled_from(answered))
        self._assert_raises(ConflictError, self.store.resolve_permission_request, request.id,
                            decision=decision, by="user",
                            grant=self._grant(request, decision, pattern))
        assert self.call(self.store.get_permission_request, request.id) == request
        self._check_grants(request.session_id)
        self._check_session(request.session_id)

    @precondition(lambda self: bool(self.model_requests))
    @rule(data=st.data())
    def get_permission_request(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.model_requests)))
        assert self.call(self.store.get_permission_request, request_id) == (
            self.model_requests[request_id])

    @rule(session_id=sessions)
    def list_permission_requests(self, session_id: str) -> None:
        if session_id in self.model_sessions:
            self._check_requests(session_id)

    def _resolve(self, request: PermissionRequest, decision: PermissionDecision,
                 by: ResolvedBy, message: str | None, pattern: str) -> None:
        """Answer a pending request (``allow_always`` with the session's grant it makes):
        its run is ``running`` again once none of it is pending."""
        grant = self._grant(request, decision, pattern)
        before = utc_now()
        got = self.call(self.store.resolve_permission_request, request.id, decision=decision,
                        by=by, message=message, grant=grant)
        request = attrs.evolve(
            request, status="denied" if decision == "deny" else "allowed", decision=decision,
            by=by, message=message, resolved_at=self._now(got.resolved_at, before))
        assert got == request, (got, request)
        self.model_requests[request.id] = request
        if grant is not None:
            self.model_grants.setdefault(request.session_id, []).append(grant)
            self._check_grants(request.session_id)
        run = self.model_runs[request.run_id]
        if run.status == "waiting" and not any(
                r.run_id == run.id for r in self._requests_of(run.session_id, pending_only=True)):
            self.model_runs[run.id] = attrs.evolve(run, status="running")

    def _ask(self, run: RunRecord, request: PermissionRequest) -> None:
        """Add ``request`` of ``run`` (running or waiting), which makes the run ``waiting``."""
        assert self.call(self.store.add_permission_request, request) == request
        self.model_requests[request.id] = request
        self.model_runs[run.id] = attrs.evolve(run, status="waiting")
        self.model_saved_waiting.discard(run.id)

    # --- the event log ----------------------------------------------------------------------

    @rule(session_id=sessions, events=_log_events, data=st.data())
    def append_events(self, session_id: str, events: list[LogEvent], data: st.DataObject) -> None:
        """Events are numbered on from the session's ``last_seq``, which the session and
        the run (when there is such a run) keep; none appended changes nothing."""
        if session_id not in self.model_sessions:
            return
        runs = self._run_ids(session_id)
        known = bool(runs) and data.draw(st.booleans())
        run_id = data.draw(st.sampled_from(runs if known else ["ghost", *runs]))
        said = data.draw(st.none() | _texts)
        messages = () if said is None else (Message(role="user", content=(TextBlock(text=said),)),)
        self._append(session_id, run_id, events, messages)

    def _append(self, session_id: str, run_id: str, events: list[LogEvent],
                messages: tuple[Message, ...] = ()) -> None:
        """The events, and the messages with them (a step's last events and its turn)."""
        last_seq = self.call(self.store.append_events, session_id, run_id, events, messages)
        self.model_messages[session_id].extend(messages)
        if events:
            self._model_log(session_id, run_id, events)
            if run_id in self.model_runs:
                self.model_runs[run_id] = attrs.evolve(self.model_runs[run_id], last_seq=last_seq)
        assert last_seq == self.model_sessions[session_id].last_seq
        self._check_session(session_id)

    @rule(session_id=sessions, data=st.data())
    def read_events(self, session_id: str, data: st.DataObject) -> None:
        """The retained events after ``after``, oldest first, at most ``limit``, only the
        run's when one is given."""
        if session_id not in self.model_sessions:
            return
        logged = self.model_events[session_id]
        after = data.draw(st.integers(0, self.model_sessions[session_id].last_seq + 1))
        limit = data.draw(st.sampled_from([1, 2, 5, 1000]))
        run_id = data.draw(st.none() | st.sampled_from(["ghost", *self._run_ids(session_id)]))
        got = self.call(self.store.read_events, session_id, after=after, limit=limit,
                        run_id=run_id)
        expected = [e for e in logged if e.seq > after and run_id in (None, e.run_id)][:limit]
        assert got == expected, (got, expected)

    @rule(session_id=sessions, data=st.data())
    def wait_events(self, session_id: str, data: st.DataObject) -> None:
        """A wait for what is there already returns at once; one for what is not returns the
        ``last_seq`` when its time is up."""
        if session_id not in self.model_sessions:
            return
        last_seq = self.model_sessions[session_id].last_seq
        after = data.draw(st.integers(0, last_seq + 1))
        # A store that waited for what it has would fail this rule on its own time limit.
        timeout = 60.0 if after < last_seq else 0.0
        assert self.call(self.store.wait_events, session_id, after=after,
                         timeout=timeout) == last_seq

    @precondition(lambda self: any(
        self._prunable(e, datetime.max.replace(tzinfo=UTC))
        for logged in self.model_events.values() for e in logged))
    @rule(data=st.data(), shift=_shifts)
    def prune_events(self, data: st.DataObject, shift: timedelta) -> None:
        ends = sorted({r.finished_at for r in self.model_runs.values() if r.finished_at})
        self._prune(data.draw(st.sampled_from(ends)) + shift)

    def _prune(self, before: datetime) -> None:
        """Only the deltas and pings of runs that finished before the cutoff go (a cutoff
        about when a run finished: just before, at or just after it); ``last_seq`` stays."""
        dropped = self.call(self.store.prune_events, before=before)
        expected = 0
        for session_id, logged in self.model_events.items():
            kept = [e for e in logged if not self._prunable(e, before)]
            expected += len(logged) - len(kept)
            self.model_events[session_id] = kept
        assert dropped == expected, (dropped, expected)
        for session_id in self.model_sessions:
            self._check_session(session_id)

    # --- listings ---------------------------------------------------------------------------

    @rule(limit=st.integers(1, 4))
    def list_sessions(self, limit: int) -> None:
        got = self._all_pages(self.store.list_sessions, limit)
        assert [s.id for s in got] == sorted(self.model_sessions, reverse=True)
        for record in got:
            assert record.message_count == len(self.model_messages[record.id])
            assert record.last_seq == self.model_sessions[record.id].last_seq

    @rule(limit=st.integers(1, 4))
    def list_agents(self, limit: int) -> None:
        got = self._all_pages(self.store.list_agents, limit)
        assert got == [self.model_agents[i] for i in sorted(self.model_agents, reverse=True)]

    def _all_pages(self, method: Callable[..., Awaitable[Page[Any]]], limit: int) -> list[Any]:
        items: list[Any] = []
        cursor = None
        for _ in range(len(self.model_sessions) + len(self.model_agents) + len(self.model_runs)
                       + 2):
            page = self.call(method, limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return items
        raise AssertionError("listing never ended")

    # --- idempotency keys of creations -------------------------------------------------------

    @initialize(scope=_key_scopes, key=_keys, request_hash=_request_hashes)
    def first_key(self, scope: str, key: str, request_hash: str) -> None:
        """Every run of the machine has a key to repeat and prune from its first step."""
        self.reserve_key(scope, key, request_hash)

    @rule(scope=_key_scopes, key=_keys, request_hash=_request_hashes)
    def reserve_key(self, scope: str, key: str, request_hash: str) -> None:
        """A key's first reservation in its scope gets the id it offers; a repeat with the
        same hash gets that id again, with another hash a conflict naming the key. Scopes
        never share keys."""
        offered = new_id()
        reserved = self.model_keys.get((scope, key))
        if reserved is not None and reserved.request_hash != request_hash:
            error = self._assert_raises(ConflictError, self.store.reserve_key, scope, key,
                                        request_hash, offered)
            assert key in str(error), f"the conflict should name the key: {error}"
            return
        got = self._reserve(scope, key, request_hash, offered)
        assert got == (offered if reserved is None else reserved.id), (got, offered, reserved)
        if reserved is not None:
            self.model_keys[scope, key] = reserved  # its first reservation's

    @precondition(lambda self: bool(self.model_keys))
    @rule(data=st.data(), same_request=st.booleans(), other_scope=st.booleans())
    def reserve_key_again(self, data: st.DataObject, same_request: bool,
                          other_scope: bool) -> None:
        """A client repeats a creation with its key, asking the same or not; or uses the
        key for the other kind of creation."""
        scope, key = data.draw(st.sampled_from(sorted(self.model_keys)))
        request_hash = self.model_keys[scope, key].request_hash
        if not same_request:
            request_hash = "h2" if request_hash == "h1" else "h1"
        if other_scope:
            scope = "agents" if scope == "sessions" else "sessions"
        self.reserve_key(scope, key, request_hash)

    def _reserve(self, scope: str, key: str, request_hash: str, offered: str) -> str:
        """Reserve ``key``, and have it in the model as reserved now with ``offered``
        (the caller puts back what it had when the store answers another id)."""
        earliest = utc_now()
        got: str = self.call(self.store.reserve_key, scope, key, request_hash, offered)
        self.model_keys[scope, key] = _Reserved(
            request_hash=request_hash, id=offered, earliest=earliest, latest=utc_now())
        return got

    @precondition(lambda self: bool(self.model_keys))
    @rule(data=st.data(), when=st.sampled_from(["long ago", "at a reservation",
                                                 "just after a reservation", "to come"]))
    def prune_keys(self, data: st.DataObject, when: str) -> None:
        """Exactly the keys reserved before the cutoff go (one reserved at the cutoff
        stays): each is new to its next reservation, which is made at once (so that the
        model's keys do not depend on the clock)."""
        if when in ("long ago", "to come"):
            cutoff = utc_now() + timedelta(hours=-1 if when == "long ago" else 1)
        else:
            chosen = self.model_keys[data.draw(st.sampled_from(sorted(self.model_keys)))]
            cutoff = (chosen.earliest if when == "at a reservation"
                      else chosen.latest + timedelta(milliseconds=1))
        dropped = self.call(self.store.prune_keys, before=cutoff)
        # Reserved in the very millisecond of the cutoff: either way is right, and the next
        # reservation shows which way it went.
        gone = {k for k, r in self.model_keys.items() if r.latest < cutoff}
        unsure = {k for k, r in self.model_keys.items() if r.earliest < cutoff <= r.latest}
        assert len(gone) <= dropped <= len(gone) + len(unsure), (dropped, gone, unsure)
        for scope, key in sorted(gone | unsure):
            reserved = self.model_keys[scope, key]
            offered = new_id()
            got = self._reserve(scope, key, reserved.request_hash, offered)
            if got == offered:  # it had gone, and is reserved anew
                dropped -= (scope, key) in unsure
            else:
                assert (scope, key) in unsure, f"{key!r} in {scope!r} should have been pruned"
                assert got == reserved.id, (got, reserved)
                self.model_keys[scope, key] = reserved
        assert dropped == len(gone), (dropped, gone)

    # --- credentials ------------------------------------------------------------------------

    @rule(provider=st.sampled_from(["anthropic", "openai", "ollama"]), key=_names,
          kind=st.sampled_from(["api_key", "oauth"]),
          base_url=st.none() | st.just("http://localhost:11434/v1") | _names)
    def set_credential(self, provider: str, key: str, kind: str, base_url: str | None) -> None:
        """Set or replace a credential: its type, key and base URL come back as they went in."""
        credential = Credential(type=kind, key=key, base_url=base_url)
        self.call(self.store.set_credential, provider, credential)
        self.model_credentials[provider] = credential

    @rule(provider=st.sampled_from(["anthropic", "openai", "ollama"]))
    def delete_credential(self, provider: str) -> None:
        deleted = self.call(self.store.delete_credential, provider)
        assert deleted == (provider in self.model_credentials)
        self.model_credentials.pop(provider, None)

    @rule(provider=st.sampled_from(["anthropic", "openai", "ollama"]))
    def get_credential(self, provider: str) -> None:
        assert self.call(self.store.get_credential, provider) == self.model_credentials.get(
            provider
        )

    @invariant()
    def credentials_listed_without_keys(self) -> None:
        listed = self.call(self.store.list_credentials)
        assert listed == {p: c.type for p, c in self.model_credentials.items()}

    # --- the model --------------------------------------------------------------------------

    def _check_session(self, session_id: str) -> None:
        """The session's ``last_seq``, history, runs and log are the model's."""
        got = self.call(self.store.get_session, session_id)
        assert got.last_seq == self.model_sessions[session_id].last_seq
        assert got.message_count == len(self.model_messages[session_id])
        history = self.call(self.store.load_messages, session_id)
        assert history == self.model_messages[session_id], (history, session_id)
        runs = self.call(self.store.list_runs, session_id, limit=MAX_PAGE)
        expected = self._runs_of(session_id)[::-1]
        assert list(runs.items) == expected[:MAX_PAGE], (runs.items, expected)
        logged = self.call(self.store.read_events, session_id, limit=10**9)
        assert logged == self.model_events[session_id], (logged, self.model_events[session_id])
        if expected:  # and the latest run's part of it
            run_id = expected[0].id
            logged = self.call(self.store.read_events, session_id, run_id=run_id)
            assert logged == [e for e in self.model_events[session_id] if e.run_id == run_id]
        if self._requests_of(session_id):
            self._check_requests(session_id, runs.items, every=False)

    def _check_requests(self, session_id: str, runs: Sequence[RunRecord] | None = None, *,
                        every: bool = True) -> None:
        """The session's pending requests, oldest (lowest id) first, are the model's, and so
        are (``every``) all its requests and its grants, in order; of its runs (``runs``, as
        the store listed them), those with a pending request are ``waiting``, and the
        unfinished ones with none are not (unless ``save_run`` stored them so)."""
        asked = self._requests_of(session_id)
        pending = self.call(self.store.list_permission_requests, session_id)
        assert pending == [r for r in asked if r.status == "pending"], (pending, asked)
        if every:
            got = self.call(self.store.list_permission_requests, session_id, pending_only=False)
            assert got == asked, (got, asked)
            self._check_grants(session_id)
        if runs is None:
            runs = self.call(self.store.list_runs, session_id, limit=MAX_PAGE).items
        waited_on = {r.run_id for r in pending}
        for run in runs:
            if run.status in FINISHED_STATUSES:
                assert run.id not in waited_on, f"finished run {run.id} has a pending request"
            else:
                waits = run.id in waited_on or (run.status == "waiting"
                                                and run.id in self.model_saved_waiting)
                assert (run.status == "waiting") == waits, (run, pending)

    def _check_grants(self, session_id: str) -> None:
        grants = self.call(self.store.list_grants, session_id)
        assert grants == self.model_grants.get(session_id, []), (grants, session_id)

    @staticmethod
    def _queued(session_id: str) -> RunRecord:
        return RunRecord(id=new_id(), session_id=session_id, status="queued")

    @staticmethod
    def _request(run: RunRecord, *, tool_name: str = "bash", subject: str = "ls",
                 input: dict[str, Any] | None = None) -> PermissionRequest:
        """A new pending request of ``run``, expiring long after the machine has ended."""
        now = utc_now()
        return PermissionRequest(
            id=new_id(), session_id=run.session_id, run_id=run.id,
            tool_use_id=f"toolu_{new_id()}", tool_name=tool_name,
            input={"command": subject} if input is None else input, subject=subject,
            created_at=now, expires_at=now + timedelta(hours=1))

    def _requests_of(self, session_id: str | None, *, pending_only: bool = False,
                     ) -> list[PermissionRequest]:
        """The session's requests (every session's: ``None``), in id (creation) order."""
        return [r for _, r in sorted(self.model_requests.items())
                if session_id in (None, r.session_id)
                and (r.status == "pending" or not pending_only)]

    @staticmethod
    def _grant(request: PermissionRequest, decision: PermissionDecision,
               pattern: str) -> Rule | None:
        """The grant an answer makes, as the kernel passes it: with ``allow_always`` only."""
        if decision != "allow_always":
            return None
        return Rule(tool=request.tool_name, match=pattern, action="allow")

    def _runs_of(self, session_id: str) -> list[RunRecord]:
        """The session's runs, in id (admission) order."""
        return [self.model_runs[i] for i in sorted(self.model_runs)
                if self.model_runs[i].session_id == session_id]

    def _draw_run(self, data: st.DataObject, likely: Callable[[RunRecord], bool]) -> RunRecord:
        """A run of the model, mostly one that is ``likely`` (when there is one)."""
        runs = [self.model_runs[i] for i in sorted(self.model_runs)]
        fitting = [run for run in runs if likely(run)]
        coin: bool = data.draw(st.booleans())
        if fitting and coin:
            runs = fitting
        return data.draw(st.sampled_from(runs))

    def _run_ids(self, session_id: str) -> list[str]:
        return [run.id for run in self._runs_of(session_id)]

    def _model_log(self, session_id: str, run_id: str, events: Sequence[LogEvent]) -> int:
        """Log ``events`` in the model, numbered on from the session's ``last_seq``.
        :returns: the new ``last_seq``."""
        session = self.model_sessions[session_id]
        self.model_events[session_id].extend(
            LoggedEvent(seq=seq, run_id=run_id, event=event)
            for seq, event in enumerate(events, session.last_seq + 1)
        )
        self.model_sessions[session_id] = attrs.evolve(
            session, last_seq=session.last_seq + len(events))
        return self.model_sessions[session_id].last_seq

    def _model_abort(self, run: RunRecord, before: datetime) -> RunRecord:
        """Abort ``run`` in the model, as the store did since ``before``."""
        if run.status == "queued":
            stored = self.call(self.store.get_run, run.id)
            error = ErrorInfo(code="aborted", message="the run was aborted before it started")
            seq = self._model_log(run.session_id, run.id, [
                ErrorEvent(error=error), RunFinished(run_id=run.id, status="aborted"),
            ])
            run = attrs.evolve(run, status="aborted", error="aborted before it started",
                               finished_at=self._now(stored.finished_at, before), last_seq=seq)
        else:
            run = attrs.evolve(run, abort_requested=True)
        assert self.call(self.store.get_run, run.id) == run
        self.model_runs[run.id] = run
        return run

    def _prunable(self, logged: LoggedEvent, before: datetime) -> bool:
        run = self.model_runs.get(logged.run_id)
        return (
            logged.event.type in _PRUNABLE and run is not None
            and run.status in FINISHED_STATUSES
            and run.finished_at is not None and run.finished_at < before
        )

    @staticmethod
    def _now(stamp: datetime | None, before: datetime) -> datetime:
        """``stamp``, checked to be a time since ``before``."""
        assert stamp is not None and before <= stamp <= utc_now(), (stamp, before)
        return stamp

    def _assert_raises(
        self, error: type[Exception], method: Callable[..., Awaitable[Any]], *args: Any,
        **kwargs: Any,
    ) -> Exception:
        try:
            self.call(method, *args, **kwargs)
        except error as raised:
            return raised
        raise AssertionError(f"{method.__name__}{args} should raise {error.__name__}")

    def _assert_missing(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> None:
        self._assert_raises(NotFoundError, method, *args, **kwargs)



def store_state_machine(
    open_store: Callable[[], Awaitable[Store]],
    *,
    max_examples: int = 60,
    stateful_step_count: int = 40,
) -> type[StoreStateMachine]:
    """The contract suite bound to a store factory. In a test module::

        TestMyStore = store_state_machine(fresh_store).TestCase

    The suite carries its own hypothesis settings: no deadline and no health checks (they
    would judge the suite's own input generation and the speed of the machine, not the
    store), so it passes in a project with no hypothesis configuration of its own. Change
    how much it does with ``max_examples`` and ``stateful_step_count``.

    :param open_store: an async callable returning a fresh, empty store each time.
    :param max_examples: how many runs of the state machine.
    :param stateful_step_count: at most how many store calls in each run.
    """

    async def opener() -> Store:
        return await open_store()

    machine = type("StoreContract", (StoreStateMachine,), {"open_store": staticmethod(opener)})
    contract_settings = settings(
        max_examples=max_examples,
        stateful_step_count=stateful_step_count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    return contract_settings(machine)
