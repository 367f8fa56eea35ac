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
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ._console import Activity, JsonPrinter, Progress, TerminalPrinter, clip, configure_logging
from .errors import WingspanError

if TYPE_CHECKING:
    from .agent import Agent
    from .runtime import Runtime
    from .session import Session
    from .store import Store

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
    run.add_argument("message", nargs="?",
                     help="the user message; - reads it from stdin (none with --attach)")
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
    resume.add_argument(
        "--attach", metavar="RUN_ID",
        help="follow a stored run instead of sending a message: its events so far, then live "
        "to its end (also a run of a server sharing the store)",
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
        for warning in runtime.plugin_warnings:  # a WINGSPAN_DISABLE name no plugin has
            print(f"wingspan: warning: {warning}", file=sys.stderr)
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
    if args.attach is not None:
        if args.message is not None:
            parser.error("--attach follows a run: give no message with it")
        return
    if args.message is None:
        parser.error("the message is required (or --attach RUN_ID to follow a run)")
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
    progress = Progress(sys.stderr, enabled=sys.stderr.isatty())
    configure_logging(args, progress)
    printer: JsonPrinter | TerminalPrinter = (
        JsonPrinter(runtime, progress) if args.json else TerminalPrinter(progress)
    )
    asyncio.run(_converse(runtime, args, agent, printer, progress))
    return 0


async def _converse(
    runtime: Runtime,
    args: argparse.Namespace,
    agent: Agent,
    printer: JsonPrinter | TerminalPrinter,
    progress: Progress,
) -> None:
    """Open the store, start or resume the session, and stream the run through ``printer``."""
    store = await runtime.open_store(args.store)
    ticker = asyncio.create_task(progress.tick()) if progress.enabled else None
    try:
        activity = Activity(progress)
        if args.attach is not None:
            await _attach(store, args.attach, printer, activity)
            return
        session = await _session(runtime, args, agent, store)
        if not args.store.startswith("memory:"):
            printer.session_id = session.id
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


async def _attach(
    store: Store, run_id: str, printer: JsonPrinter | TerminalPrinter, activity: Activity
) -> None:
    """Show a stored run's events (its stream's, not its lifecycle's) to its end."""
    from .errors import WingspanError
    from .runs import RunHandle
    from .types import ErrorEvent, RunFinished, RunQueued, RunStarted

    handle = RunHandle(record=await store.get_run(run_id), store=store)
    printer.session_id = handle.session_id
    activity.start()
    async for entry in handle.events():
        event = entry.event
        if type(event) is ErrorEvent:
            raise WingspanError(f"run {run_id} ended with {event.error.code}: "
                                f"{event.error.message}")
        if type(event) not in (RunQueued, RunStarted, RunFinished):
            activity.see(event)  # type: ignore[arg-type]
            printer.show(event)  # type: ignore[arg-type]


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
        title=clip(args.message.strip().splitlines()[0], 80),
        runtime=runtime,
    )


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

