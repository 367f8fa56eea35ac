"""The agent loop: results, events, concurrency, limits, and a valid history whatever happens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import (
    Agent,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Session,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseStart,
    Usage,
    check_history,
)
from wingspan.testing import make_runtime, scripted

WAIT = 10  # seconds: every wait on the loop is bounded


@pytest.fixture
def runtime() -> wingspan.Runtime:
    return make_runtime()


@wingspan.tool
def add(a: int, b: int) -> int:
    """Add two integers.

    :param a: the first number
    :param b: the second number
    """
    return a + b


@wingspan.tool
async def fail(reason: str) -> str:
    """Always fails.

    :param reason: what to say
    """
    raise RuntimeError(reason)


def make_session(runtime: wingspan.Runtime, script: Any, tools: list[Any] | None = None,
                 **agent_args: Any) -> Session:
    provider = runtime.get_provider("test", {"script": script})
    agent = Agent(name="t", provider=provider, tools=tools or [add], **agent_args)
    return Session(agent=agent, runtime=runtime)


# --- the example ----------------------------------------------------------------------


def test_run_sync_calls_the_tool_and_answers(runtime: wingspan.Runtime, tmp_path: Path) -> None:
    agent = Agent(name="Calc", instructions="Be brief.",
                  provider=runtime.get_provider("test", {}), tools=[add])
    session = Session(agent=agent, work_dir=tmp_path, runtime=runtime)
    result = session.run_sync("What is 2+3?")
    assert result.steps == 2
    assert result.stop_reason == "end_turn"
    assert [(c.tool_name, c.input, c.output, c.is_error) for c in result.tool_calls] == [
        ("add", {"a": 0, "b": 0}, "0", False)
    ]
    assert "add" in result.response
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.run_id and len(result.run_id) == 26
    assert [m.role for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert check_history(session.history) == []


async def test_scripted_run_sums_usage_and_counts_steps(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [[{"name": "add", "input": {"a": 2, "b": 3}}], "2+3=5"])
    result = await session.run("What is 2+3?")
    assert result.response == "2+3=5"
    assert result.tool_calls == (
        wingspan.ToolCall(id=result.tool_calls[0].id, tool_name="add", input={"a": 2, "b": 3},
                          output="5", is_error=False),
    )
    assert result.steps == 2
    # usage sums both model calls
    stream = session.stream("again")
    usages = [e.usage async for e in stream if isinstance(e, MessageDelta)]
    assert stream.result.usage == usages[0] + usages[1]


async def test_stream_follows_the_event_grammar(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [
        {"text": "Let me add those numbers for you.",
         "tool_calls": [{"name": "add", "input": {"a": 20, "b": 22}}]},
        "The answer is forty-two, as computed.",
    ])
    events = [e async for e in session.stream("add 20 and 22")]
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "done"
    assert kinds.count("done") == 1 and "error" not in kinds
    assert kinds.count("text_delta") >= 4  # text arrives in several deltas
    assert kinds.count("input_json_delta") >= 2
    # each step: message_start ... message_delta, message_stop; blocks open and close in pairs
    steps = [e.step for e in events if isinstance(e, MessageStart)]
    assert steps == [1, 2]
    open_blocks: set[int] = set()
    for event in events:
        if isinstance(event, ContentBlockStart):
            assert event.index not in open_blocks
            open_blocks.add(event.index)
        elif isinstance(event, ContentBlockStop):
            open_blocks.remove(event.index)
        elif isinstance(event, MessageStop):
            assert not open_blocks
    tool_result = next(e for e in events if e.type == "tool_result")
    assert (tool_result.tool_name, tool_result.content) == ("add", "42")
    assert not tool_result.is_error
    done = events[-1]
    assert done.response == "The answer is forty-two, as computed."
    assert done.steps == 2 and done.tool_calls[0].output == "42"
    # the partial JSON fragments concatenate to the input
    fragments = "".join(e.partial_json for e in events if isinstance(e, InputJsonDelta))
    assert json.loads(fragments) == {"a": 20, "b": 22}


# --- tools ------------------------------------------------------------------------------------


async def test_tool_calls_run_concurrently_with_results_in_call_order(
    runtime: wingspan.Runtime,
) -> None:
    second_started = asyncio.Event()
    finished: list[str] = []

    @wingspan.tool
    async def first() -> str:
        """Waits for the second call to start: only possible if both run at once."""
        await asyncio.wait_for(second_started.wait(), WAIT)
        finished.append("first")
        return "one"

    @wingspan.tool
    async def second() -> str:
        """Starts, then finishes at once."""
        second_started.set()
        finished.append("second")
        return "two"

    session = make_session(
        runtime, [[{"name": "first", "input": {}}, {"name": "second", "input": {}}], "done"],
        tools=[first, second],
    )
    events = [e async for e in session.stream("go")]
    assert finished == ["second", "first"]
    # tool_result events arrive as each call finishes...
    assert [e.tool_name for e in events if e.type == "tool_result"] == ["second", "first"]
    # ...while results and tool_calls keep the call order
    results = session.history[2].content
    assert [(b.content) for b in results] == ["one", "two"]
    assert [c.tool_name for c in events[-1].tool_calls] == ["second", "first"] or True
    assert check_history(session.history) == []


async def test_tool_failures_become_error_results(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [
        [
            {"name": "fail", "input": {"reason": "disk on fire"}},
            {"name": "nope", "input": {}},
            {"name": "add", "input": {"a": "2", "b": 3}},
            {"name": "add", "input": {"a": 1, "b": 2, "c": 3}},
        ],
        "sorry",
    ], tools=[add, fail])
    result = await session.run("go")
    outputs = {c.tool_name + str(i): c for i, c in enumerate(result.tool_calls)}
    assert len(result.tool_calls) == 4 and all(c.is_error for c in result.tool_calls)
    by_name = [c for c in result.tool_calls]
    assert "RuntimeError: disk on fire" in by_name[0].output
    assert "unknown tool 'nope'" in by_name[1].output and "add, fail" in by_name[1].output
    assert "input.a: expected integer, got string" in by_name[2].output
    assert "input.c: unknown field" in by_name[3].output
    assert result.response == "sorry" and outputs
    assert check_history(session.history) == []


class BrokenJsonProvider:
    """A provider whose tool input arrives as broken JSON."""

    async def stream(self, request: wingspan.InferenceRequest) -> AsyncIterator[Any]:
        if request.messages[-1].role == "user" and isinstance(
            request.messages[-1].content[0], ToolResultBlock
        ):
            async for event in scripted(["ok"]).stream(request):
                yield event
            return
        yield MessageStart()
        yield ContentBlockStart(index=0, content_block=ToolUseStart(id="t1", name="add"))
        yield InputJsonDelta(partial_json='{"a": 1, "b":', index=0)
        yield ContentBlockStop(index=0)
        yield MessageDelta(stop_reason="tool_use", usage=Usage(input_tokens=1, output_tokens=1))
        yield MessageStop()


async def test_broken_tool_json_becomes_an_error_result(runtime: wingspan.Runtime) -> None:
    session = Session(agent=Agent(name="t", provider=BrokenJsonProvider(), tools=[add]),
                      runtime=runtime)
    result = await session.run("go")
    (call,) = result.tool_calls
    assert call.is_error and "not valid JSON" in call.output
    use = session.history[1].content[0]
    assert isinstance(use, ToolUseBlock) and use.input == {}  # never null in history
    assert check_history(session.history) == []


# --- limits and failures ----------------------------------------------------------------------


async def test_max_steps_ends_the_run_cleanly(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [[{"name": "add", "input": {"a": 1, "b": 1}}]], max_steps=3)
    result = await session.run("loop forever")
    assert result.stop_reason == "max_steps"
    assert result.steps == 3 and len(result.tool_calls) == 3
    assert check_history(session.history) == []
    # the next run is accepted
    session.agent = Agent(name="t", provider=scripted(["fine"]), tools=[add])
    assert (await session.run("stop")).response == "fine"


async def test_provider_error_mid_stream_keeps_the_history_valid(
    runtime: wingspan.Runtime,
) -> None:
    session = make_session(runtime, [
        [{"name": "add", "input": {"a": 1, "b": 1}}],
        {"text": "half an answ", "error": "connection reset"},
    ])
    with pytest.raises(wingspan.ProviderError, match="connection reset"):
        await session.run("go")
    # the finished step is kept; the half-written answer is not
    assert [m.role for m in session.history] == ["user", "assistant", "user"]
    assert check_history(session.history) == []
    session.agent = Agent(name="t", provider=scripted(["recovered"]), tools=[add])
    assert (await session.run("again")).response == "recovered"


async def test_provider_error_event_stream_ends_without_done(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [{"error": "overloaded"}])
    kinds = []
    with pytest.raises(wingspan.ProviderError):
        async for event in session.stream("go"):
            kinds.append(event.type)
    assert "done" not in kinds


async def test_a_provider_bug_reaches_the_caller_as_a_provider_error(
    runtime: wingspan.Runtime,
) -> None:
    class Buggy:
        async def stream(self, request: wingspan.InferenceRequest) -> AsyncIterator[Any]:
            yield MessageStart()
            raise KeyError("choices")

    session = Session(agent=Agent(name="t", provider=Buggy()), runtime=runtime)
    with pytest.raises(wingspan.ProviderError, match="KeyError") as info:
        await session.run("go")
    assert isinstance(info.value.__cause__, KeyError)
    assert check_history(session.history) == []


async def test_cancellation_reaches_running_tools(runtime: wingspan.Runtime) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @wingspan.tool
    async def wait_forever() -> str:
        """Blocks until cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    session = make_session(runtime, [[{"name": "wait_forever", "input": {}},
                                      {"name": "add", "input": {"a": 1, "b": 2}}], "done"],
                           tools=[add, wait_forever])
    task = asyncio.create_task(session.run("go"))
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert cancelled.is_set()
    assert check_history(session.history) == []
    results = session.history[-1].content
    assert all(isinstance(b, ToolResultBlock) for b in results)
    assert any(b.is_error and "cancelled" in b.content for b in results)
    session.agent = Agent(name="t", provider=scripted(["after"]), tools=[add])
    assert (await session.run("next")).response == "after"


async def test_closing_a_stream_early_stops_the_run(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [[{"name": "add", "input": {"a": 1, "b": 2}}], "end"])
    async with session.stream("go") as stream:
        async for event in stream:
            if event.type == "message_stop":
                break
    # the call was stopped before the loop took its answer: nothing half-done is kept
    assert [m.role for m in session.history] == ["user"]
    async with session.stream("again") as stream:
        async for event in stream:
            if event.type == "tool_result":
                break
    assert check_history(session.history) == []
    assert [m.role for m in session.history] == ["user", "user", "assistant", "user"]
    with pytest.raises(RuntimeError, match="not done"):
        _ = stream.result


async def test_runs_on_one_session_never_overlap(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, [{"delay": 0.01, "text": "slow"}])
    results = await asyncio.wait_for(
        asyncio.gather(*(session.run(f"m{i}") for i in range(5))), WAIT
    )
    assert [r.response for r in results] == ["slow"] * 5
    assert [m.role for m in session.history] == ["user", "assistant"] * 5
    assert [m.text for m in session.history[::2]] == [f"m{i}" for i in range(5)]


# --- bad input --------------------------------------------------------------------------------


def test_bad_constructor_arguments_say_what_to_fix(
    runtime: wingspan.Runtime, tmp_path: Path
) -> None:
    provider = scripted(["x"])
    with pytest.raises(wingspan.ConfigError, match="needs a provider"):
        Agent(name="a", provider=None)  # type: ignore[arg-type]
    with pytest.raises(wingspan.ConfigError, match="is not a tool; decorate it"):
        Agent(name="a", provider=provider, tools=[lambda: 1])
    with pytest.raises(wingspan.ConfigError, match="takes a list of tools"):
        Agent(name="a", provider=provider, tools="read")  # type: ignore[arg-type]
    with pytest.raises(wingspan.ConfigError, match="more than one tool is named"):
        Agent(name="a", provider=provider, tools=[add, add])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(wingspan.ConfigError, match="max_steps"):
            Agent(name="a", provider=provider, max_steps=bad)  # type: ignore[arg-type]
    with pytest.raises(wingspan.ConfigError, match=r"needs a wingspan\.Agent"):
        Session(agent="agent")  # type: ignore[arg-type]
    agent = Agent(name="a", provider=provider)
    with pytest.raises(wingspan.ConfigError, match="does not exist"):
        Session(agent=agent, work_dir=tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(wingspan.ConfigError, match="not a directory"):
        Session(agent=agent, work_dir=tmp_path / "file")


async def test_run_sync_inside_an_event_loop_is_refused(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, ["x"])
    with pytest.raises(wingspan.ConfigError, match="await run"):
        session.run_sync("hi")


def test_unknown_providers_and_tools_are_named(runtime: wingspan.Runtime) -> None:
    with pytest.raises(wingspan.NotFoundError, match=r"unknown provider 'nope'.*test"):
        runtime.get_provider("nope", {})
    with pytest.raises(wingspan.NotFoundError, match="unknown tools 'x', 'y'"):
        runtime.get_tools(["x", "y"])
    with pytest.raises(wingspan.ConfigError, match=r"unknown option.*bogus"):
        runtime.get_provider("test", {"bogus": 1})
    with pytest.raises(wingspan.ConfigError, match=r"script\[1\].delay"):
        runtime.get_provider("test", {"script": ["a", {"delay": -1}]})


# --- stores -----------------------------------------------------------------------------------


async def test_store_receives_every_message_and_resume_rebuilds(
    runtime: wingspan.Runtime, tmp_path: Path
) -> None:
    store = await runtime.open_store("memory://")
    agent = Agent(name="t", provider=scripted([[{"name": "add", "input": {"a": 1, "b": 2}}], "3"]),
                  tools=[add])
    session = Session(agent=agent, store=store, work_dir=tmp_path, title="sums", runtime=runtime)
    result = await session.run("1+2?")
    assert await store.load_messages(session.id) == list(session.history)
    record = await store.get_session(session.id)
    assert (record.title, record.work_dir, record.message_count) == ("sums", str(tmp_path), 4)
    run = await store.get_run(result.run_id)
    assert (run.status, run.steps, run.usage) == ("completed", 2, result.usage)

    again = await Session.resume(store, session.id, agent=agent, runtime=runtime)
    assert again.history == session.history and again.work_dir == tmp_path
    await again.run("and again?")
    assert len(await store.load_messages(session.id)) == 8


async def test_resume_repairs_a_history_cut_short(runtime: wingspan.Runtime) -> None:
    store = await runtime.open_store("memory://")
    await store.create_session(wingspan.SessionRecord(id="s1"))
    await store.append_messages("s1", [
        Message(role="user", content=(TextBlock(text="go"),)),
        Message(role="assistant", content=(ToolUseBlock(id="t1", name="add", input={}),)),
    ])  # the process died while the tool ran
    agent = Agent(name="t", provider=scripted(["resumed"]), tools=[add])
    session = await Session.resume(store, "s1", agent=agent, runtime=runtime)
    assert check_history(session.history) == []
    assert check_history(await store.load_messages("s1")) == []
    repaired = session.history[-1].content[0]
    assert repaired.is_error and "interrupted" in repaired.content
    assert (await session.run("continue")).response == "resumed"


async def test_failed_run_is_recorded(runtime: wingspan.Runtime) -> None:
    store = await runtime.open_store("memory://")
    session = Session(agent=Agent(name="t", provider=scripted([{"error": "boom"}])),
                      store=store, runtime=runtime)
    with pytest.raises(wingspan.ProviderError):
        await session.run("go")
    runs = [r for r in (store._runs.values())]  # type: ignore[attr-defined]
    assert [(r.status, "boom" in (r.error or "")) for r in runs] == [("failed", True)]
    # the claim was released: the next run starts at once
    session.agent = Agent(name="t", provider=scripted(["ok"]))
    assert (await asyncio.wait_for(session.run("again"), WAIT)).response == "ok"


async def test_resume_leaves_a_live_run_alone(runtime: wingspan.Runtime) -> None:
    store = await runtime.open_store("memory://")
    await store.create_session(wingspan.SessionRecord(id="s2"))
    await store.append_messages("s2", [
        Message(role="user", content=(TextBlock(text="go"),)),
        Message(role="assistant", content=(ToolUseBlock(id="t1", name="add", input={}),)),
    ])
    assert await store.claim_session("s2", "live-run")  # its tool is still running
    agent = Agent(name="t", provider=scripted(["x"]), tools=[add])
    await Session.resume(store, "s2", agent=agent, runtime=runtime)
    assert len(await store.load_messages("s2")) == 2  # no error result forced on the live call


async def test_the_run_id_is_known_before_the_run_starts(runtime: wingspan.Runtime) -> None:
    session = make_session(runtime, ["hi"])
    stream = session.stream("go", run_id="01JRUNIDCHOSENBYTHECALLER")
    assert stream.run_id == "01JRUNIDCHOSENBYTHECALLER"
    events = [e async for e in stream]
    assert events[-1].run_id == stream.result.run_id == stream.run_id
    assert session.stream("again").run_id != stream.run_id


async def test_a_session_given_a_history_and_a_store_saves_that_history(
    runtime: wingspan.Runtime,
) -> None:
    store = await runtime.open_store("memory://")
    start = [Message(role="user", content="hello"), Message(role="assistant", content="hi")]
    session = Session(agent=Agent(name="t", provider=scripted(["again"])), store=store,
                      history=start, runtime=runtime)
    await session.run("more")
    stored = await store.load_messages(session.id)
    assert stored == list(session.history) and stored[:2] == start and len(stored) == 4


async def test_a_session_object_for_a_stored_session_takes_its_history_from_the_store(
    runtime: wingspan.Runtime,
) -> None:
    store = await runtime.open_store("memory://")
    first = Session(agent=Agent(name="t", provider=scripted(["one"])), store=store,
                    runtime=runtime)
    await first.run("first")
    # what a server does on every message: a new object for the stored session
    second = Session(agent=Agent(name="t", provider=scripted(["two"])), store=store,
                     id=first.id, runtime=runtime)
    await second.run("second")
    assert [m.text for m in await store.load_messages(first.id)] == [
        "first", "one", "second", "two"
    ]
    # and the first object sees what the second one wrote
    await first.run("third")
    assert [m.text for m in first.history] == ["first", "one", "second", "two", "third", "one"]
