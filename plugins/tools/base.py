"""What the built-in tools share: the tool class, settings, output bounds, worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import posixpath
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from wingspan import ToolContext, ToolError, ToolOutcome

from .paths import WorkDir, display

T = TypeVar("T")

#: Seconds a read, write, edit, glob or grep call may run (the ``tool_timeout`` setting).
DEFAULT_TOOL_TIMEOUT = 60.0

#: The signature of a built-in tool's body: validated input and the call's context.
ToolBody = Callable[[dict[str, Any], ToolContext], Awaitable[str | ToolOutcome]]
#: The signature of a built-in tool's subject: what a permission rule matches of a call
#: (:func:`wingspan.permissions.subject_of`), given its input and context.
Subject = Callable[[Mapping[str, Any], ToolContext | None], str]


@attrs.frozen(kw_only=True)
class BuiltinTool:
    """A :class:`wingspan.Tool` with a hand-written schema (bounds, enums, descriptions that a
    type hint cannot carry) and an async body."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    body: ToolBody = attrs.field(repr=False)
    #: What a permission rule matches of a call; it never raises and touches no more than
    #: a path's lookup. ``None``: the input as JSON.
    subject: Subject | None = attrs.field(default=None, repr=False, eq=False)

    async def call(self, input: dict[str, Any], context: ToolContext) -> str | ToolOutcome:
        """Run the body. Its answer and its error message are always encodable as UTF-8:
        a surrogate that slipped into one (from a file name, a command's output, an
        exception's text) is shown escaped (:func:`.paths.display`; a
        :class:`~wingspan.ToolOutcome` escapes its own content)."""
        try:
            output = await self.body(input, context)
        except ToolError as exc:
            message = str(exc)
            shown = display(message)
            if shown is message:
                raise
            raise ToolError(shown) from None
        return display(output) if isinstance(output, str) else output


def given(input: Mapping[str, Any], key: str, default: str = "") -> str:
    """The input's ``key`` exactly as given, for a subject: a string as it is, anything else
    (a call whose input was not validated) as JSON."""
    value = input.get(key, default)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # a circular structure, say
        return default


def path_subject(path: str, context: ToolContext | None) -> str:
    """``path`` as a permission rule sees it: relative to the work dir, POSIX form,
    normalized (``./a/../secrets/x`` is ``secrets/x``; ``.`` is the work dir itself), an
    absolute path inside the work dir made relative, and symbolic links inside the work dir
    resolved by the confinement's own lookup (:meth:`.paths.WorkDir.resolve`), so that a
    link cannot carry a call past a rule on its target.

    A path that leaves the work dir, or cannot be resolved, is returned normalized as
    given (absolute, or with its leading ``..``): the tool refuses it anyway, and a rule
    such as ``src/*`` does not match it by accident. So is a path of a call without a work
    dir. Never raises.
    """
    normal = _normalized(path)
    work_dir = None if context is None else context.work_dir
    if work_dir is None:
        return normal
    try:
        root = WorkDir(work_dir)
        return root.show(root.resolve(path))
    except Exception:  # malformed, outside, unreadable: the call itself will say why
        return normal


def _normalized(path: str) -> str:
    normal = posixpath.normpath(path)
    # POSIX keeps a leading "//" apart; the kernel (and a person) reads it as "/".
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return display(normal)


def setting(context: ToolContext, key: str, default: T) -> T:
    """The tool setting ``key`` (see docs/tools.md), checked against the default's type.

    :raises ToolError: when the runtime's settings hold a value of another type.
    """
    value = context.settings.get(key, default)
    kind = type(default)
    if kind is int and (type(value) is not int or value < 1):
        raise ToolError(f"the tool setting {key!r} must be a positive integer, not {value!r}")
    if kind is float:
        if type(value) not in (int, float) or not (value > 0 and math.isfinite(value)):
            raise ToolError(
                f"the tool setting {key!r} must be a positive number, not {value!r}"
            )
        return float(value)  # type: ignore[return-value]
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


def tool_timeout(context: ToolContext) -> float:
    """The time limit of one file tool call: the ``tool_timeout`` setting, in seconds."""
    return setting(context, "tool_timeout", DEFAULT_TOOL_TIMEOUT)


async def run_blocking(
    function: Callable[[threading.Event], T], *, limit: float | None = None, name: str = "tool"
) -> T:
    """Run blocking ``function(stop)`` in a worker thread of its own, keeping the event
    loop free.

    ``stop`` is set once the call is over, whether it returned, was cancelled or ran out of
    time; long loops check it so that the thread ends soon after instead of running on
    unobserved. A thread stuck in a system call (a hung network file system, say) is no
    longer awaited after ``limit`` seconds, and since each call has its own (daemon) thread,
    it cannot starve other calls of workers or keep the process from exiting, as a stuck
    thread of the loop's small default executor would.

    :param limit: seconds before the call gives up, or ``None`` for no limit.
    :param name: the tool's name, for the time-out message.
    :raises ToolError: when the limit passes first.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    stop = threading.Event()

    def work() -> None:
        try:
            result = function(stop)
        except BaseException as exc:
            deliver(done.set_exception, exc)
        else:
            deliver(done.set_result, result)

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        def settle() -> None:
            if not done.done():
                setter(value)

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=work, name=f"wingspan-{name}", daemon=True).start()
    timeout = asyncio.timeout(limit)
    try:
        async with timeout:
            return await done
    except TimeoutError:
        if not timeout.expired():
            raise
        raise ToolError(
            f"{name} timed out after {limit:g} s and was stopped (the server's "
            "'tool_timeout' setting); try a smaller request, e.g. a narrower path or pattern"
        ) from None
    finally:
        stop.set()
