"""What the built-in tools share: the tool class, settings, output bounds, worker threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from wingspan import ToolContext, ToolError, ToolOutcome

T = TypeVar("T")

#: The signature of a built-in tool's body: validated input and the call's context.
ToolBody = Callable[[dict[str, Any], ToolContext], Awaitable[str | ToolOutcome]]


@attrs.frozen(kw_only=True)
class BuiltinTool:
    """A :class:`wingspan.Tool` with a hand-written schema (bounds, enums, descriptions that a
    type hint cannot carry) and an async body."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    body: ToolBody = attrs.field(repr=False)

    async def call(self, input: dict[str, Any], context: ToolContext) -> str | ToolOutcome:
        return await self.body(input, context)


def setting(context: ToolContext, key: str, default: T) -> T:
    """The tool setting ``key`` (see docs/tools.md), checked against the default's type.

    :raises ToolError: when the runtime's settings hold a value of another type.
    """
    value = context.settings.get(key, default)
    kind = type(default)
    if kind is int and (type(value) is not int or value < 1):
        raise ToolError(f"the tool setting {key!r} must be a positive integer, not {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ToolError(
            f"the tool setting {key!r} must be a {kind.__name__}, not {type(value).__name__}"
        )
    return value  # type: ignore[no-any-return]


def cut_middle(text: str, limit: int) -> str:
    """``text`` when it fits in ``limit`` characters, else its head and tail with a marker
    saying how much was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut ...]\n{text[len(text) - half:]}"


def cut_line(line: str, limit: int) -> str:
    """One line bounded to ``limit`` characters, with a marker saying how much was cut."""
    if len(line) <= limit:
        return line
    return f"{line[:limit]}... [line cut: {len(line) - limit} more characters]"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


async def run_blocking(function: Callable[[threading.Event], T]) -> T:
    """Run blocking ``function(stop)`` in a worker thread, keeping the event loop free.

    Cancelling the caller sets ``stop``; long loops check it so that the thread ends soon
    after the call is cancelled instead of running on unobserved.
    """
    stop = threading.Event()
    try:
        return await asyncio.to_thread(function, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
