"""Loop overhead: microseconds per agent step, wingspan next to a floor and its peers.

A step is one model call plus one tool call. Every framework is driven by the same fake
model, built on that framework's own extension point for custom models: for steps 1..N-1
it asks for one call of an async ``add(a, b)`` tool, and at step N it answers with text.
The fake models are zero-latency, touch no network and report the same token usage, so
what is left is the framework's own cost: building requests, keeping history, running the
tool, assembling the result.

The floor is the least any loop can do: a plain async loop that appends dicts to a list
and awaits the model and the tool function.

wingspan runs with its built-in plugins, of which ``permissions`` wraps every tool call; its
cost for an allowed call is measured by three rows: the plugin disabled, enabled without
rules, and enabled with 20 allow rules (:data:`ALLOW_RULES`, :data:`AGENT_ALLOW_RULES`).
The floor and wingspan's rows take turns, sample by sample, so that their ratios hold on a
machine that is busy now and then.

Peers that are not installed are reported as such (``pip install -r bench/requirements.txt``
into ``bench/.venv``). Run from the repository root::

    bench/.venv/bin/python bench/loop_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wingspan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

RUN_LENGTHS = (1, 10, 100)
RESULTS = Path(__file__).resolve().parent / "results" / "loop_overhead.md"
TARGET_US = 20.0
INSTRUCTIONS = "You add numbers with the add tool."
PROMPT = "Add some numbers."
FINAL_TEXT = "All numbers added."
INPUT_TOKENS = 10
OUTPUT_TOKENS = 5


# -------------------------------------------------------------------------------------------
# The fake model's behaviour, shared by every framework
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call the fake model asks for: its id and its input as JSON text."""

    id: str
    arguments: str


class Script:
    """What the fake model answers: a call of ``add`` for steps 1..N-1, then text.

    The model call counter is reset before every run, so each framework's fake model is a
    few attribute operations: no history scan, no parsing, no I/O.
    """

    __slots__ = ("_calls", "_made", "steps")

    def __init__(self, longest: int) -> None:
        # The same JSON text a model API would send; each framework parses it once.
        self._calls = tuple(
            Call(id=f"call_{step}", arguments=json.dumps({"a": step, "b": 1}))
            for step in range(1, longest)
        )
        self.steps = 1
        self._made = 0

    def reset(self, steps: int) -> None:
        """Start a run of ``steps`` model calls."""
        self.steps = steps
        self._made = 0

    def next_call(self) -> Call | None:
        """The tool call of the next model call, or ``None`` when it answers with text."""
        self._made += 1
        if self._made >= self.steps:
            return None
        return self._calls[self._made - 1]


async def add_numbers(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@dataclass(frozen=True, slots=True)
class Adapter:
    """One framework, ready to run.

    :ivar run: one whole run of ``steps`` steps; returns the framework's result.
    :ivar describe: the final text and the number of tool calls a result reports, to check
        that the framework really ran the loop it is timed on.
    """

    run: Callable[[int], Awaitable[Any]]
    describe: Callable[[Any], Awaitable[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class Framework:
    name: str
    distribution: str | None
    build: Callable[[Script], Adapter]


# -------------------------------------------------------------------------------------------
# The floor: a plain loop
# -------------------------------------------------------------------------------------------


def build_floor(script: Script) -> Adapter:
    async def model(messages: list[dict[str, Any]]) -> dict[str, Any]:
        call = script.next_call()
        if call is None:
            return {"role": "assistant", "content": FINAL_TEXT}
        return {"role": "assistant", "tool_call": {"id": call.id, "arguments": call.arguments}}

    async def run(steps: int) -> list[dict[str, Any]]:
        script.reset(steps)
        messages: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
        while True:
            reply = await model(messages)
            messages.append(reply)
            call = reply.get("tool_call")
            if call is None:
                return messages
            output = await add_numbers(**json.loads(call["arguments"]))
            messages.append({"role": "tool", "id": call["id"], "content": str(output)})

    async def describe(messages: list[dict[str, Any]]) -> tuple[str, int]:
        calls = sum(1 for m in messages if m["role"] == "tool")
        return messages[-1]["content"], calls

    return Adapter(run=run, describe=describe)


# -------------------------------------------------------------------------------------------
# wingspan
# -------------------------------------------------------------------------------------------


@wingspan.tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@wingspan.tool(name="add")
def add_sync(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@wingspan.tool(name="add", blocking=False)
def add_inline(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# Events that carry nothing specific to a call are immutable values: a provider, like this
# one, can build them once. Everything that depends on the call is built per call.
MESSAGE_START = wingspan.MessageStart()
MESSAGE_STOP = wingspan.MessageStop()
BLOCK_STOP = wingspan.ContentBlockStop(index=0)


class ScriptedProvider:
    """A zero-latency wingspan provider streaming the script's turns as kernel events."""

    def __init__(self, script: Script) -> None:
        self._script = script

    async def stream(
        self, request: wingspan.InferenceRequest
    ) -> AsyncIterator[wingspan.StreamEvent]:
        call = self._script.next_call()
        usage = wingspan.Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        yield MESSAGE_START
        if call is None:
            yield wingspan.ContentBlockStart(index=0, content_block=wingspan.TextStart())
            yield wingspan.TextDelta(text=FINAL_TEXT, index=0)
            yield BLOCK_STOP
            yield wingspan.MessageDelta(stop_reason="end_turn", usage=usage)
        else:
            head = wingspan.ToolUseStart(id=call.id, name="add")
            yield wingspan.ContentBlockStart(index=0, content_block=head)
            yield wingspan.InputJsonDelta(partial_json=call.arguments, index=0)
            yield BLOCK_STOP
            yield wingspan.MessageDelta(stop_reason="tool_use", usage=usage)
        yield MESSAGE_STOP


# The realistic worst case of an allowed call: an allow list (the default is ask) of 20
# rules, each with a pattern on the subject, all naming tools `add` is one of, so that each
# needs the call's subject (its input as JSON for `add`). The one that matches is the first,
# the last one `decide` looks at, and of the costliest shape to match (a character class:
# a regular expression, where `git *`, `*.env` or `*secret*` take a string method). Half
# are the runtime's (the server's configuration), half the agent's.
ALLOW_RULES = (
    {"tool": "*", "match": '{"a":[0-9]*', "action": "allow"},
    *(
        {"tool": tool, "match": match, "action": "allow"}
        for tool, match in [
            ("*", "*rm -rf*"), ("a*", "/etc/*"), ("add", "*.env"), ("*", "*/.git/*"),
            ("[a]dd", "https://*.internal/*"), ("*", "sudo *"), ("ad?", "*secret*"),
            ("*", "~/.ssh/*"), ("add", '{"a":-*'),
        ]
    ),
)
AGENT_ALLOW_RULES = tuple(
    {"tool": tool, "match": match, "action": "allow"}
    for tool, match in [
        ("*", "curl *"), ("add", "*password*"), ("a*", "*.pem"), ("*", "git push*"),
        ("add", '{"b":*'), ("*", "*DROP TABLE*"), ("[a]*", "/var/*"), ("*", "*..*"),
        ("add", "*token*"), ("*", "chmod *"),
    ]
)


def build_wingspan(
    script: Script,
    tool: wingspan.Tool = add,
    *,
    permissions: bool = True,
    rules: tuple[dict[str, str], ...] = (),
    agent_rules: tuple[dict[str, str], ...] = (),
) -> Adapter:
    # An isolated runtime with only the built-in plugins. Of those, only `permissions` has a
    # run-time hook (it wraps every tool call); disabled, none has. Its rules are an allow
    # list: a call no rule allows is asked about, so the rules decide every call.
    extra = {"permissions": {"rules": list(rules), "default": "ask"}} if rules else {}
    runtime = wingspan.Runtime.from_settings(wingspan.Settings(
        autoload=False, disable=() if permissions else ("permissions",), extra=extra,
    ))
    assert runtime.has_tool_call_hook == permissions
    agent = wingspan.Agent(
        name="bench",
        provider=ScriptedProvider(script),
        instructions=INSTRUCTIONS,
        tools=[tool],
        max_steps=max(RUN_LENGTHS) + 1,
        permissions=list(agent_rules),
    )

    async def run(steps: int) -> wingspan.Result:
        script.reset(steps)
        session = wingspan.Session(agent=agent, runtime=runtime)
        return await session.run(PROMPT)

    async def describe(result: wingspan.Result) -> tuple[str, int]:
        return result.response, sum(1 for call in result.tool_calls if not call.is_error)

    return Adapter(run=run, describe=describe)


# -------------------------------------------------------------------------------------------
# pydantic-ai: FunctionModel
# -------------------------------------------------------------------------------------------


def build_pydantic_ai(script: Script) -> Adapter:
    from pydantic_ai import Agent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage, UsageLimits

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        call = script.next_call()
        usage = RequestUsage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        if call is None:
            return ModelResponse(parts=[TextPart(FINAL_TEXT)], usage=usage)
        part = ToolCallPart(tool_name="add", args=call.arguments, tool_call_id=call.id)
        return ModelResponse(parts=[part], usage=usage)

    agent = Agent(FunctionModel(respond), instructions=INSTRUCTIONS)
    agent.tool_plain(name="add")(add_numbers)
    limits = UsageLimits(request_limit=None)

    async def run(steps: int) -> Any:
        script.reset(steps)
        return await agent.run(PROMPT, usage_limits=limits)

    async def describe(result: Any) -> tuple[str, int]:
        returns = [
            part
            for message in result.all_messages()
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        return result.output, len(returns)

    return Adapter(run=run, describe=describe)


# -------------------------------------------------------------------------------------------
# openai-agents: a custom Model subclass
# -------------------------------------------------------------------------------------------


def build_openai_agents(script: Script) -> Adapter:
    from agents import Agent, RunConfig, Runner, ToolCallOutputItem, Usage, function_tool
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class ScriptedModel(Model):
        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            call = script.next_call()
            usage = Usage(
                requests=1,
                input_tokens=INPUT_TOKENS,
                output_tokens=OUTPUT_TOKENS,
                total_tokens=INPUT_TOKENS + OUTPUT_TOKENS,
            )
            item: ResponseOutputMessage | ResponseFunctionToolCall
            if call is None:
                text = ResponseOutputText(type="output_text", text=FINAL_TEXT, annotations=[])
                item = ResponseOutputMessage(
                    id="msg_final",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[text],
                )
            else:
                item = ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{call.id}",
                    call_id=call.id,
                    name="add",
                    arguments=call.arguments,
                )
            return ModelResponse(output=[item], usage=usage, response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise NotImplementedError("the benchmark runs Runner.run, which does not stream")

    agent = Agent(
        name="bench",
        instructions=INSTRUCTIONS,
        model=ScriptedModel(),
        tools=[function_tool(add_numbers, name_override="add")],
    )
    # Tracing would export spans to OpenAI's servers: the benchmark sends nothing anywhere.
    config = RunConfig(tracing_disabled=True)

    async def run(steps: int) -> Any:
        script.reset(steps)
        return await Runner.run(agent, PROMPT, max_turns=steps + 1, run_config=config)

    async def describe(result: Any) -> tuple[str, int]:
        outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
        return result.final_output, len(outputs)

    return Adapter(run=run, describe=describe)


# -------------------------------------------------------------------------------------------
# llm (simonw/llm): a plugin model registered in-process
# -------------------------------------------------------------------------------------------

LLM_MODEL_ID = "wingspan-bench-scripted"


def build_llm(script: Script) -> Adapter:
    import llm
    from llm.plugins import pm

    class ScriptedAsyncModel(llm.AsyncModel):
        model_id = LLM_MODEL_ID
        can_stream = True
        supports_tools = True

        async def execute(  # type: ignore[override]
            self, prompt: Any, stream: bool, response: Any, conversation: Any
        ) -> AsyncIterator[str]:
            call = script.next_call()
            response.set_usage(input=INPUT_TOKENS, output=OUTPUT_TOKENS)
            if call is None:
                yield FINAL_TEXT
                return
            # llm plugins hand llm the arguments already parsed.
            arguments = json.loads(call.arguments)
            response.add_tool_call(
                llm.ToolCall(name="add", arguments=arguments, tool_call_id=call.id)
            )

    class ScriptedModel(llm.Model):
        """The sync twin llm's registry requires; the benchmark uses the async model."""

        model_id = LLM_MODEL_ID
        supports_tools = True

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the benchmark uses the async model")

    class ScriptedPlugin:
        @llm.hookimpl
        def register_models(self, register: Callable[..., None]) -> None:
            register(ScriptedModel(), ScriptedAsyncModel())

    if not pm.has_plugin("wingspan-bench"):
        pm.register(ScriptedPlugin(), name="wingspan-bench")
    model = llm.get_async_model(LLM_MODEL_ID)
    tools = [llm.Tool.function(add_numbers, name="add")]  # type: ignore[no-untyped-call]

    async def run(steps: int) -> Any:
        script.reset(steps)
        chain = model.chain(PROMPT, system=INSTRUCTIONS, tools=tools)
        await chain.text()
        return chain

    async def describe(chain: Any) -> tuple[str, int]:
        text = "".join([await response.text() for response in chain._responses])
        results = sum(len(r.prompt.tool_results or ()) for r in chain._responses)
        return text, results

    return Adapter(run=run, describe=describe)


#: The rows the permissions ratios compare: plugin disabled, enabled without rules, with
#: 20 allow rules (:data:`ALLOW_RULES`, :data:`AGENT_ALLOW_RULES`).
NO_PERMISSIONS = "wingspan, permissions disabled"
NO_RULES = "wingspan"
ALLOW_20 = "wingspan, 20 allow rules"
PERMISSIONS_TARGET = 1.2

FRAMEWORKS = (
    Framework("floor (plain loop)", None, build_floor),
    Framework(NO_PERMISSIONS, "wingspan", functools.partial(build_wingspan, permissions=False)),
    Framework(NO_RULES, "wingspan", build_wingspan),
    Framework(ALLOW_20, "wingspan", functools.partial(
        build_wingspan, rules=ALLOW_RULES, agent_rules=AGENT_ALLOW_RULES)),
    # The same loop with a sync `def add`: in a worker thread (the default), then inline.
    Framework("wingspan, sync tool", "wingspan", functools.partial(build_wingspan, tool=add_sync)),
    Framework("wingspan, sync tool, blocking=False", "wingspan",
              functools.partial(build_wingspan, tool=add_inline)),
    Framework("llm", "llm", build_llm),
    Framework("pydantic-ai", "pydantic-ai-slim", build_pydantic_ai),
    Framework("openai-agents", "openai-agents", build_openai_agents),
)


# -------------------------------------------------------------------------------------------
# Measuring
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    #: timed samples per cell; the cell's value is their median.
    samples: int
    #: about how long one sample runs (whole runs, at least one).
    sample_seconds: float
    #: steps run before timing, so caches and the interpreter's specialisations are warm.
    warmup_steps: int = 400


@dataclass(frozen=True, slots=True)
class Measurement:
    framework: str
    version: str | None
    #: run length -> median microseconds per step; empty when not installed.
    per_step_us: dict[int, float]
    note: str = ""
    #: run length -> the samples, in the order taken (sample i of every row in one round).
    samples: dict[int, list[float]] = field(default_factory=dict)


async def measure(
    adapters: list[Adapter], steps: int, settings: Settings
) -> list[list[float]]:
    """Microseconds per step of each adapter in ``settings.samples`` samples of whole runs,
    the adapters taking turns sample by sample (so that a busy moment of the machine slows
    them alike, and their ratios hold)."""
    runs_per_sample = []
    for adapter in adapters:
        for _ in range(max(3, settings.warmup_steps // steps)):
            await adapter.run(steps)
        start = time.perf_counter()
        text, calls = await adapter.describe(await adapter.run(steps))
        one_run = time.perf_counter() - start
        if text != FINAL_TEXT or calls != steps - 1:
            raise RuntimeError(
                f"the run did not go as scripted: {calls} tool calls (expected {steps - 1}), "
                f"final text {text!r}"
            )
        runs_per_sample.append(max(1, round(settings.sample_seconds / one_run)))
    timings: list[list[float]] = [[] for _ in adapters]
    for _ in range(settings.samples):
        for adapter, runs, samples in zip(adapters, runs_per_sample, timings, strict=True):
            gc.collect()
            start_ns = time.perf_counter_ns()
            for _ in range(runs):
                await adapter.run(steps)
            elapsed_ns = time.perf_counter_ns() - start_ns
            samples.append(elapsed_ns / 1000 / (runs * steps))
    return timings


async def measure_frameworks(
    frameworks: list[Framework], settings: Settings
) -> list[Measurement]:
    """Each framework's row, those installed measured together (:func:`measure`)."""
    versions: dict[str, str | None] = {}
    adapters = []
    for framework in frameworks:
        version = None
        if framework.distribution is not None:
            try:
                version = importlib.metadata.version(framework.distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        versions[framework.name] = version
        adapters.append(framework.build(Script(max(RUN_LENGTHS))))
    measured = [f for f in frameworks if f.name in versions]
    samples: dict[str, dict[int, list[float]]] = {f.name: {} for f in measured}
    for steps in RUN_LENGTHS:
        for framework, taken in zip(
            measured, await measure(adapters, steps, settings), strict=True
        ):
            samples[framework.name][steps] = taken
    return [
        Measurement(f.name, versions[f.name],
                    {n: statistics.median(taken) for n, taken in samples[f.name].items()},
                    samples=samples[f.name])
        if f.name in versions
        else Measurement(f.name, None, {}, "not installed")
        for f in frameworks
    ]


def render(measurements: list[Measurement], settings: Settings) -> str:
    floor = measurements[0].per_step_us
    header = ["framework", "version"]
    for steps in RUN_LENGTHS:
        header += [f"{steps} step{'s' if steps > 1 else ''}: µs/step", "x floor"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (2 * len(RUN_LENGTHS))) + "|",
    ]
    for m in measurements:
        row = [m.framework, m.version or "—"]
        for steps in RUN_LENGTHS:
            if steps in m.per_step_us:
                value = m.per_step_us[steps]
                row += [f"{value:,.1f}", f"{value / floor[steps]:,.1f}"]
            else:
                row += [m.note if steps == RUN_LENGTHS[0] else "", ""]
        lines.append("| " + " | ".join(row) + " |")
    wingspan_us = next(
        (m.per_step_us for m in measurements if m.framework == "wingspan"), {}
    )
    target: list[str] = []
    if wingspan_us:
        verdict = "meets" if wingspan_us[max(RUN_LENGTHS)] <= TARGET_US else "misses"
        target = [
            f"wingspan {verdict} its target of {TARGET_US:g} µs/step at "
            f"{max(RUN_LENGTHS)} steps ({wingspan_us[max(RUN_LENGTHS)]:.1f} µs).",
            "",
        ]
    return "\n".join(
        [
            "# Loop overhead",
            "",
            "Microseconds per step (one model call + one tool call) of a whole run, with a",
            "zero-latency fake model that calls an async `add(a, b)` tool at steps 1..N-1 and",
            f"answers text at step N. Median of {settings.samples} samples of whole runs "
            f"(about {settings.sample_seconds:g} s each) after warm-up; lower is better.",
            "",
            *lines,
            "",
            *target,
            *render_permissions(measurements),
            f"Python {platform.python_version()} ({sys.implementation.name}) on "
            f"{platform.machine()}, {platform.system()}; measured "
            f"{time.strftime('%Y-%m-%d')}. Command: `python bench/loop_overhead.py`.",
            "",
        ]
    )


def render_permissions(measurements: list[Measurement]) -> list[str]:
    """What the permissions plugin costs an allowed call: the ratios of its three rows,
    measured in the same run; nothing when one of them was not measured."""
    rows = {m.framework: m.samples for m in measurements}
    if not all(rows.get(name) for name in (NO_PERMISSIONS, NO_RULES, ALLOW_20)):
        return []

    def ratio(numerator: str, denominator: str, steps: int) -> float:
        # The median of the rounds' ratios: each round takes the rows' samples one after
        # the other, so a slow spell of the machine weighs on both sides of a ratio.
        return statistics.median(
            a / b for a, b in zip(rows[numerator][steps], rows[denominator][steps], strict=True))

    pairs = (
        ("enabled, no rules / disabled", NO_RULES, NO_PERMISSIONS),
        ("20 allow rules / no rules", ALLOW_20, NO_RULES),
        ("20 allow rules / disabled", ALLOW_20, NO_PERMISSIONS),
    )
    header = ["permissions", *(f"{n} step{'s' if n > 1 else ''}" for n in RUN_LENGTHS)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(RUN_LENGTHS)) + "|",
    ]
    for label, numerator, denominator in pairs:
        ratios = [ratio(numerator, denominator, n) for n in RUN_LENGTHS]
        lines.append("| " + " | ".join([label, *(f"{r:.2f}x" for r in ratios)]) + " |")
    # Each of the plugin's two costs is held to the target on its own: being there, and
    # matching rules.
    worst = max(
        ratio(numerator, denominator, n)
        for _, numerator, denominator in pairs[:2]
        for n in RUN_LENGTHS
    )
    verdict = "meets" if worst <= PERMISSIONS_TARGET else "misses"
    return [
        "What the built-in `permissions` plugin costs an allowed call, in the same run:",
        f"`{NO_PERMISSIONS}` (the plugin disabled), `{NO_RULES}` (enabled, no",
        "rules: every call allowed by the default) and "
        f"`{ALLOW_20}` (an allow list, the",
        "default ask: 10 rules of the runtime's and 10 of the agent's, each naming `add` "
        "among",
        "other tools and with a pattern on the subject; the one that matches is looked at "
        "last, and",
        "takes a regular expression). Ratios of their µs per step, each the median of the",
        "ratios of the samples taken one after the other (a run of 1 step calls no tool):",
        "",
        *lines,
        "",
        f"The permissions plugin {verdict} its target of {PERMISSIONS_TARGET:g}x for an "
        f"allowed call (the worst of the first two rows: {worst:.2f}x).",
        "",
    ]


def profile_wingspan(steps: int, runs: int, name: str) -> str:
    """Where wingspan's time goes: cProfile of ``runs`` runs of ``steps`` steps, the
    functions of the kernel and of this file, in microseconds per step.

    cProfile adds its own cost to every call, so the numbers are larger than the table's;
    read them as shares.
    """
    import cProfile
    import pstats

    script = Script(max(RUN_LENGTHS))
    adapter = next(f for f in FRAMEWORKS if f.name == name).build(script)

    async def runs_of(count: int) -> None:
        for _ in range(count):
            await adapter.run(steps)

    asyncio.run(runs_of(max(3, 400 // steps)))
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(runs_of(runs))
    profiler.disable()
    total_steps = runs * steps
    kernel = Path(wingspan.__file__).resolve().parent
    rows = []
    # pstats keeps (file, line, function) -> (primitive calls, calls, own time, cumulative
    # time, callers); it has no public accessor for the table.
    for (filename, line, function), (_, calls, own, cumulative, _) in (
        pstats.Stats(profiler).stats.items()  # type: ignore[attr-defined]
    ):
        path = Path(filename)
        if path.parent == kernel or path == Path(__file__).resolve():
            where = f"{path.parent.name}/{path.name}:{line}({function})"
            rows.append((own, cumulative, calls, where))
    rows.sort(reverse=True)
    lines = [
        f"cProfile of {name}, {runs} runs of {steps} steps; µs per step",
        f"{'own':>7} {'cumul.':>7} {'calls':>6}  function",
    ]
    for own, cumulative, calls, where in rows[:30]:
        lines.append(
            f"{own / total_steps * 1e6:7.2f} {cumulative / total_steps * 1e6:7.2f} "
            f"{calls / total_steps:6.2f}  {where}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--samples", type=int, default=7, help="samples per cell (default 7)")
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=0.2,
        help="about how long each sample runs (default 0.2)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    wingspan_rows = [f.name for f in FRAMEWORKS if f.distribution == "wingspan"]
    parser.add_argument(
        "--profile",
        nargs="?",
        const="wingspan",
        choices=wingspan_rows,
        metavar="ROW",
        help="profile a wingspan row (default: wingspan) at the longest run length instead "
        "of comparing",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="measure only the rows whose name contains TEXT (repeatable), and the floor; "
        "e.g. --only wingspan",
    )
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_wingspan(max(RUN_LENGTHS), runs=100, name=args.profile))
        return
    settings = Settings(samples=args.samples, sample_seconds=args.sample_seconds)
    measurements = []
    chosen = [
        framework
        for framework in FRAMEWORKS
        if not args.only
        or framework.distribution is None
        or any(text in framework.name for text in args.only)
    ]
    # The floor and wingspan's rows take turns (their ratios are the point); each peer is
    # measured on its own, in its own event loop.
    together = [f for f in chosen if f.distribution in (None, "wingspan")]
    print(f"measuring {', '.join(f.name for f in together)}...", file=sys.stderr, flush=True)
    by_name = {m.framework: m for m in asyncio.run(measure_frameworks(together, settings))}
    for framework in chosen:
        if framework.name not in by_name:
            print(f"measuring {framework.name}...", file=sys.stderr, flush=True)
            by_name.update(
                (m.framework, m) for m in asyncio.run(measure_frameworks([framework], settings))
            )
        measurements.append(by_name[framework.name])
    table = render(measurements, settings)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
