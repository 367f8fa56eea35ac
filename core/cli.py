"""The ``wingspan`` command: list plugins, tools and providers, run an agent, serve.

Exit statuses: 0 done; 1 an error, in one line (``wingspan: error: ...``); 2 a usage error,
with the usage of the command at fault; 130 interrupted (Ctrl-C); 141 the reader of stdout
went away (``wingspan tools | head -1``), as for a Unix tool ended by SIGPIPE, and quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .errors import WingspanError

if TYPE_CHECKING:
    from .agent import Agent
    from .runtime import Runtime
    from .session import Session
    from .store import Store
    from .types import StreamEvent

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: what a shell reports for ``yes | head -1``'s ``yes``, so that scripts
#: (``set -o pipefail``) see wingspan as they see any other tool whose reader left.
EXIT_BROKEN_PIPE = 141
#: The most steps ``--max-steps`` takes: the server's default ``max_steps_limit``.
MAX_STEPS_LIMIT = 1000
#: Where ``wingspan run`` keeps conversations by default: the SQLite plugin's default
#: database, the one ``wingspan serve`` uses by default.
DEFAULT_STORE = "sqlite://"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and the parser of each command (for errors in that command's words)."""
    parser = argparse.ArgumentParser(
        prog="wingspan",
        description="Run LLM agents: from the shell, as a server, or from Python.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plugins = commands.add_parser("plugins", help="list the loaded plugins and their hooks")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    tools = commands.add_parser("tools", help="list the tools plugins provide")
    tools.add_argument("--json", action="store_true", help="print JSON")
    providers = commands.add_parser("providers", help="list the model providers")
    providers.add_argument("--json", action="store_true", help="print JSON")

    run = commands.add_parser(
        "run",
        help="run an agent on one message, streaming the answer",
        description="Run an agent on one message. The answer streams to stdout; tool calls, "
        "their results, usage and steps go to stderr, and on a terminal a line there says "
        "what the run is waiting for. The conversation is kept in the store (by default "
        "the server's default SQLite database): continue it with --continue or --session ID.",
    )
    run.add_argument("message", help="the user message; - reads it from stdin")
    run.add_argument("--provider", default="test", help="provider name (default: test)")
    run.add_argument("--model", help="the provider's model")
    run.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a provider option; VALUE is read as JSON when it parses (repeatable)",
    )
    run.add_argument("--tools", default="", help="comma-separated tool names (default: none)")
    run.add_argument(
        "--work-dir", default=None,
        help="directory the tools work in (default: the current directory)",
    )
    run.add_argument("--instructions", default="", help="the system prompt")
    run.add_argument(
        "--max-steps", type=_max_steps, default=50, metavar="N",
        help=f"most model calls, 1 to {MAX_STEPS_LIMIT} (default 50)",
    )
    run.add_argument(
        "--json", action="store_true", help="print every event as a JSON line instead"
    )
    run.add_argument(
        "--store", default=DEFAULT_STORE, metavar="URL",
        help="where the conversation is kept (default: sqlite://, the SQLite default "
        "database, as for wingspan serve; memory:// keeps nothing)",
    )
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--session", metavar="ID", help="continue the stored session ID")
    resume.add_argument(
        "--continue", dest="continue_", action="store_true",
        help="continue the most recent session in the store",
    )
    logs = run.add_mutually_exclusive_group()
    logs.add_argument(
        "--verbose", "-v", action="store_true", help="log what wingspan does (--log-level info)"
    )
    logs.add_argument(
        "--log-level", choices=LOG_LEVELS, metavar="LEVEL",
        help=f"log records of this level and above on stderr: {', '.join(LOG_LEVELS)} "
        "(default: warning)",
    )

    serve = commands.add_parser(
        "serve",
        help="serve the runtime (HTTP + SSE by default)",
        description="Start a transport. Each setting comes from the first of: these flags, "
        "WINGSPAN_* environment variables, the --config file (TOML), the defaults. So flags "
        "win over the environment, which wins over the file.",
    )
    serve.add_argument("--transport", default="http", help="transport name (default: http)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port (default 2323; 0: any free port, the one bound is logged)"
    )
    serve.add_argument("--db", help="SQLite database path")
    serve.add_argument("--store", help="store URL, for any store plugin")
    serve.add_argument("--token", help="bearer token clients must send")
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without a token"
    )
    serve.add_argument(
        "--config", help="TOML configuration file (default: $WINGSPAN_CONFIG, else none)"
    )
    return parser, {"plugins": plugins, "tools": tools, "providers": providers, "run": run,
                    "serve": serve}


def _max_steps(text: str) -> int:
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if not 1 <= steps <= MAX_STEPS_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_STEPS_LIMIT}, got {text!r}"
        )
    return steps


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wingspan`` command. :returns: the exit status."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, so that a reader gone away is caught below
    except BrokenPipeError:
        # The reader of our output left (`wingspan tools | head -1`): stop quietly, as Unix
        # tools do. Whatever is still buffered goes to /dev/null, not to a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser, commands = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, with its usage (`run --bogus`)
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            _check_run_arguments(commands["run"], args)
        from .runtime import Runtime

        runtime = Runtime.from_settings()
        for error in runtime.plugin_errors:
            if args.command != "plugins":
                print(f"wingspan: warning: {error}", file=sys.stderr)
        handler = {
            "plugins": _plugins,
            "tools": _tools,
            "providers": _providers,
            "run": _run,
            "serve": _serve,
        }[args.command]
        return handler(runtime, args)
    except WingspanError as exc:
        print(f"wingspan: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nwingspan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# --- listings ---------------------------------------------------------------------------------


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _plugins(runtime: Runtime, args: argparse.Namespace) -> int:
    plugins = runtime.list_plugins()
    if args.json:
        data: dict[str, Any] = {
            "plugins": [
                {"name": p.name, "distribution": p.distribution, "version": p.version,
                 "hooks": list(p.hooks)}
                for p in plugins
            ],
            "errors": [{"name": e.plugin, "error": str(e)} for e in runtime.plugin_errors],
        }
        print(json.dumps(data, indent=2))
    else:
        rows = [["NAME", "DISTRIBUTION", "VERSION", "HOOKS"]]
        rows += [
            [p.name, p.distribution or "-", p.version or "-", ", ".join(p.hooks)] for p in plugins
        ]
        _table(rows, sys.stdout)
        for error in runtime.plugin_errors:
            print(f"FAILED {error.plugin}: {error}")
    return EXIT_ERROR if runtime.plugin_errors else 0


def _tools(runtime: Runtime, args: argparse.Namespace) -> int:
    tools = runtime.get_tools()
    if args.json:
        print(json.dumps(
            [{"name": t.name, "description": t.description, "input_schema": t.input_schema,
              "plugin": runtime.tool_plugins.get(t.name)} for t in tools],
            indent=2,
        ))
        return 0
    if not tools:
        print("no tools installed")
        return 0
    rows = [["NAME", "PLUGIN", "DESCRIPTION"]]
    rows += [
        [t.name, runtime.tool_plugins.get(t.name, "-"), t.description.strip().splitlines()[0]]
        for t in tools
    ]
    _table(rows, sys.stdout)
    return 0


def _providers(runtime: Runtime, args: argparse.Namespace) -> int:
    specs = [runtime.providers[name] for name in sorted(runtime.providers)]
    if args.json:
        print(json.dumps(
            [{"id": s.name, "name": s.display_name, "auth_types": list(s.auth_types),
              "models": [m.id for m in s.models]} for s in specs],
            indent=2,
        ))
        return 0
    rows = [["ID", "NAME", "AUTH", "MODELS"]]
    rows += [
        [s.name, s.display_name, ", ".join(s.auth_types) or "none",
         ", ".join(m.id for m in s.models[:4]) + (" ..." if len(s.models) > 4 else "")]
        for s in specs
    ]
    _table(rows, sys.stdout)
    return 0


# --- run --------------------------------------------------------------------------------------


def _parse_options(pairs: list[str], model: str | None) -> dict[str, Any]:
    from .errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    if model:
        options["model"] = model
    return options


def _check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of ``wingspan run``, before anything is loaded; reads ``-`` from stdin."""
    if args.message == "-":
        if sys.stdin.isatty() and sys.stderr.isatty():
            print("wingspan: reading the message from stdin (end it with Ctrl-D)",
                  file=sys.stderr, flush=True)
        try:
            args.message = sys.stdin.read().rstrip("\r\n")
        except UnicodeDecodeError:
            parser.error(f"the message on stdin is not {sys.stdin.encoding} text")
    if not args.message.strip():
        parser.error("message must not be empty")  # the server's words for it
    if args.work_dir is not None and (args.session or args.continue_):
        parser.error("--work-dir cannot be given with --session or --continue: a session "
                     "keeps the work dir it was started in")


def _run(runtime: Runtime, args: argparse.Namespace) -> int:
    from .agent import Agent

    agent = Agent(
        name="cli",
        instructions=args.instructions,
        provider=runtime.get_provider(args.provider, _parse_options(args.option, args.model)),
        tools=runtime.get_tools(args.tools.split(",")) if args.tools.strip() else [],
        max_steps=args.max_steps,
    )
    progress = _Progress(sys.stderr, enabled=sys.stderr.isatty())
    _configure_logging(args, progress)
    printer: _JsonPrinter | _TerminalPrinter = (
        _JsonPrinter(runtime, progress) if args.json else _TerminalPrinter(progress)
    )
    asyncio.run(_converse(runtime, args, agent, printer, progress))
    return 0


async def _converse(
    runtime: Runtime,
    args: argparse.Namespace,
    agent: Agent,
    printer: _JsonPrinter | _TerminalPrinter,
    progress: _Progress,
) -> None:
    """Open the store, start or resume the session, and stream the run through ``printer``."""
    store = await runtime.open_store(args.store)
    ticker = asyncio.create_task(progress.tick()) if progress.enabled else None
    try:
        session = await _session(runtime, args, agent, store)
        if not args.store.startswith("memory:"):
            printer.session_id = session.id
        activity = _Activity(progress)
        activity.start()
        async with session.stream(args.message) as events:
            async for event in events:
                activity.see(event)
                printer.show(event)
    finally:
        if ticker is not None:
            ticker.cancel()
        with contextlib.suppress(OSError, ValueError):
            progress.done()
        await store.close()


async def _session(
    runtime: Runtime, args: argparse.Namespace, agent: Agent, store: Store
) -> Session:
    """The session to run on: the one ``--session`` names, the latest (``--continue``),
    or a new one."""
    from .errors import NotFoundError
    from .session import Session

    session_id = args.session
    if args.continue_:
        page = await store.list_sessions(limit=1)
        if not page.items:
            raise NotFoundError("no session to continue in the store: start one with "
                                "wingspan run MESSAGE")
        session_id = page.items[0].id
    if session_id is not None:
        return await Session.resume(store, session_id, agent=agent, runtime=runtime)
    return Session(
        agent=agent,
        work_dir=args.work_dir if args.work_dir is not None else os.getcwd(),
        store=store,
        title=_clip(args.message.strip().splitlines()[0], 80),
        runtime=runtime,
    )


def _configure_logging(args: argparse.Namespace, progress: _Progress) -> None:
    """wingspan's log records on stderr from ``--log-level`` (``--verbose``: info); on a
    terminal, the providers' info records (retries) also as the progress line."""
    level = getattr(logging, (args.log_level or ("info" if args.verbose else "warning")).upper())
    root = logging.getLogger("wingspan")
    lines = _LogLines(progress)
    lines.setLevel(level)
    lines.setFormatter(logging.Formatter("wingspan: %(levelname)s: %(name)s: %(message)s"))
    root.addHandler(lines)
    root.setLevel(level)
    root.propagate = False
    if progress.enabled:
        providers = logging.getLogger("wingspan.providers")
        providers.addHandler(_ProgressLines(progress))
        providers.setLevel(min(level, logging.INFO))


class _LogLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Log records on stderr, below the progress line rather than through it."""

    def __init__(self, progress: _Progress) -> None:
        super().__init__(sys.stderr)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.erase()
        super().emit(record)
        self._progress.draw()


class _ProgressLines(logging.Handler):
    """A provider's info record ("retrying in 2 s (attempt 2 of 3)") as the progress line."""

    def __init__(self, progress: _Progress) -> None:
        super().__init__(logging.INFO)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self._progress.set(_clip(text, 200).rstrip(".…") + "…", timed=False)


class _Progress:
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


class _Activity:
    """What the run is doing, from its events, as the progress line: waiting for the
    model, or running tools."""

    def __init__(self, progress: _Progress) -> None:
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


class _JsonPrinter:
    def __init__(self, runtime: Runtime, progress: _Progress) -> None:
        self._converter = runtime.converter
        self._progress = progress
        self.session_id: str | None = None

    def show(self, event: StreamEvent) -> None:
        from .wire import dumps

        with self._progress.hidden():
            sys.stdout.write(dumps(event, self._converter) + "\n")
            sys.stdout.flush()


class _TerminalPrinter:
    """Text as it comes on stdout; tool activity, usage and steps on stderr."""

    def __init__(self, progress: _Progress) -> None:
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
            self._line(f"→ {name}({_clip(''.join(parts), 120)})")
        elif kind is t.ToolResultEvent:
            mark = "✗" if event.is_error else "←"  # type: ignore[union-attr]
            self._line(f"{mark} {event.tool_name}: {_clip(event.content, 200)}")  # type: ignore[union-attr]
        elif kind is t.Done:
            if self._wrote_text and not self._at_line_start:
                self._end_text_line()
            usage = event.usage  # type: ignore[union-attr]
            session = f" · session {self.session_id}" if self.session_id else ""
            self._line(
                f"[{event.steps} step{'s' if event.steps != 1 else ''} · "  # type: ignore[union-attr]
                f"{usage.input_tokens} input + {usage.output_tokens} output tokens · "
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


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- serve ------------------------------------------------------------------------------------


def _serve(runtime: Runtime, args: argparse.Namespace) -> int:
    from .errors import ConfigError

    spec = runtime.transports.get(args.transport)
    if spec is None:
        known = ", ".join(sorted(runtime.transports)) or "none"
        raise ConfigError(
            f"no transport named {args.transport!r} is installed (installed: {known})"
        )
    settings = {  # the flags given: None (False for --insecure) is not given; 0 is a port
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "transport") and value is not None and value is not False
    }
    asyncio.run(spec.serve(runtime, settings))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

