"""The ``wingspan`` command: list plugins, tools and providers, run an agent, serve."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .errors import WingspanError

if TYPE_CHECKING:
    from .runtime import Runtime
    from .types import StreamEvent

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _build_parser() -> argparse.ArgumentParser:
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
        "their results, usage and steps go to stderr.",
    )
    run.add_argument("message", help="the user message")
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
    run.add_argument("--work-dir", default=None, help="directory the tools work in")
    run.add_argument("--instructions", default="", help="the system prompt")
    run.add_argument("--max-steps", type=int, default=50, help="most model calls (default 50)")
    run.add_argument(
        "--json", action="store_true", help="print every event as a JSON line instead"
    )

    serve = commands.add_parser(
        "serve",
        help="serve the runtime (HTTP + SSE by default)",
        description="Start a transport; settings not given here come from --config, then "
        "WINGSPAN_* environment variables.",
    )
    serve.add_argument("--transport", default="http", help="transport name (default: http)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 2323)")
    serve.add_argument("--db", help="SQLite database path")
    serve.add_argument("--store", help="store URL, for any store plugin")
    serve.add_argument("--token", help="bearer token clients must send")
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without a token"
    )
    serve.add_argument("--config", help="TOML configuration file")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wingspan`` command. :returns: the exit status."""
    args = _build_parser().parse_args(argv)
    try:
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


def _run(runtime: Runtime, args: argparse.Namespace) -> int:
    from .agent import Agent
    from .session import Session

    agent = Agent(
        name="cli",
        instructions=args.instructions,
        provider=runtime.get_provider(args.provider, _parse_options(args.option, args.model)),
        tools=runtime.get_tools(args.tools.split(",")) if args.tools.strip() else [],
        max_steps=args.max_steps,
    )
    session = Session(agent=agent, work_dir=args.work_dir, runtime=runtime)
    printer = _JsonPrinter(runtime) if args.json else _TerminalPrinter()
    asyncio.run(_stream(session, args.message, printer))
    return 0


async def _stream(session: Any, message: str, printer: Any) -> None:
    async with session.stream(message) as events:
        async for event in events:
            printer.show(event)


class _JsonPrinter:
    def __init__(self, runtime: Runtime) -> None:
        self._converter = runtime.converter

    def show(self, event: StreamEvent) -> None:
        from .wire import dumps

        sys.stdout.write(dumps(event, self._converter) + "\n")
        sys.stdout.flush()


class _TerminalPrinter:
    """Text as it comes on stdout; tool activity, usage and steps on stderr."""

    def __init__(self) -> None:
        self._tools: dict[int, tuple[str, list[str]]] = {}
        self._at_line_start = True
        self._wrote_text = False

    def show(self, event: StreamEvent) -> None:
        from . import types as t

        kind = type(event)
        if kind is t.TextDelta:
            sys.stdout.write(event.text)  # type: ignore[union-attr]
            sys.stdout.flush()
            self._at_line_start = event.text.endswith("\n")  # type: ignore[union-attr]
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
                sys.stdout.write("\n")
                sys.stdout.flush()
                self._at_line_start = True
            usage = event.usage  # type: ignore[union-attr]
            self._line(
                f"[{event.steps} step{'s' if event.steps != 1 else ''} · "  # type: ignore[union-attr]
                f"{usage.input_tokens} input + {usage.output_tokens} output tokens · "
                f"{len(event.tool_calls)} tool call{'s' if len(event.tool_calls) != 1 else ''} · "  # type: ignore[union-attr]
                f"stop: {event.stop_reason}]"  # type: ignore[union-attr]
            )

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._at_line_start = True
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
    settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "transport") and value not in (None, False)
    }
    asyncio.run(spec.serve(runtime, settings))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

