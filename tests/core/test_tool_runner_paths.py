"""The tool step's two paths with a wrapper hook: a single call awaited directly when nothing
can emit while it runs, and through a task when something may (events a wrapper emits are
yielded while the call runs, cancellation and closing reach the call, nothing is lost)."""
from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Generator
from typing import Any

import pytest

import wingspan
from wingspan import Agent, Session
from wingspan.testing import make_runtime, scripted


@wingspan.tool
async def echo(text: str) -> str:
    """Echo.

    :param text: what
    """
    return text


gate: asyncio.Event | None = None


@wingspan.tool
async def slow(text: str) -> str:
    """Wait for the gate.

    :param text: what
    """
    assert gate is not None
    await gate.wait()
    return text


@wingspan.tool
async def chatty(text: str, context: wingspan.ToolContext) -> str:
    """Emits while it runs.

    :param text: what
    """
    assert context.emit is not None
    context.emit(wingspan.TextDelta(text="from-tool", index=9))
    assert gate is not None
    await gate.wait()
    return text


def agent(script: list[Any], tools: list[Any]) -> Agent:
    return Agent(name="a", provider=scripted(script), tools=tools)


class SyncEmitter:
    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        context.emit(wingspan.TextDelta(text="before", index=7))
        return (yield)


class AsyncEmitter:
    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        call = yield

        async def around() -> Any:
            context.emit(wingspan.TextDelta(text="waiting", index=8))
            assert gate is not None
            await gate.wait()
            return await call

        return around()


class Raiser:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        raise self.exc
        yield


async def events_of(session: Session, message: str) -> list[Any]:
    return [e async for e in session.stream(message)]


async def test_sync_part_emit_is_streamed_before_the_result() -> None:
    runtime = make_runtime(plugins=[("se", SyncEmitter())])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": "hi"}}], "done"], [echo]),
                      runtime=runtime)
    events = await asyncio.wait_for(events_of(session, "go"), 5)
    kinds = [(type(e).__name__, getattr(e, "text", None)) for e in events]
    i = kinds.index(("TextDelta", "before"))
    j = [k for k, _ in kinds].index("ToolResultEvent")
    assert i < j
    assert events[-1].tool_calls[0].output == "hi"


async def test_wrapper_coroutine_emits_while_waiting() -> None:
    global gate
    gate = asyncio.Event()
    runtime = make_runtime(plugins=[("ae", AsyncEmitter())])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": "hi"}}], "done"], [echo]),
                      runtime=runtime)
    seen = []
    async with asyncio.timeout(5):
        async for e in session.stream("go"):
            seen.append(e)
            if getattr(e, "text", None) == "waiting":
                gate.set()  # only reachable if the event came while the call waits
    assert seen[-1].tool_calls[0].output == "hi"


class Passing:
    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        return (yield)


async def test_a_tool_with_context_emits_while_it_runs() -> None:
    global gate
    gate = asyncio.Event()
    runtime = make_runtime(plugins=[("passing", Passing())])  # a wrapper wraps the call
    session = Session(agent=agent([[{"name": "chatty", "input": {"text": "hi"}}], "done"],
                                  [chatty]), runtime=runtime)
    seen = []
    async with asyncio.timeout(5):
        async for e in session.stream("go"):
            seen.append(e)
            if getattr(e, "text", None) == "from-tool":
                gate.set()
    assert seen[-1].tool_calls[0].output == "hi"


async def test_wrapper_errors() -> None:
    runtime = make_runtime(plugins=[("r", Raiser(ValueError("boom")))])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": "hi"}}], "done"], [echo]),
                      runtime=runtime)
    result = await session.run("go")
    assert result.tool_calls[0].is_error
    assert "failed in a plugin hook: ValueError: boom" in result.tool_calls[0].output
    runtime = make_runtime(plugins=[("r", Raiser(wingspan.ToolError("nope")))])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": "hi"}}], "done"], [echo]),
                      runtime=runtime)
    result = await session.run("go")
    assert result.tool_calls[0].output == "nope" and result.tool_calls[0].is_error


async def test_deny_rule_direct() -> None:
    runtime = make_runtime()
    a = Agent(name="a", provider=scripted([[{"name": "echo", "input": {"text": "hi"}}], "done"]),
              tools=[echo], permissions=[{"tool": "echo", "action": "deny"}])
    result = await Session(agent=a, runtime=runtime).run("go")
    assert result.tool_calls[0].is_error and "permission denied" in result.tool_calls[0].output


async def test_closing_at_a_sync_part_event_leaves_nothing_unawaited() -> None:
    runtime = make_runtime(plugins=[("se", SyncEmitter())])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": "hi"}}], "done"], [echo]),
                      runtime=runtime)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = session.stream("go")
        async for e in stream:
            if getattr(e, "text", None) == "before":
                break
        await stream.aclose()
        gc.collect()
        await asyncio.sleep(0.01)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught


async def test_cancelling_a_direct_slow_call() -> None:
    global gate
    gate = asyncio.Event()
    runtime = make_runtime()
    session = Session(agent=agent([[{"name": "slow", "input": {"text": "hi"}}], "done"], [slow]),
                      runtime=runtime)
    task = asyncio.ensure_future(session.run("go"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_calls_with_hook_keep_positions() -> None:
    runtime = make_runtime(plugins=[("se", SyncEmitter())])
    session = Session(agent=agent([[{"name": "echo", "input": {"text": str(i)}} for i in range(5)],
                                   "done"], [echo]), runtime=runtime)
    events = await asyncio.wait_for(events_of(session, "go"), 5)
    assert [c.output for c in events[-1].tool_calls] == [str(i) for i in range(5)]
    assert sum(1 for e in events if getattr(e, "text", None) == "before") == 5


async def test_ask_with_approve_streams_request_then_resolution() -> None:
    runtime = make_runtime()
    a = Agent(name="a", provider=scripted([[{"name": "echo", "input": {"text": "hi"}}], "done"]),
              tools=[echo], permissions=[{"tool": "echo", "action": "ask"}])
    answered = asyncio.Event()

    async def approve(request: Any) -> str:
        await answered.wait()
        return "allow"

    seen = []
    async with asyncio.timeout(5):
        async for e in Session(agent=a, runtime=runtime).stream("go", approve=approve):
            seen.append(type(e).__name__)
            if type(e).__name__ == "PermissionRequested":
                answered.set()  # reachable only while the call waits
    assert seen.index("PermissionRequested") < seen.index("PermissionResolved") < seen.index(
        "ToolResultEvent")
