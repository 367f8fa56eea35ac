"""The agent loop's state machine: where a run is between its steps, and its tool step.

A run is a sequence of steps decided by its :class:`RunState`: a **model step** (the
provider answers the history) while no tool call waits for its result, a **tool step**
(the calls of the last turn run, their results become the next user turn) while some do,
and **finish** once the model answered without calling a tool or the step limit is
reached. :meth:`Session.stream <wingspan.Session.stream>` drives it, emitting every event
through one place; a run can be entered at either step, from a stored history whose last
turn has tool calls without results (:meth:`RunState.enter`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .errors import ConfigError, WingspanError
from .providers import Accumulator
from .runs import RunFailed
from .tools import ToolContext, ToolInvocation, ToolOutcome, check_input, run_tool
from .types import (
    UNKNOWN_USAGE,
    Done,
    Message,
    RunStatus,
    StreamEvent,
    ToolCall,
    ToolResultBlock,
    ToolResultEvent,
    ToolUseBlock,
    Usage,
)

if TYPE_CHECKING:
    from .agent import Agent
    from .loader import ToolCalls
    from .runtime import Runtime
    from .session import Session

__all__ = ["RunState", "Step"]

#: What a run does next.
Step: TypeAlias = Literal["model", "tools", "finish"]


class RunState:
    """What a run carries from one step to the next, and what it does next (:attr:`step`).

    :ivar steps: model steps taken (the one in progress included).
    :ivar pending: the tool calls of the last turn, waiting for their results.
    :ivar outcomes: the outcomes of ``pending`` known so far, by position (a call still
        running is ``None``), so that an interrupted tool step keeps what finished.
    :ivar status: how the run ends (``"failed"`` until it completes or is aborted).
    """

    __slots__ = (
        "invalid",
        "outcomes",
        "pending",
        "response",
        "run_id",
        "status",
        "step",
        "steps",
        "stop_reason",
        "tool_calls",
        "usage",
    )

    def __init__(self, run_id: str, *, steps: int = 0) -> None:
        self.run_id = run_id
        self.steps = steps
        self.usage: Usage = UNKNOWN_USAGE  # a sum of counts, unknown until a call reports one
        self.tool_calls: list[ToolCall] = []
        self.response = ""
        self.stop_reason = "end_turn"
        self.status: RunStatus = "failed"
        self.pending: tuple[ToolUseBlock, ...] = ()
        #: the problem with each pending call's input that did not parse, by call id
        self.invalid: Mapping[str, str] = {}
        self.outcomes: list[ToolOutcome | None] = []
        #: The next step: ``"tools"`` while calls wait for results, else ``"model"``, and
        #: ``"finish"`` once the run is done.
        self.step: Step = "model"

    def enter(self, history: Sequence[Message]) -> None:
        """Start from ``history`` as it stands (a new run's user message is its last): with
        a model step after a user turn, with a tool step after an assistant turn whose tool
        calls have no results yet (a run entered again, e.g. once its calls are approved).

        :raises ConfigError: when there is nothing to continue (no history, or the model's
            answer is its last turn).
        """
        last = history[-1] if history else None
        if last is not None and last.role == "assistant":
            if not last.tool_uses:
                raise ConfigError("the history has nothing to continue: its last turn is the "
                                  "model's answer; send a message")
            self.pending = last.tool_uses
            self.outcomes = [None] * len(self.pending)
            self.step = "tools"
        elif last is None:
            raise ConfigError("the history has nothing to continue: it is empty; send a message")

    def end_model_step(self, accumulator: Accumulator) -> Message:
        """Take a model step's answer in: its usage and stop reason, its tool calls (then
        a tool step comes next), its text. :returns: the turn it made, to store."""
        response = accumulator.response()
        self.usage = self.usage + response.usage
        self.stop_reason = response.stop_reason
        pending = accumulator.tool_uses
        if accumulator.text or not pending:
            self.response = accumulator.text
        self.pending = pending
        self.invalid = accumulator.invalid_inputs if pending else {}
        self.outcomes = [None] * len(pending)
        self.step = "tools" if pending else "finish"
        return Message(role="assistant", content=response.content)

    def results(self) -> Message:
        """The user turn of a finished tool step: every pending call's result."""
        return results_message(self.pending, self.outcomes, "")

    def end_tool_step(self, max_steps: int) -> None:
        """Record a tool step whose results are stored; finish at the step limit."""
        for use, outcome in zip(self.pending, self.outcomes, strict=True):
            assert outcome is not None  # every call of a finished tool step has its outcome
            self.tool_calls.append(ToolCall(id=use.id, tool_name=use.name, input=use.input,
                                            output=outcome.content, is_error=outcome.is_error))
        self.pending, self.invalid, self.outcomes = (), {}, []
        if self.steps >= max_steps:
            self.stop_reason, self.step = "max_steps", "finish"
        else:
            self.step = "model"

    def done(self) -> Done:
        """The run's facts so far, as its terminal event."""
        return Done(usage=self.usage, steps=self.steps, response=self.response,
                    tool_calls=tuple(self.tool_calls), stop_reason=self.stop_reason,
                    run_id=self.run_id)


class ToolRunner:
    """A run's tool calls: the agent's tools, with the plugins' ``wingspan_tool_call``
    wrappers that apply to the run (looked up once a run), each call with its context.

    A wrapper may send events on the run's streams while its call runs
    (:attr:`ToolContext.emit`): the tool step yields them between the results."""

    __slots__ = ("agent", "answerable", "approve", "calls", "emitted", "looked_up", "run_data",
                 "run_id", "runtime", "session", "settings", "tool_map")

    def __init__(self, session: Session, run_id: str, agent: Agent, runtime: Runtime, *,
                 approve: Any = None, answerable: bool = False) -> None:
        self.session, self.run_id, self.agent = session, run_id, agent
        self.tool_map: Mapping[str, Any] = agent.tool_map
        self.settings = runtime.settings.tools
        self.runtime = runtime
        #: The wrappers of the run's calls (those applying to it), ``None`` without any:
        #: looked up at the first tool step (a run may have none).
        self.calls: ToolCalls | None = None
        self.looked_up = False
        self.approve, self.answerable = approve, answerable
        self.run_data: dict[str, Any] = {}
        #: Where the events a wrapper emits go until the tool step yields them (a queue's
        #: ``put_nowait``, a list's ``append``); ``None`` between tool steps.
        self.emitted: Callable[[Any], None] | None = None

    def context(self, tool_use_id: str, *, wrapped: bool = True) -> ToolContext:
        """The context of a call; ``emit`` only for a call wrappers wrap."""
        return ToolContext(
            work_dir=self.session.work_dir,
            session_id=self.session.id,
            run_id=self.run_id,
            tool_use_id=tool_use_id,
            settings=self.settings,
            agent=self.agent,
            store=self.session.store,
            emit=self._emit if wrapped else None,
            approve=self.approve,
            answerable=self.answerable,
            run_data=self.run_data,
            session_data=self.session.plugin_data,
        )

    def _emit(self, event: Any) -> None:
        if self.emitted is None:
            raise RuntimeError("ToolContext.emit is for a tool call while it runs")
        self.emitted(event)

    async def step(self, state: RunState) -> AsyncGenerator[StreamEvent, None]:
        """Run the pending calls, concurrently, yielding each result as it completes (and
        the events wrappers emit meanwhile), keeping each outcome in ``state.outcomes``;
        closed early, it cancels the calls still running and waits for them."""
        uses, invalid, outcomes = state.pending, state.invalid, state.outcomes
        if not self.looked_up:
            self.looked_up = True
            if self.tool_map:  # an agent without tools calls none (they are unknown tools)
                self.calls = self.runtime.tool_calls(self.agent, self.session, self.run_id)
        emitted: list[Any] = []
        if len(uses) == 1:  # the common case, without a task when nothing can emit
            use = uses[0]
            tool, known = self.check(use, invalid)
            caller = None
            if known is None and self.calls is not None:
                caller = self.calls.caller(tool, use.input)
            if caller is None:  # nothing to wrap, nothing can emit: the kernel's own call
                if known is None:
                    known = await self.direct(use, tool)
                outcomes[0] = known
                yield result_event(use, known)
                return
            # The wrappers' synchronous part runs here. What it gives runs in a task only if
            # something may emit while it runs, for this step to yield what it emits then:
            # not when it is the kernel's own call of a tool that gets no context (then no
            # wrapper's code runs meanwhile, nor does the tool see emit), nor when it only
            # raises what a wrapper raised.
            self.emitted = emitted.append
            try:
                awaitable = self.wrapped(use, tool, caller)
                code = getattr(awaitable, "cr_code", None)
                awaitable = self.finish(use, awaitable)
                if not emitted and (code is _RAISING or (
                        code is _RUN_TOOL and not getattr(tool, "takes_context", True))):
                    # Only an emit kept past the synchronous part (by a callback, another
                    # task) could come now: yielded after the call, not lost.
                    known = await awaitable
            finally:
                self.emitted = None
            if known is not None:
                for event in emitted:
                    yield event
                outcomes[0] = known
                yield result_event(use, known)
                return
            calls = [lambda: awaitable]  # what the synchronous part gave, awaited in a task
        else:
            calls = [functools.partial(self.call, use, invalid) for use in uses]
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for event in emitted:
            queue.put_nowait(event)
        self.emitted = queue.put_nowait

        async def run(position: int) -> None:
            try:
                outcome = await calls[position]()
            except Exception as exc:
                queue.put_nowait((position, exc))  # raised by the step
                return
            except BaseException as exc:
                queue.put_nowait((position, exc))
                raise
            queue.put_nowait((position, outcome))

        tasks = [asyncio.ensure_future(run(i)) for i in range(len(uses))]
        try:
            if emitted:
                # The call starts before the events of its synchronous part are yielded:
                # closed at one, the step cancels a call that began, never drops one unawaited.
                await asyncio.sleep(0)
            left = len(uses)
            while left:
                item = await queue.get()
                if type(item) is not tuple:
                    yield item  # an event a wrapper emitted
                    continue
                position, outcome = item
                if isinstance(outcome, BaseException):
                    raise outcome
                outcomes[position] = outcome
                left -= 1
                yield result_event(uses[position], outcome)
        finally:
            self.emitted = None
            running = [task for task in tasks if not task.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def check(self, use: ToolUseBlock,
              invalid_inputs: Mapping[str, str]) -> tuple[Any, ToolOutcome | None]:
        """The tool a call names, or the reason it cannot run (an unknown tool, an invalid
        input) as the ``is_error`` outcome the model sees."""
        if use.id in invalid_inputs:
            return None, ToolOutcome(content=invalid_inputs[use.id], is_error=True)
        tool = self.tool_map.get(use.name)
        if tool is None:
            available = ", ".join(sorted(self.tool_map)) or "none"
            return None, ToolOutcome(
                content=f"unknown tool {use.name!r}; the tools available are: {available}",
                is_error=True,
            )
        problem = check_input(tool, use.input)
        if problem is not None:
            return None, ToolOutcome(content=problem, is_error=True)
        return tool, None

    def wrapped(self, use: ToolUseBlock, tool: Any, caller: Any) -> Any:
        """The wrappers' synchronous part: the awaitable they give, or, when one raised,
        an awaitable raising it (:meth:`finish` turns both into an outcome)."""
        try:
            return caller(
                invocation=ToolInvocation(tool=tool, tool_use_id=use.id, input=use.input),
                context=self.context(use.id),
            )
        except Exception as exc:
            return _raising(exc)

    def direct(self, use: ToolUseBlock, tool: Any) -> Awaitable[ToolOutcome]:
        """The kernel's own call of a tool no wrapper wraps (its failures are outcomes)."""
        # A tool that says it takes no context does not get one built for each call.
        context = (self.context(use.id, wrapped=False) if getattr(tool, "takes_context", True)
                   else None)
        return run_tool(tool, dict(use.input), context)  # type: ignore[arg-type]

    async def finish(self, use: ToolUseBlock, awaitable: Any) -> ToolOutcome:
        """The outcome of what the wrappers gave; what a plugin gets wrong is an
        ``is_error`` outcome the model sees."""
        try:
            outcome = await awaitable
        except RunFailed:
            raise  # a wrapper ends the run (e.g. a call needs an answer nobody can give)
        except WingspanError as exc:
            return ToolOutcome(content=str(exc), is_error=True)
        except Exception as exc:
            return ToolOutcome(
                content=f"tool {use.name!r} failed in a plugin hook: {type(exc).__name__}: {exc}",
                is_error=True,
            )
        if not isinstance(outcome, ToolOutcome):
            return ToolOutcome(content=str(outcome))
        return outcome

    async def call(self, use: ToolUseBlock, invalid_inputs: Mapping[str, str]) -> ToolOutcome:
        """One call's outcome; what goes wrong (an unknown tool, an invalid input, a
        plugin's failure) is an ``is_error`` outcome the model sees, not an exception."""
        tool, outcome = self.check(use, invalid_inputs)
        if outcome is not None:
            return outcome
        caller = None if self.calls is None else self.calls.caller(tool, use.input)
        if caller is None:
            return await self.direct(use, tool)
        return await self.finish(use, self.wrapped(use, tool, caller))


#: The code of the kernel's innermost ``wingspan_tool_call`` coroutines.
_RUN_TOOL = run_tool.__code__


async def _raising(exc: Exception) -> Any:
    raise exc


_RAISING = _raising.__code__


def results_message(
    uses: Sequence[ToolUseBlock], outcomes: Sequence[ToolOutcome | None], missing: str
) -> Message:
    """The tool results of a batch; a call without an outcome gets ``missing`` as an error."""
    return Message(role="user", content=tuple([
        ToolResultBlock(tool_use_id=use.id, content=missing, is_error=True)
        if outcome is None
        else ToolResultBlock(tool_use_id=use.id, content=outcome.content,
                             is_error=outcome.is_error)
        for use, outcome in zip(uses, outcomes, strict=True)
    ]))


def result_event(use: ToolUseBlock, outcome: ToolOutcome) -> ToolResultEvent:
    return ToolResultEvent(
        tool_use_id=use.id, tool_name=use.name, content=outcome.content, is_error=outcome.is_error
    )
