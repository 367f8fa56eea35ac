"""The loop's state machine: which step a run takes next, and a run entered from a history
whose last turn has tool calls without results (how an approved call continues after a
restart) instead of repairing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import (
    Agent,
    ConfigError,
    InferenceRequest,
    Message,
    RunFinished,
    RunQueued,
    RunStarted,
    Session,
    TextBlock,
    ToolResultBlock,
    ToolResultEvent,
    ToolUseBlock,
    check_history,
)
from wingspan.loop import RunState
from wingspan.providers import Accumulator
from wingspan.testing import make_runtime, scripted

calls: list[dict[str, Any]] = []


@wingspan.tool
def record(note: str) -> str:
    """Keep a note.

    :param note: what to keep
    """
    calls.append({"note": note})
    return f"kept {note}"


@pytest.fixture
def runtime() -> wingspan.Runtime:
    calls.clear()
    return make_runtime()


def user(text: str) -> Message:
    return Message(role="user", content=(TextBlock(text=text),))


#: A history cut short after the model asked for two calls: no results yet.
PENDING = (
    user("keep two notes"),
    Message(role="assistant", content=(
        TextBlock(text="keeping them"),
        ToolUseBlock(id="call_1", name="record", input={"note": "a"}),
        ToolUseBlock(id="call_2", name="record", input={"note": "b"}),
    )),
)


class Recorder:
    """A scripted turn that remembers each request it answers."""

    def __init__(self, *turns: Any) -> None:
        self.turns, self.requests = list(turns), []

    def __call__(self, request: InferenceRequest) -> Any:
        self.requests.append(request)
        return self.turns.pop(0)


def agent(runtime: wingspan.Runtime, script: Any) -> Agent:
    return Agent(name="a", provider=scripted(script, runtime=runtime), tools=[record])


async def test_a_run_without_a_message_runs_the_pending_calls_then_asks_the_model(
    runtime: wingspan.Runtime,
) -> None:
    model = Recorder("both kept")
    session = Session(agent=agent(runtime, model), history=PENDING, runtime=runtime)
    events = [event async for event in session.stream()]
    # the tool step comes first: no model call before both results exist
    assert [type(event) for event in events[:2]] == [ToolResultEvent, ToolResultEvent]
    assert calls == [{"note": "a"}, {"note": "b"}]
    results = session.history[2]
    assert results == Message(role="user", content=(
        ToolResultBlock(tool_use_id="call_1", content="kept a"),
        ToolResultBlock(tool_use_id="call_2", content="kept b"),
    ))
    # then one model step, which sees the results (not an "interrupted" repair)
    assert len(model.requests) == 1
    assert model.requests[0].messages == (*PENDING, results)
    result = events[-1].result
    assert result.response == "both kept"
    assert [call.output for call in result.tool_calls] == ["kept a", "kept b"]
    assert result.steps == 1
    assert len(session.history) == 4
    assert check_history(session.history) == []


async def test_a_stored_run_entered_from_pending_calls_runs_them_under_its_run(
    runtime: wingspan.Runtime, tmp_path: Path,
) -> None:
    """What a server does after a restart: a new object for the stored session, whose
    history ends with the calls; the run executes them instead of repairing them."""
    store = await runtime.open_store(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        first = Session(agent=agent(runtime, ["unused"]), history=PENDING, store=store,
                        runtime=runtime)
        await first._ensure_stored(store)
        record_ = await store.get_session(first.id)
        model = Recorder("both kept")
        again = Session.from_record(record_, agent=agent(runtime, model), store=store,
                                    runtime=runtime)
        handle = await again.start()
        result = await handle.result()
        assert result.response == "both kept"
        assert calls == [{"note": "a"}, {"note": "b"}]
        history = await store.load_messages(first.id)
        assert [block.content for block in history[2].content] == ["kept a", "kept b"]
        assert len(history) == 4  # no user message added, no repair
        assert check_history(history) == []
        logged = [entry.event for entry in await store.read_events(first.id)]
        assert logged[:2] == [RunQueued(run_id=handle.id), RunStarted(run_id=handle.id)]
        assert [type(event) for event in logged[2:4]] == [ToolResultEvent, ToolResultEvent]
        assert logged[-1] == RunFinished(run_id=handle.id, status="completed")
        assert (await store.get_run(handle.id)).status == "completed"
    finally:
        await store.close()


async def test_a_run_without_a_message_answers_a_dangling_user_turn(
    runtime: wingspan.Runtime,
) -> None:
    model = Recorder("answered")
    session = Session(agent=agent(runtime, model), history=[user("hello?")], runtime=runtime)
    result = await session.run()
    assert result.response == "answered"
    assert model.requests[0].messages == (user("hello?"),)
    assert [message.role for message in session.history] == ["user", "assistant"]


@pytest.mark.parametrize("history", [(), (user("hi"), Message(
    role="assistant", content=(TextBlock(text="hello"),)))], ids=["empty", "answered"])
async def test_a_history_with_nothing_to_continue_is_refused_clearly(
    runtime: wingspan.Runtime, history: tuple[Message, ...],
) -> None:
    model = Recorder()
    session = Session(agent=agent(runtime, model), history=history, runtime=runtime)
    with pytest.raises(ConfigError, match="nothing to continue"):
        await session.run()
    assert model.requests == []
    assert session.history == history


async def test_a_stored_run_with_nothing_to_continue_is_recorded_failed_and_frees_the_session(
    runtime: wingspan.Runtime,
) -> None:
    store = await runtime.open_store("memory://")
    try:
        session = Session(agent=agent(runtime, ["hello again"]), store=store, runtime=runtime)
        handle = await session.start()
        with pytest.raises(ConfigError, match="nothing to continue"):
            await handle.result()
        run = await store.get_run(handle.id)
        assert run.status == "failed"
        assert "nothing to continue" in (run.error or "")
        assert (await session.run("now a message")).response == "hello again"
    finally:
        await store.close()


async def test_the_state_takes_the_steps_in_order(runtime: wingspan.Runtime) -> None:
    state = RunState("r")
    state.enter([user("go")])
    assert state.step == "model"
    state.steps += 1
    provider = scripted([[{"name": "record", "input": {"note": "x"}}]], runtime=runtime)
    asked = Accumulator()
    async for event in provider.stream(InferenceRequest(messages=(user("go"),))):
        asked.add(event)
    turn = state.end_model_step(asked)
    assert turn.tool_uses and state.step == "tools"
    assert state.outcomes == [None]
    state.outcomes[0] = wingspan.ToolOutcome(content="kept x")
    assert state.results().content == (ToolResultBlock(tool_use_id=turn.tool_uses[0].id,
                                                        content="kept x"),)
    state.end_tool_step(max_steps=1)  # the step limit: finish without another model step
    assert state.step == "finish"
    assert state.stop_reason == "max_steps"
    assert [call.output for call in state.done().tool_calls] == ["kept x"]
