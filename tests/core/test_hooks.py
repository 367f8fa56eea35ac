"""Run-time hooks: observe events, rewrite requests, wrap tool calls."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

import wingspan
from wingspan import Agent, Session, check_history
from wingspan.testing import make_runtime, scripted


@wingspan.tool
async def echo(text: str) -> str:
    """Echo text.

    :param text: what to echo
    """
    return text


def test_runtime_without_run_time_hooks_skips_them() -> None:
    runtime = make_runtime()
    assert not (runtime.has_event_hook or runtime.has_prepare_request_hook
                or runtime.has_tool_call_hook)


async def test_event_hook_sees_every_event_in_order() -> None:
    seen: list[str] = []

    class Observer:
        @wingspan.hookimpl
        def wingspan_event(self, event: wingspan.StreamEvent, session: Session) -> None:
            seen.append(event.type)

    runtime = make_runtime(plugins=[("observer", Observer())])
    session = Session(agent=Agent(name="a", provider=scripted(
        [[{"name": "echo", "input": {"text": "hi"}}], "bye"]), tools=[echo]), runtime=runtime)
    yielded = [e.type async for e in session.stream("go")]
    assert seen == yielded and seen[-1] == "done" and "tool_result" in seen


async def test_prepare_request_can_rewrite_the_request() -> None:
    class Redactor:
        @wingspan.hookimpl
        def wingspan_prepare_request(
            self, request: wingspan.InferenceRequest, session: Session
        ) -> wingspan.InferenceRequest:
            last = request.messages[-1]
            text = last.text.replace("secret", "[redacted]")
            message = wingspan.Message(role="user", content=(wingspan.TextBlock(text=text),))
            return wingspan.InferenceRequest(messages=(*request.messages[:-1], message),
                                             tools=request.tools)

    runtime = make_runtime(plugins=[("redactor", Redactor())])
    session = Session(agent=Agent(name="a", provider=runtime.get_provider("test", {})),
                      runtime=runtime)
    result = await session.run("my secret is 42")
    assert result.response.endswith("my [redacted] is 42")
    assert session.history[0].text == "my secret is 42"  # history keeps what was said


async def test_tool_call_wrapper_can_refuse_and_time_calls() -> None:
    timings: list[tuple[str, float]] = []

    class Guard:
        @wingspan.hookimpl(wrapper=True)
        def wingspan_tool_call(
            self, invocation: wingspan.ToolInvocation, context: wingspan.ToolContext
        ) -> Generator[None, Any, Any]:
            if invocation.input.get("text") == "forbidden":
                raise wingspan.ToolError("echoing 'forbidden' is not allowed here")
            outcome = yield

            async def timed() -> wingspan.ToolOutcome:
                start = time.perf_counter()
                try:
                    return await outcome
                finally:
                    timings.append((invocation.tool.name, time.perf_counter() - start))

            return timed()

    runtime = make_runtime(plugins=[("guard", Guard())])
    assert runtime.has_tool_call_hook
    session = Session(agent=Agent(name="a", provider=scripted([
        [{"name": "echo", "input": {"text": "forbidden"}},
         {"name": "echo", "input": {"text": "ok"}}],
        "done",
    ]), tools=[echo]), runtime=runtime)
    result = await session.run("go")
    refused, allowed = result.tool_calls
    assert refused.is_error and "not allowed" in refused.output
    assert (allowed.is_error, allowed.output) == (False, "ok")
    assert [name for name, _ in timings] == ["echo"]
    assert check_history(session.history) == []


@pytest.mark.parametrize("options", [{"script": "not a list"}, {"script": []},
                                     {"script": [{"text": 1}]}, {"chunk_size": 0}])
def test_test_provider_rejects_bad_scripts(options: dict[str, Any]) -> None:
    with pytest.raises(wingspan.ConfigError, match="test provider"):
        make_runtime().get_provider("test", options)


async def test_test_provider_accepts_a_callable_script() -> None:
    def turn(request: wingspan.InferenceRequest) -> Any:
        return f"you said {request.messages[-1].text!r} after {len(request.messages)} messages"

    session = Session(agent=Agent(name="a", provider=scripted(turn)), runtime=make_runtime())
    assert (await session.run("hi")).response == "you said 'hi' after 1 messages"
    assert (await session.run("yo")).response == "you said 'yo' after 3 messages"


async def test_test_provider_is_deterministic_per_run() -> None:
    provider = scripted([[{"name": "echo", "input": {"text": "a"}}], "first", "second"])
    agent = Agent(name="a", provider=provider, tools=[echo])
    session = Session(agent=agent, runtime=make_runtime())
    first = await session.run("one")
    second = await session.run("two")
    # turn i answers step i of each run, so both runs are the same
    assert (first.response, first.steps) == (second.response, second.steps) == ("first", 2)
