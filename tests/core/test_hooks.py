"""Run-time hooks: observe events, rewrite requests, wrap tool calls."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Generator
from typing import Any

import attrs
import pytest

import wingspan
from wingspan import Agent, InferenceRequest, Runtime, Session, Settings, check_history
from wingspan.testing import make_runtime, scripted


@wingspan.tool
async def echo(text: str) -> str:
    """Echo text.

    :param text: what to echo
    """
    return text


def test_runtime_without_run_time_hooks_skips_them() -> None:
    # The built-in permissions plugin wraps every tool call; without it, nothing does.
    runtime = make_runtime(disable=["permissions"])
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


# --- wingspan_prepare_request: every implementation, in plugin order ------------------------


def appending(suffix: str, *, is_async: bool = False, **opts: Any) -> object:
    """A plugin whose wingspan_prepare_request appends ``suffix`` to the last message."""

    def rewrite(request: InferenceRequest) -> InferenceRequest:
        *earlier, last = request.messages
        message = wingspan.Message(
            role="user", content=(wingspan.TextBlock(text=f"{last.text} {suffix}"),)
        )
        return attrs.evolve(request, messages=(*earlier, message))

    if is_async:
        async def prepare(request: InferenceRequest, session: Session) -> InferenceRequest:
            return rewrite(request)
    else:
        def prepare(request: InferenceRequest, session: Session) -> InferenceRequest:
            return rewrite(request)

    prepare.__name__ = "wingspan_prepare_request"
    return type("Appending", (), {"wingspan_prepare_request": staticmethod(
        wingspan.hookimpl(**opts)(prepare))})()


class Keeper:
    """Keeps every request as it is (returns None), taking only the argument it needs."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @wingspan.hookimpl
    def wingspan_prepare_request(self, request: InferenceRequest) -> None:
        self.seen.append(request.messages[-1].text)


def echo_agent(runtime: Runtime) -> Agent:
    """An agent whose model answers with the last message it was sent."""
    provider = runtime.get_provider("test", {"script": lambda request: request.messages[-1].text})
    return Agent(name="echo", provider=provider)


async def test_every_prepare_request_runs_in_plugin_order_on_the_previous_result() -> None:
    keeper = Keeper()
    runtime = Runtime.from_settings(Settings(autoload=False), plugins=[
        ("one", appending("[1]")),
        ("keeper", keeper),
        ("two", appending("[2]", is_async=True)),  # may await (compaction calls a model)
        ("last", appending("[last]", trylast=True)),
        ("early", appending("[early]", tryfirst=True)),  # registered late, runs first
    ])
    session = Session(agent=echo_agent(runtime), runtime=runtime)
    result = await session.run("go")
    assert result.response == "go [early] [1] [2] [last]"
    assert keeper.seen == ["go [early] [1]"]
    assert session.history[0].text == "go"  # only what is sent is rewritten
    request = InferenceRequest(messages=(wingspan.Message(
        role="user", content=(wingspan.TextBlock(text="direct"),)),))
    prepared = await runtime.prepare_request(request, session)
    assert prepared.messages[-1].text == "direct [early] [1] [2] [last]"


async def test_prepare_request_returning_none_everywhere_keeps_the_request() -> None:
    runtime = make_runtime(plugins=[("keeper", Keeper())])
    request = InferenceRequest(messages=(wingspan.Message(
        role="user", content=(wingspan.TextBlock(text="same"),)),))
    session = Session(agent=echo_agent(runtime), runtime=runtime)
    assert await runtime.prepare_request(request, session) is request


class Failing:
    @wingspan.hookimpl
    def wingspan_prepare_request(self, request: InferenceRequest) -> None:
        raise KeyError("no summary model configured")


class Wrong:
    @wingspan.hookimpl
    async def wingspan_prepare_request(self, request: InferenceRequest) -> Any:
        return request.messages  # not a request


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [(Failing(), "plugin 'bad' failed in wingspan_prepare_request(): KeyError"),
     (Wrong(), "plugin 'bad': wingspan_prepare_request() returned tuple")],
)
async def test_a_failing_prepare_request_fails_the_run_naming_the_plugin(
    plugin: object, expected: str
) -> None:
    runtime = make_runtime(plugins=[("one", appending("[1]")), ("bad", plugin)])
    session = Session(agent=echo_agent(runtime), runtime=runtime)
    with pytest.raises(wingspan.PluginError) as caught:
        await session.run("go")
    assert caught.value.plugin == "bad" and expected in str(caught.value)
    assert isinstance(caught.value, wingspan.WingspanError)
    assert check_history(session.history) == []


# --- wingspan_event: observers cannot end a run ---------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @wingspan.hookimpl
    def wingspan_event(self, event: wingspan.StreamEvent) -> None:
        self.seen.append(event.type)


class Crashing:
    @wingspan.hookimpl
    def wingspan_event(self, event: wingspan.StreamEvent, session: Session) -> None:
        raise RuntimeError(f"cannot export {event.type}")


async def test_a_failing_observer_is_logged_and_the_run_and_other_observers_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, after = Recorder(), Recorder()
    runtime = make_runtime(plugins=[("before", before), ("crashing", Crashing()),
                                    ("after", after)])
    session = Session(agent=Agent(name="a", provider=scripted(
        [[{"name": "echo", "input": {"text": "hi"}}], "bye"]), tools=[echo]), runtime=runtime)
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"):
        yielded = [event.type async for event in session.stream("go")]
    assert yielded[-1] == "done" and before.seen == yielded == after.seen
    records = [r for r in caplog.records if getattr(r, "plugin", None) == "crashing"]
    # one failure per event; the 1st, 2nd, 4th, 8th... are logged, with their traceback
    logged = [n for n in range(1, len(yielded) + 1) if n & (n - 1) == 0]
    assert len(records) == len(logged) and len(records) < len(yielded)
    assert all(r.name == "wingspan.plugins" and r.levelno == logging.ERROR for r in records)
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in records)
    assert "plugin 'crashing' failed in wingspan_event()" in records[0].getMessage()
    assert check_history(session.history) == []


def test_observe_never_raises_and_closes_what_an_async_observer_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Async:
        @wingspan.hookimpl
        async def wingspan_event(self, event: wingspan.StreamEvent) -> None: ...

    recorder = Recorder()
    runtime = make_runtime(plugins=[("async", Async()), ("crashing", Crashing()),
                                    ("recorder", recorder)])
    session = Session(agent=echo_agent(runtime), runtime=runtime)
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"), warnings.catch_warnings():
        warnings.simplefilter("error")  # an un-awaited coroutine would warn
        runtime.observe(event=wingspan.Ping(), session=session)
        runtime.observe(wingspan.Ping(), session)
    assert recorder.seen == ["ping", "ping"]
    first = next(r for r in caplog.records if getattr(r, "plugin", None) == "async")
    assert "returned coroutine" in first.getMessage()


# --- late registrations are live ------------------------------------------------------------


async def test_a_plugin_registered_after_the_runtime_is_built_gets_its_run_time_hooks() -> None:
    runtime = make_runtime(disable=["permissions"])
    assert not (runtime.has_event_hook or runtime.has_prepare_request_hook
                or runtime.has_tool_call_hook)
    calls: list[str] = []

    class Late:
        @wingspan.hookimpl
        def wingspan_event(self, event: wingspan.StreamEvent) -> None:
            if event.type == "done":
                calls.append("done")

        @wingspan.hookimpl
        def wingspan_prepare_request(self, request: InferenceRequest) -> None:
            calls.append("prepare")

        @wingspan.hookimpl(wrapper=True)
        def wingspan_tool_call(
            self, invocation: wingspan.ToolInvocation
        ) -> Generator[None, Any, Any]:
            calls.append(f"tool {invocation.tool.name}")
            return (yield)

    late = Late()
    runtime.plugin_manager.register(late, name="late")
    assert runtime.has_event_hook and runtime.has_prepare_request_hook
    assert runtime.has_tool_call_hook
    session = Session(agent=Agent(name="a", provider=scripted(
        [[{"name": "echo", "input": {"text": "hi"}}], "bye"]), tools=[echo]), runtime=runtime)
    result = await session.run("go")
    assert result.tool_calls[0].output == "hi"
    assert calls == ["prepare", "tool echo", "prepare", "done"]
    runtime.plugin_manager.unregister(late)
    assert not (runtime.has_event_hook or runtime.has_prepare_request_hook
                or runtime.has_tool_call_hook)
    calls.clear()
    await session.run("again")
    assert calls == []


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
