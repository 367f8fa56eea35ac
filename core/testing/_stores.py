"""The store contract suite: a hypothesis state machine driving a store against a model."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.from_thread
import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from ..errors import ConflictError, NotFoundError, StoreError
from ..ids import new_id
from ..store import AgentRecord, Credential, Page, RunRecord, SessionRecord, Store
from ..types import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage

__all__ = ["StoreStateMachine", "store_state_machine"]

_names = st.text(st.characters(codec="utf-8"), max_size=20)
_texts = st.text(max_size=40)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _texts
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)


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
    """Drives a store through creates, updates, deletes, appends, claims, listings and
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
        self.model_sessions: dict[str, SessionRecord] = {}
        self.model_messages: dict[str, list[Message]] = {}
        self.model_holders: dict[str, str] = {}
        self.model_runs: dict[str, RunRecord] = {}
        self.model_credentials: dict[str, Credential] = {}

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

    @rule(target=sessions, title=_names, work_dir=st.none() | st.just("/tmp"))
    def create_session(self, title: str, work_dir: str | None) -> str:
        record = SessionRecord(id=new_id(), title=title, work_dir=work_dir)
        created = self.call(self.store.create_session, record)
        assert created == record, (created, record)
        self.model_sessions[record.id] = record
        self.model_messages[record.id] = []
        return record.id

    @rule(session_id=sessions, title=_names)
    def update_session(self, session_id: str, title: str) -> None:
        if session_id not in self.model_sessions:
            return
        record = attrs.evolve(self.model_sessions[session_id], title=title)
        updated = self.call(self.store.update_session, record)
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

    @rule(session_id=consumes(sessions))
    def delete_session(self, session_id: str) -> None:
        record = self.model_sessions.pop(session_id, None)
        if record is not None:
            self.call(self.store.delete_session, session_id)
            del self.model_messages[session_id]
            self.model_holders.pop(session_id, None)
            runs = [k for k, r in self.model_runs.items() if r.session_id == session_id]
            for run_id in runs:  # deleted with their session
                del self.model_runs[run_id]
                self._assert_missing(self.store.get_run, run_id)
            self._assert_missing(self.store.update_session, record)
            self._assert_missing(self.store.save_run, RunRecord(id=new_id(), session_id=session_id))
        self._assert_missing(self.store.get_session, session_id)
        self._assert_missing(self.store.load_messages, session_id)
        self._assert_missing(self.store.append_messages, session_id, [])

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

    # --- claims and runs --------------------------------------------------------------------

    @rule(session_id=sessions, holder=st.sampled_from(["run-a", "run-b", "run-c"]))
    def claim_session(self, session_id: str, holder: str) -> None:
        if session_id not in self.model_sessions:
            return
        granted = self.call(self.store.claim_session, session_id, holder, wait=False)
        expected = self.model_holders.get(session_id) in (None, holder)
        assert granted == expected, (granted, self.model_holders.get(session_id), holder)
        if granted:
            self.model_holders[session_id] = holder

    @rule(session_id=sessions, holder=st.sampled_from(["run-a", "run-b", "run-c"]))
    def release_session(self, session_id: str, holder: str) -> None:
        if session_id not in self.model_sessions:
            return
        self.call(self.store.release_session, session_id, holder)
        if self.model_holders.get(session_id) == holder:
            del self.model_holders[session_id]

    @rule(session_id=sessions, status=st.sampled_from(
        ["running", "completed", "failed", "aborted", "interrupted"]),
        steps=st.integers(0, 100), tokens=st.integers(0, 10**6))
    def save_run(self, session_id: str, status: Any, steps: int, tokens: int) -> None:
        if session_id not in self.model_sessions:
            return
        run = RunRecord(id=new_id(), session_id=session_id, status=status, steps=steps,
                        usage=Usage(input_tokens=tokens, output_tokens=tokens // 2))
        self.call(self.store.save_run, run)
        self.model_runs[run.id] = run
        assert self.call(self.store.get_run, run.id) == run

    @precondition(lambda self: bool(self.model_runs))
    @rule(data=st.data())
    def get_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.model_runs)))
        assert self.call(self.store.get_run, run_id) == self.model_runs[run_id]

    # --- listings ---------------------------------------------------------------------------

    @rule(limit=st.integers(1, 4))
    def list_sessions(self, limit: int) -> None:
        got = self._all_pages(self.store.list_sessions, limit)
        assert [s.id for s in got] == sorted(self.model_sessions, reverse=True)
        for record in got:
            assert record.message_count == len(self.model_messages[record.id])

    @rule(limit=st.integers(1, 4))
    def list_agents(self, limit: int) -> None:
        got = self._all_pages(self.store.list_agents, limit)
        assert got == [self.model_agents[i] for i in sorted(self.model_agents, reverse=True)]

    def _all_pages(self, method: Callable[..., Awaitable[Page[Any]]], limit: int) -> list[Any]:
        items: list[Any] = []
        cursor = None
        for _ in range(len(self.model_sessions) + len(self.model_agents) + 2):
            page = self.call(method, limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return items
        raise AssertionError("listing never ended")

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

    def _assert_missing(self, method: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            self.call(method, *args)
        except NotFoundError:
            return
        raise AssertionError(f"{method.__name__}{args} should raise NotFoundError")



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
