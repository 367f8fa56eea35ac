"""Which calls a ``wingspan_tool_call`` wrapper wraps (``wingspan_tool_call_applies``), and the
kernel's own caller of the wrappers of a run, held to what pluggy's caller does."""
from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import pytest

import wingspan
from wingspan import Agent, Session, ToolContext, ToolInvocation, ToolOutcome
from wingspan.loader import ToolCallChain
from wingspan.testing import make_runtime, scripted


@wingspan.tool
async def alpha(text: str) -> str:
    """Echo.

    :param text: what
    """
    return f"alpha {text}"


@wingspan.tool
async def beta(text: str, context: wingspan.ToolContext) -> str:
    """Echo, and say whether a wrapper wraps the call (only then can it emit).

    :param text: what
    """
    return f"beta {text} emit={context.emit is not None}"


class Recorder:
    """A wrapper noting the calls it wraps (its name, in and out), and what it was asked."""

    def __init__(self, name: str, log: list[str], applies: Any = None) -> None:
        self.name, self.log, self.applies = name, log, applies
        self.asked: list[tuple[Any, Any, str]] = []

    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(
        self, invocation: ToolInvocation, context: ToolContext
    ) -> Generator[None, Any, Any]:
        self.log.append(f"{self.name}>{invocation.tool.name}")
        try:
            return (yield)
        finally:
            self.log.append(f"{self.name}<{invocation.tool.name}")

    @wingspan.hookimpl
    def wingspan_tool_call_applies(self, agent: Agent, session: Session, run_id: str) -> Any:
        self.asked.append((agent, session, run_id))
        if isinstance(self.applies, BaseException):
            raise self.applies
        return self.applies


def calls(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "input": {"text": str(i)}} for i, name in enumerate(names)]


def session_of(runtime: wingspan.Runtime, script: list[Any]) -> Session:
    agent = Agent(name="a", provider=scripted(script), tools=[alpha, beta])
    return Session(agent=agent, runtime=runtime)


def outputs(result: wingspan.Result) -> list[str]:
    return [call.output for call in result.tool_calls]


async def test_a_plugin_that_steps_aside_wraps_no_call_of_the_run_and_is_asked_once() -> None:
    log: list[str] = []
    aside = Recorder("aside", log, applies=False)
    session = session_of(make_runtime(plugins=[("aside", aside)]),
                         [calls("alpha"), calls("alpha", "beta"), "done"])
    result = await session.run("go")
    assert outputs(result) == ["alpha 0", "alpha 0", "beta 1 emit=False"]
    assert log == []
    [(agent, seen, run_id)] = aside.asked  # once a run, with the run's agent, session and id
    assert (agent, seen, run_id) == (session.agent, session, result.run_id)


async def test_a_run_without_tool_calls_asks_nothing() -> None:
    aside = Recorder("aside", [], applies=False)
    await session_of(make_runtime(plugins=[("aside", aside)]), ["done"]).run("go")
    assert aside.asked == []


@pytest.mark.parametrize("applies", [True, None])
async def test_true_or_none_wraps_every_call(applies: bool | None) -> None:
    log: list[str] = []
    runtime = make_runtime(plugins=[("all", Recorder("all", log, applies=applies))])
    result = await session_of(runtime, [calls("alpha"), calls("beta"), "done"]).run("go")
    assert outputs(result) == ["alpha 0", "beta 0 emit=True"]
    assert log == ["all>alpha", "all<alpha", "all>beta", "all<beta"]


async def test_a_guard_picks_the_calls_its_wrapper_wraps() -> None:
    log: list[str] = []
    seen: list[tuple[str, Any]] = []

    def guard(tool: Any, input: Any) -> bool:
        seen.append((tool.name, dict(input)))
        return bool(tool.name == "beta")

    runtime = make_runtime(plugins=[("some", Recorder("some", log, applies=guard))])
    # one call alone, then two calls of one turn (the tool step's two paths)
    result = await session_of(runtime, [calls("alpha"), calls("beta"), calls("alpha", "beta"),
                                        "done"]).run("go")
    assert outputs(result) == ["alpha 0", "beta 0 emit=True", "alpha 0", "beta 1 emit=True"]
    assert log == ["some>beta", "some<beta", "some>beta", "some<beta"]
    assert seen == [("alpha", {"text": "0"}), ("beta", {"text": "0"}),
                    ("alpha", {"text": "0"}), ("beta", {"text": "1"})]


async def test_a_guard_is_not_asked_about_a_call_that_cannot_run() -> None:
    seen: list[str] = []
    runtime = make_runtime(plugins=[("g", Recorder("g", [], applies=lambda tool, input:
                                                   seen.append(tool.name) or True))])
    result = await session_of(runtime, [[{"name": "alpha", "input": {"text": 1}}],
                                        [{"name": "nope", "input": {}}], "done"]).run("go")
    assert [call.is_error for call in result.tool_calls] == [True, True]
    assert seen == []


async def test_a_failing_check_or_guard_wraps_the_calls(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    def guard(tool: Any, input: Any) -> bool:
        raise ValueError("guard broke")

    runtime = make_runtime(plugins=[("broken", Recorder("broken", log, applies=ValueError("x"))),
                                    ("guarded", Recorder("guarded", log, applies=guard))])
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"):
        result = await session_of(runtime, [calls("alpha"), "done"]).run("go")
    assert outputs(result) == ["alpha 0"]
    assert sorted(log) == ["broken<alpha", "broken>alpha", "guarded<alpha", "guarded>alpha"]
    [record] = [r for r in caplog.records if "wingspan_tool_call_applies" in r.getMessage()]
    assert "'broken'" in record.getMessage() and "ValueError: x" in record.getMessage()


async def test_wrappers_wrap_in_pluggys_order_less_those_left_out() -> None:
    log: list[str] = []
    first, second = Recorder("first", log), Recorder("second", log)
    third = Recorder("third", log, applies=lambda tool, input: tool.name == "alpha")
    runtime = make_runtime(plugins=[("first", first), ("second", second), ("third", third)])
    # What pluggy's own caller does with the three wrappers: the order to keep.
    invocation = ToolInvocation(tool=alpha, tool_use_id="t", input={"text": "x"})
    context = ToolContext(work_dir=None, session_id="s", run_id="r", tool_use_id="t")
    outcome = await runtime.hooks.wingspan_tool_call(invocation=invocation, context=context)
    assert outcome == ToolOutcome(content="alpha x")
    expected, log[:] = list(log), []
    assert expected == ["third>alpha", "second>alpha", "first>alpha",
                        "first<alpha", "second<alpha", "third<alpha"]
    await session_of(runtime, [calls("alpha"), calls("beta"), "done"]).run("go")
    assert log == [*expected, "second>beta", "first>beta", "first<beta", "second<beta"]


class Failing:
    """A wrapper going wrong in one of the ways pluggy tells apart."""

    def __init__(self, how: str) -> None:
        self.how = how

    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        if self.how == "raises":
            raise wingspan.ToolError("refused by failing")
        if self.how == "no yield":
            return None
        result = yield
        if self.how == "twice":
            yield
        return result


class Rescuing:
    """An outer wrapper turning a refusal by an inner one into an outcome of its own."""

    @wingspan.hookimpl(wrapper=True, tryfirst=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except wingspan.ToolError as exc:
            told = f"rescued: {exc}"

            async def rescued() -> ToolOutcome:
                return ToolOutcome(content=told)
            return rescued()


@pytest.mark.parametrize(("how", "rescued", "output"), [
    ("raises", False, "refused by failing"),
    ("raises", True, "rescued: refused by failing"),
    ("no yield", False, "did not yield"),
    ("twice", False, "yielded twice"),
])
async def test_a_wrapper_going_wrong_is_an_outcome_the_model_sees(
    how: str, rescued: bool, output: str
) -> None:
    plugins: list[tuple[str, object]] = [("failing", Failing(how))]
    if rescued:
        plugins.append(("rescuing", Rescuing()))
    runtime = make_runtime(plugins=plugins)
    [call] = (await session_of(runtime, [calls("alpha"), "done"]).run("go")).tool_calls
    assert output in call.output
    assert call.is_error is not rescued


class OldStyle:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    @wingspan.hookimpl(hookwrapper=True)
    def wingspan_tool_call(self, invocation: Any, context: Any) -> Generator[None, Any, None]:
        self.log.append("old>")
        yield
        self.log.append("old<")


async def test_an_old_style_wrapper_is_called_by_pluggy_and_the_others_still_step_aside() -> None:
    log: list[str] = []
    runtime = make_runtime(plugins=[("old", OldStyle(log)),
                                    ("aside", Recorder("aside", log, applies=False))])
    result = await session_of(runtime, [calls("alpha"), "done"]).run("go")
    assert outputs(result) == ["alpha 0"]
    assert log == ["old>", "old<"]


async def test_a_wrapper_registered_later_wraps_the_next_run() -> None:
    log: list[str] = []
    runtime = make_runtime()
    assert (await session_of(runtime, [calls("alpha"), "done"]).run("go")).tool_calls
    assert log == []
    runtime.plugin_manager.register(Recorder("late", log), name="late")
    await session_of(runtime, [calls("alpha"), "done"]).run("go")
    assert log == ["late>alpha", "late<alpha"]
    runtime.plugin_manager.unregister(name="late")
    await session_of(runtime, [calls("alpha"), "done"]).run("go")
    assert log == ["late>alpha", "late<alpha"]


class Unhashable(Recorder):
    __hash__ = None  # type: ignore[assignment]


async def test_plugin_objects_need_not_be_hashable() -> None:
    log: list[str] = []
    runtime = make_runtime(plugins=[("old", OldStyle(log)),
                                    ("odd", Unhashable("odd", log, applies=False))])
    result = await session_of(runtime, [calls("alpha"), "done"]).run("go")
    assert outputs(result) == ["alpha 0"]
    # pluggy's caller of every wrapper, since it cannot leave one out
    assert log == ["odd>alpha", "old>", "old<", "odd<alpha"]


def test_the_chain_of_no_wrapper_is_the_innermost_call() -> None:
    chain = ToolCallChain([], lambda invocation, context: (invocation, context))
    assert chain(1, 2) == (1, 2)


async def test_a_tool_whose_call_no_wrapper_wraps_cannot_emit() -> None:
    runtime = make_runtime(plugins=[("some", Recorder("some", [], applies=lambda tool, input:
                                                      tool.name == "alpha"))])
    result = await session_of(runtime, [calls("beta"), calls("alpha", "beta"), "done"]).run("go")
    assert outputs(result) == ["beta 0 emit=False", "alpha 0", "beta 1 emit=False"]
