"""What ``wingspan run`` writes: the answer as it comes, tool activity and a summary, or
JSON lines; on a terminal, a progress line saying what the run waits for; log records."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .runtime import Runtime
    from .types import StreamEvent

__all__ = [
    "Activity", "JsonPrinter", "Progress", "TerminalPrinter", "clip", "configure_logging",
]


def configure_logging(args: argparse.Namespace, progress: Progress) -> None:
    """wingspan's log records on stderr from ``--log-level`` (``--verbose``: info); on a
    terminal, the providers' info records (retries) also as the progress line."""
    level = getattr(logging, (args.log_level or ("info" if args.verbose else "warning")).upper())
    root = logging.getLogger("wingspan")
    lines = LogLines(progress)
    lines.setLevel(level)
    lines.setFormatter(logging.Formatter("wingspan: %(levelname)s: %(name)s: %(message)s"))
    root.addHandler(lines)
    root.setLevel(level)
    root.propagate = False
    if progress.enabled:
        providers = logging.getLogger("wingspan.providers")
        providers.addHandler(ProgressLines(progress))
        providers.setLevel(min(level, logging.INFO))


class LogLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Log records on stderr, below the progress line rather than through it."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(sys.stderr)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.erase()
        super().emit(record)
        self._progress.draw()


class ProgressLines(logging.Handler):
    """A provider's info record ("retrying in 2 s (attempt 2 of 3)") as the progress line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self._progress.set(clip(text, 200).rstrip(".…") + "…", timed=False)


class Progress:
    """One status line on a terminal's stderr ("waiting for the model… 3 s"), redrawn in
    place and erased around every other output. Does nothing when stderr is no terminal."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self._stream = stream
        self.enabled = enabled
        #: Set while stdout, on the same terminal, is in the middle of a line: a status
        #: drawn then would be written over that line.
        self.held = False
        self._text = ""
        self._timed = True
        self._since = 0.0
        self._drawn = False

    def set(self, text: str, *, timed: bool = True) -> None:
        """Show ``text`` (with the seconds it has been showing, when ``timed``)."""
        if not self.enabled:
            return
        if text != self._text:
            self._text, self._timed, self._since = text, timed, time.monotonic()
        self.draw()

    def done(self) -> None:
        """Nothing to show any more."""
        self.erase()
        self._text = ""

    def erase(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    def draw(self) -> None:
        if not self.enabled or not self._text or self.held:
            return
        line = self._text
        elapsed = int(time.monotonic() - self._since)
        if self._timed and elapsed >= 1:
            line += f" {elapsed} s"
        try:
            width = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            width = 0
        self._stream.write("\r\x1b[K" + line[: (width or 80) - 1])
        self._stream.flush()
        self._drawn = True

    @contextlib.contextmanager
    def hidden(self) -> Iterator[None]:
        """Erased while the block writes, then drawn again."""
        self.erase()
        yield
        self.draw()

    async def tick(self) -> None:
        """Redraw every second, so that the seconds shown go up."""
        while True:
            await asyncio.sleep(1.0)
            if self._drawn:
                self.draw()


class Activity:
    """What the run is doing, from its events, as the progress line: waiting for the
    model, or running tools."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._step = 1
        #: tool names of the current step's calls, in call order, then those still running
        self._calls: list[str] = []

    def _waiting(self) -> None:
        step = f" (step {self._step})" if self._step > 1 else ""
        self._progress.set(f"waiting for the model{step}…")

    def _running(self) -> None:
        if self._calls:
            self._progress.set(f"running {', '.join(dict.fromkeys(self._calls))}…")
        else:
            self._step += 1
            self._waiting()  # the results go back to the model at once

    def start(self) -> None:
        self._waiting()

    def see(self, event: StreamEvent) -> None:
        from . import types as t

        if type(event) is t.MessageStart:
            self._step, self._calls = event.step, []
            self._waiting()
        elif type(event) is t.TextDelta:
            self._progress.done()  # the text is the progress
        elif type(event) is t.ContentBlockStart and type(event.content_block) is t.ToolUseStart:
            self._calls.append(event.content_block.name)
            self._waiting()  # the model is still writing the call
        elif type(event) is t.MessageStop:
            if self._calls:
                self._running()
            else:
                self._progress.done()
        elif type(event) is t.ToolResultEvent:
            if event.tool_name in self._calls:
                self._calls.remove(event.tool_name)
            self._running()
        elif type(event) is t.Done:
            self._progress.done()


class JsonPrinter:
    def __init__(self, runtime: Runtime, progress: Progress) -> None:
        self._converter = runtime.converter
        self._progress = progress
        self.session_id: str | None = None

    def show(self, event: StreamEvent) -> None:
        from .wire import dumps

        with self._progress.hidden():
            sys.stdout.write(dumps(event, self._converter) + "\n")
            sys.stdout.flush()


class TerminalPrinter:
    """Text as it comes on stdout; tool activity, usage and steps on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._tools: dict[int, tuple[str, list[str]]] = {}
        self._at_line_start = True
        self._wrote_text = False
        self._progress = progress
        self._same_terminal = sys.stdout.isatty()
        self.session_id: str | None = None

    def show(self, event: StreamEvent) -> None:
        from . import types as t

        kind = type(event)
        if kind is t.TextDelta:
            self._progress.erase()
            sys.stdout.write(event.text)  # type: ignore[union-attr]
            sys.stdout.flush()
            self._at_line_start = event.text.endswith("\n")  # type: ignore[union-attr]
            self._progress.held = self._same_terminal and not self._at_line_start
            self._wrote_text = True
        elif kind is t.ContentBlockStart and type(event.content_block) is t.ToolUseStart:  # type: ignore[union-attr]
            self._tools[event.index] = (event.content_block.name, [])  # type: ignore[union-attr]
        elif kind is t.InputJsonDelta and event.index in self._tools:  # type: ignore[union-attr]
            self._tools[event.index][1].append(event.partial_json)  # type: ignore[union-attr]
        elif kind is t.ContentBlockStop and event.index in self._tools:  # type: ignore[union-attr]
            name, parts = self._tools.pop(event.index)  # type: ignore[union-attr]
            self._line(f"→ {name}({clip(''.join(parts), 120)})")
        elif kind is t.ToolResultEvent:
            mark = "✗" if event.is_error else "←"  # type: ignore[union-attr]
            self._line(f"{mark} {event.tool_name}: {clip(event.content, 200)}")  # type: ignore[union-attr]
        elif kind is t.Done:
            if self._wrote_text and not self._at_line_start:
                self._end_text_line()
            usage = event.usage  # type: ignore[union-attr]
            session = f" · session {self.session_id}" if self.session_id else ""
            self._line(
                f"[{event.steps} step{'s' if event.steps != 1 else ''} · "  # type: ignore[union-attr]
                f"{_count(usage.input_tokens)} input + "
                f"{_count(usage.output_tokens)} output tokens · "
                f"{len(event.tool_calls)} tool call{'s' if len(event.tool_calls) != 1 else ''} · "  # type: ignore[union-attr]
                f"stop: {event.stop_reason}{session}]"  # type: ignore[union-attr]
            )

    def _end_text_line(self) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        self._at_line_start = True
        self._progress.held = False

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            self._end_text_line()
        with self._progress.hidden():
            print(text, file=sys.stderr, flush=True)


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(tokens: int | None) -> str:
    """A token count, or ``?`` where the server reported none."""
    return "?" if tokens is None else str(tokens)
