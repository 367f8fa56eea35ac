"""The ``test`` provider: deterministic, offline, streaming like a real model.

Without a script it calls each of the agent's tools once with schema-valid arguments, then
answers with a summary. With ``{"script": [...]}`` it replays turns: turn *i* answers step
*i* of each run (counted from the run's user message); past the end the last turn repeats.

A turn is one of:

- ``"text"`` — an assistant text turn;
- ``[{"name": ..., "input": {...}}, ...]`` — one turn calling those tools;
- ``{"text": ..., "tool_calls": [...]}`` — both (either key may be left out);
- ``{"error": "message"}`` (with ``text`` streamed first, if given) — the provider fails;
- any object form may add ``"delay": seconds`` to wait (cancellably) before answering.

From Python the script may also be a callable ``(request) -> turn``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs

import wingspan
from wingspan import (
    ConfigError,
    ContentBlockStart,
    ContentBlockStop,
    InferenceRequest,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    ModelInfo,
    ProviderError,
    ProviderSpec,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextStart,
    ToolResultBlock,
    ToolUseStart,
    Usage,
)

NAME = "test"
_OPTIONS = {"script", "model", "chunk_size"}
#: Example values for properties of these names, so default runs do something useful.
_EXAMPLES = {
    "path": ".",
    "pattern": "*",
    "command": "echo hello from wingspan",
    "url": "http://127.0.0.1/",
}


@attrs.frozen(kw_only=True)
class Turn:
    """One scripted assistant turn."""

    text: str = ""
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    error: str | None = None
    delay: float = 0.0


Script = tuple[Turn, ...] | Callable[[InferenceRequest], Any]


@attrs.frozen
class TestProvider:
    """Replays a script, or exercises every tool once and summarises."""

    __test__ = False  # not a pytest test class

    script: Script | None = None
    chunk_size: int = 12

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        step, user_text = _position(request)
        turn = self._turn(request, step, user_text)
        if turn.delay:
            await asyncio.sleep(turn.delay)
        yield MessageStart()
        index = 0
        output_chars = 0
        if turn.text:
            yield ContentBlockStart(index=index, content_block=TextStart())
            for piece in _pieces(turn.text, self.chunk_size):
                yield TextDelta(text=piece, index=index)
            output_chars += len(turn.text)
            if turn.error is None:
                yield ContentBlockStop(index=index)
            index += 1
        if turn.error is not None:
            raise ProviderError(f"test: {turn.error}", provider=NAME)
        for position, (name, arguments) in enumerate(turn.tool_calls):
            call_id = f"toolu_{len(request.messages):04d}_{position:02d}"
            yield ContentBlockStart(index=index, content_block=ToolUseStart(id=call_id, name=name))
            encoded = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
            for piece in _pieces(encoded, self.chunk_size, words=False):
                yield InputJsonDelta(partial_json=piece, index=index)
            yield ContentBlockStop(index=index)
            output_chars += len(encoded)
            index += 1
        yield MessageDelta(
            stop_reason="tool_use" if turn.tool_calls else "end_turn",
            usage=Usage(
                input_tokens=_tokens(_request_chars(request)),
                output_tokens=_tokens(output_chars),
            ),
        )
        yield MessageStop()

    def _turn(self, request: InferenceRequest, step: int, user_text: str) -> Turn:
        if self.script is None:
            return _default_turn(request, step, user_text)
        if callable(self.script):
            try:
                value = self.script(request)
            except Exception as exc:
                raise ProviderError(
                    f"test: the script function raised {type(exc).__name__}: {exc}",
                    provider=NAME,
                ) from exc
            try:
                return _parse_turn(value, "the script function's turn")
            except ConfigError as exc:
                raise ProviderError(str(exc), provider=NAME) from None
        return self.script[min(step, len(self.script) - 1)]


def _position(request: InferenceRequest) -> tuple[int, str]:
    """The step within the run (0 for the first model call) and the run's user text."""
    steps = 0
    for message in reversed(request.messages):
        if message.role == "assistant":
            steps += 1
        elif any(type(b) is not ToolResultBlock for b in message.content):
            return steps, message.text
    return steps, ""


def _default_turn(request: InferenceRequest, step: int, user_text: str) -> Turn:
    if step == 0 and request.tools:
        return Turn(
            text=f"I will call each of my {len(request.tools)} tools once.",
            tool_calls=tuple((t.name, example_input(t.input_schema)) for t in request.tools),
        )
    last = request.messages[-1] if request.messages else None
    results = [b for b in last.content if type(b) is ToolResultBlock] if last else []
    if results:
        names = {
            use.id: use.name
            for message in request.messages[-2:-1]
            for use in message.tool_uses
        }
        lines = [f"I called {len(results)} tool{'s' if len(results) > 1 else ''}:"]
        for block in results:
            outcome = "error" if block.is_error else "ok"
            first_line = block.content.strip().splitlines()[0] if block.content.strip() else ""
            name = names.get(block.tool_use_id, block.tool_use_id)
            lines.append(f"- {name}: {outcome}: {first_line[:80]}")
        return Turn(text="\n".join(lines))
    return Turn(text=f"This is the test provider answering: {user_text}")


def example_input(schema: Mapping[str, Any], name: str = "") -> Any:
    """A small value valid against ``schema`` (the subset tools use)."""
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"] or schema["anyOf"]
        return example_input(options[0], name)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            key: example_input(properties.get(key, {}), key) for key in schema.get("required", ())
        }
    if kind == "array":
        return [example_input(schema.get("items", {}))] * schema.get("minItems", 0)
    if kind == "string":
        text = _EXAMPLES.get(name, "example")
        return text.ljust(schema.get("minLength", 0), "x")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return max(low, 0) if "maximum" not in schema else min(max(low, 0), schema["maximum"])
    if kind == "boolean":
        return False
    return None


def _pieces(text: str, size: int, *, words: bool = True) -> list[str]:
    """Split like a model streams: pieces of about ``size`` characters, at spaces for text."""
    if len(text) <= size:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if words and end < len(text):
            space = text.rfind(" ", start + 1, end)
            if space > start:
                end = space + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _request_chars(request: InferenceRequest) -> int:
    chars = len(request.instructions or "")
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + 40 * len(tool.input_schema)
    for message in request.messages:
        for block in message.content:
            if type(block) is TextBlock:
                chars += len(block.text)
            elif type(block) is ToolResultBlock:
                chars += len(block.content)
            else:
                chars += len(block.name) + 40  # type: ignore[union-attr]
    return chars


def _tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)


def _parse_turn(value: Any, where: str) -> Turn:
    if isinstance(value, Turn):
        return value
    if isinstance(value, str):
        return Turn(text=value)
    if isinstance(value, list):
        return Turn(tool_calls=_parse_calls(value, where))
    if isinstance(value, Mapping):
        unknown = set(value) - {"text", "tool_calls", "error", "delay"}
        if unknown:
            raise ConfigError(f"test provider: {where} has unknown keys {sorted(unknown)}")
        text = value.get("text", "")
        if not isinstance(text, str):
            raise ConfigError(f"test provider: {where}.text must be a string")
        error = value.get("error")
        if error is not None and not isinstance(error, str):
            raise ConfigError(f"test provider: {where}.error must be a string")
        delay = value.get("delay", 0)
        if type(delay) not in (int, float) or delay < 0:
            raise ConfigError(f"test provider: {where}.delay must be a number of seconds >= 0")
        calls = value.get("tool_calls", [])
        if not isinstance(calls, list):
            raise ConfigError(f"test provider: {where}.tool_calls must be a list")
        return Turn(
            text=text,
            tool_calls=_parse_calls(calls, f"{where}.tool_calls"),
            error=error,
            delay=float(delay),
        )
    raise ConfigError(
        f"test provider: {where} must be a string, a list of tool calls or an object, "
        f"got {type(value).__name__}"
    )


def _parse_calls(calls: list[Any], where: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    parsed = []
    for i, call in enumerate(calls):
        if not (isinstance(call, Mapping) and isinstance(call.get("name"), str)):
            raise ConfigError(
                f'test provider: {where}[{i}] must be {{"name": ..., "input": {{...}}}}'
            )
        unknown = set(call) - {"name", "input"}
        if unknown:
            raise ConfigError(f"test provider: {where}[{i}] has unknown keys {sorted(unknown)}")
        arguments = call.get("input", {})
        if not isinstance(arguments, Mapping):
            raise ConfigError(f"test provider: {where}[{i}].input must be an object")
        parsed.append((call["name"], arguments))
    return tuple(parsed)


def make_test_provider(options: Mapping[str, Any]) -> TestProvider:
    """Build the provider from its options: ``script`` (list or callable), ``chunk_size``
    (characters per streamed delta, default 12) and ``model`` (ignored)."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigError(
            f"test provider: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(sorted(unknown))}; it takes {', '.join(sorted(_OPTIONS))}"
        )
    chunk_size = options.get("chunk_size", 12)
    if type(chunk_size) is not int or chunk_size < 1:
        raise ConfigError("test provider: chunk_size must be a positive integer")
    script = options.get("script")
    if script is None or callable(script):
        return TestProvider(script=script, chunk_size=chunk_size)
    if not isinstance(script, list) or not script:
        raise ConfigError("test provider: script must be a non-empty list of turns")
    turns = tuple(_parse_turn(turn, f"script[{i}]") for i, turn in enumerate(script))
    return TestProvider(script=turns, chunk_size=chunk_size)


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            name=NAME,
            display_name="Test (offline, scripted)",
            factory=make_test_provider,
            check_options=make_test_provider,
            auth_types=(),
            models=(ModelInfo(id="test", name="Test model", context_window=200_000),),
        )
    ]
