"""The bash tool: ``bash -c`` in the work dir, in its own process group, killed whole.

The command runs in a new session (``start_new_session``), so it and every process it
starts share one process group, and ``os.killpg`` reaches them all: on timeout, on
cancellation, and when the command ends while children it put in the background still run.
If this process dies first (even by SIGKILL), its :mod:`.reaper` kills the group.
stdout and stderr share one pipe, so the output keeps the order in which it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from wingspan import ToolContext, ToolError, ToolOutcome

from .base import BuiltinTool, cut_middle, given, setting
from .paths import WorkDir, display
from .reaper import Reaper, shared

DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 600.0
DEFAULT_OUTPUT_LIMIT = 30_000
#: How long to wait for the pipe to close once the process group is killed.
DRAIN_TIMEOUT = 5.0
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)", re.IGNORECASE)
#: Keep pagers and colour codes out of the output a model reads.
_ENVIRONMENT = {"PAGER": "cat", "GIT_PAGER": "cat", "TERM": "dumb", "NO_COLOR": "1"}
#: The server's variables a command sees (when set); others only through ``bash_env``.
_PASSED = ("PATH", "HOME", "LANG", "TERM", "USER", "TMPDIR")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Capabilities that let a process read a non-dumpable process's /proc/<pid>/environ and
#: memory: CAP_SYS_PTRACE, and CAP_PERFMON and CAP_SYS_ADMIN (the kernel lets either read
#: another process's environ under PTRACE_MODE_READ).
_PEEKING = {"sys_ptrace": 19, "sys_admin": 21, "perfmon": 38}
_CAP_SETPCAP = 8
_PR_CAPBSET_DROP = 24
#: Drops the capabilities, then runs bash: for hosts without util-linux's setpriv. A fresh
#: interpreter is single-threaded, so this is safe where a preexec_fn in the server is not.
_DROP_THEN_EXEC = f"""\
import ctypes, os, sys
prctl = ctypes.CDLL(None, use_errno=True).prctl
for cap in map(int, sys.argv[1].split(",")):
    if prctl({_PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:
        sys.exit(f"cannot drop capability {{cap}}: {{os.strerror(ctypes.get_errno())}}")
os.execvp(sys.argv[2], sys.argv[2:])
"""

DESCRIPTION = f"""\
Run a bash command in the work dir and return its output and exit code.

Usage:
- The command runs as `bash -c <command>` with the work dir as current directory, with no \
input (stdin is empty: interactive prompts get end-of-file) and a minimal environment (PATH, \
HOME, LANG, USER, TMPDIR; no credentials of the server). Use non-interactive flags (`-y`, \
`--no-pager`, ...). Chain dependent commands with `&&`; \
quote paths that contain spaces.
- stdout and stderr are returned together, in the order they were written, followed by the \
exit code. A non-zero exit code is reported as an error, with the output.
- `timeout`: seconds (a number) or a duration such as `"30s"`, `"2m"` or `"1m30s"`; default \
{DEFAULT_TIMEOUT:.0f} s, at most {MAX_TIMEOUT:.0f} s. On timeout the command and every process \
it started are killed and you get the output so far.
- Processes left running in the background (`cmd &`) are killed when the command ends: a \
command cannot leave a server running for a later call. Start it, use it and stop it within \
one command.
- Output longer than the limit (30,000 characters by default) keeps its beginning and end, \
with a marker saying how much was cut in the middle: redirect long output to a file and \
read or grep that file instead.
- Prefer the dedicated tools to shell equivalents: read (not cat/head/tail), write and edit \
(not echo >, sed -i), glob (not find/ls), grep (not grep/rg)."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The bash command to run."},
        "timeout": {
            "anyOf": [{"type": "number"}, {"type": "string"}],
            "description": "Seconds, or a duration like \"30s\", \"2m\" (default 120 s, at "
            "most 600 s).",
        },
    },
    "required": ["command"],
    "additionalProperties": False,
}


def parse_timeout(value: float | str | None) -> float:
    """Seconds from a number or a duration (``"90"``, ``"30s"``, ``"2m"``, ``"1m30s"``,
    ``"500ms"``). :raises ToolError: when it is malformed, not positive, or over the maximum."""
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pieces = _DURATION.findall(text)
            if not pieces or _DURATION.sub("", text).strip():
                raise ToolError(
                    f"timeout {value!r} is not a duration: give seconds (120) or a duration "
                    "such as \"30s\", \"2m\" or \"1m30s\""
                ) from None
            seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in pieces)
    else:
        seconds = float(value)
    if not seconds > 0:
        raise ToolError(f"timeout must be more than 0 seconds, got {value!r}")
    if seconds > MAX_TIMEOUT:
        raise ToolError(
            f"timeout {value!r} is over the maximum of {MAX_TIMEOUT:.0f} s; use at most 600 s "
            "(or run the work in smaller steps)"
        )
    return seconds


class _Output:
    """A command's output, bounded in memory: the first and the last ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self.limit:
                del self.tail[: len(self.tail) - self.limit]

    def text(self, limit: int) -> str:
        """The output, at most ``limit`` characters of it (a byte that is not UTF-8 counts
        as one, and shows as ``\\xNN``, as file names do: ``ls`` and glob agree)."""
        if self.total <= len(self.head) + len(self.tail):
            return display(cut_middle(_decode(self.head + self.tail), limit))
        half = limit // 2
        head = _decode(self.head)[:half]
        tail = _decode(self.tail[-self.limit:])
        tail = tail[len(tail) - half:] if len(tail) > half else tail
        cut = self.total - _size(head) - _size(tail)
        return display(f"{head}\n[... about {cut:,} bytes of output cut ...]\n{tail}")


def _decode(output: bytes | bytearray) -> str:
    # One surrogate per byte that is not UTF-8: counted exactly, shown by display().
    return output.decode("utf-8", "surrogateescape")


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _effective_capabilities() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def launcher() -> tuple[str, ...]:
    """What runs before ``bash -c``: on Linux, when this process holds capabilities that
    read other processes' environments (root has them), a program that drops them from the
    command's bounding and inheritable sets, so neither bash nor anything it starts (setuid
    programs included) has them. util-linux's ``setpriv`` when installed, else a short
    Python program; nothing when there is nothing to drop or no right to drop it."""
    if not sys.platform.startswith("linux"):
        return ()
    capabilities = _effective_capabilities()
    held = {name: bit for name, bit in _PEEKING.items() if capabilities >> bit & 1}
    if not held or not capabilities >> _CAP_SETPCAP & 1:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        drop = ",".join(f"-{name}" for name in held)
        return (setpriv, "--bounding-set", drop, "--inh-caps", drop, "--")
    bits = ",".join(str(bit) for bit in held.values())
    return (sys.executable, "-I", "-S", "-c", _DROP_THEN_EXEC, bits)


def environment(context: ToolContext, server: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of a command: a few of the server's variables, those the
    ``bash_env`` setting names, and the pager and colour settings.

    :raises ToolError: when ``bash_env`` is not a list of variable names.
    """
    allowed = context.settings.get("bash_env", [])
    if (
        isinstance(allowed, str)
        or not isinstance(allowed, Sequence)
        or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in allowed)
    ):
        raise ToolError(
            "the tool setting 'bash_env' must be a list of environment variable names such "
            f"as [\"JAVA_HOME\", \"GOPATH\"], not {allowed!r}"
        )
    passed = {name: server[name] for name in (*_PASSED, *allowed) if name in server}
    return {**passed, **_ENVIRONMENT}


async def _bash(
    input: dict[str, Any], context: ToolContext, prefix: tuple[str, ...], reaper: Reaper
) -> ToolOutcome:
    work_dir = WorkDir.of(context)
    timeout = parse_timeout(input.get("timeout"))
    limit = setting(context, "bash_output_limit", DEFAULT_OUTPUT_LIMIT)
    command: str = input["command"]
    env = environment(context)
    spawn = asyncio.ensure_future(_start(prefix, command, work_dir.root, env, reaper))
    try:
        started = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # The command may already run: kill its whole group as soon as the start completes.
        spawn.add_done_callback(functools.partial(_abandon, reaper))
        raise
    process = started.process
    output = _Output(limit)
    reader = asyncio.ensure_future(_read_all(started.stdout, output))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await _exited(process)
        except TimeoutError:
            timed_out = True
    finally:
        # Finished, timed out or cancelled: nothing the command started outlives the call.
        _kill_group(process.pid, reaper)
        await _finish(started, reader)
    text = output.text(limit)
    if timed_out:
        return ToolOutcome(
            content=f"{text}\n[The command timed out after {_seconds(timeout)} and was killed, "
            "with every process it started; the output above is what it wrote until then.]",
            is_error=True,
        )
    code = process.returncode
    assert code is not None
    if code < 0:
        name = _signal_name(-code)
        return ToolOutcome(content=f"{text}\n[killed by signal {name}]", is_error=True)
    body = text if text else "(no output)"
    return ToolOutcome(content=f"{body}\n[exit code: {code}]", is_error=code != 0)


class _Started:
    """A running command: bash, and the read end of the pipe its output goes to."""

    __slots__ = ("process", "stdout", "transport")

    def __init__(
        self, process: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
        transport: asyncio.ReadTransport,
    ) -> None:
        self.process = process
        self.stdout = stdout
        self.transport = transport


async def _start(
    prefix: tuple[str, ...], command: str, cwd: str, env: dict[str, str], reaper: Reaper
) -> _Started:
    process = _spawn(prefix, command, cwd, env, reaper)
    assert process.stdout is not None
    stdout = asyncio.StreamReader()
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stdout), process.stdout
        )
    except BaseException:
        _kill_group(process.pid, reaper)
        process.stdout.close()
        _reap_killed(process)
        raise
    return _Started(process, stdout, transport)


#: What bash runs: the command, once the server has registered bash's group with the
#: reaper (a line on the gate's pipe, whose number is ``$1``). Until then the command has done
#: nothing, so a server killed before it could register leaves nothing behind: the gate then
#: reads end-of-file and bash exits without running the command.
#: The command then runs as with ``bash -c``: no positional parameters, no variable of ours.
_GATED = (
    'IFS= read -r _ <&"$1" || exit 125; exec {gate}<&-; __wingspan_command=$2; set --; '
    'eval -- "unset -v __wingspan_command; $__wingspan_command"'
)


def _spawn(
    prefix: tuple[str, ...], command: str, cwd: str, env: dict[str, str], reaper: Reaper
) -> subprocess.Popen[bytes]:
    """Start bash (found on the server's PATH, whatever the command's PATH is) in a new
    session, register its group with the reaper, then let the command run.

    Synchronous on purpose: asyncio.create_subprocess_exec starts the process the same
    way, but then awaits its pipes' set-up before it returns; a process killed meanwhile
    would leave the command running unregistered.
    """
    gate, opened = os.pipe()
    try:
        script = _GATED.replace("{gate}", str(gate))
        argv = [*prefix, shutil.which("bash") or "bash", "-c", script, "bash", str(gate),
                command]
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                pass_fds=(gate,),
            )
        except OSError as exc:
            raise ToolError(f"cannot start bash: {exc.strerror or exc}") from None
        os.close(gate)
        gate = -1
        reaper.register(process.pid)  # its pid is its process group's id (a new session)
        os.write(opened, b"go\n")
    finally:
        if gate >= 0:
            os.close(gate)
        os.close(opened)
    return process


def _abandon(reaper: Reaper, spawn: asyncio.Future[_Started]) -> None:
    """Kill a command whose call was cancelled while it started, and let go of it."""
    if spawn.cancelled() or spawn.exception() is not None:
        return
    started = spawn.result()
    _kill_group(started.process.pid, reaper)
    started.transport.close()
    _reap_killed(started.process)


def _reap_killed(process: subprocess.Popen[bytes]) -> None:
    # Killed with SIGKILL a moment ago: bash is gone at once (unless stuck in the kernel).
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)


async def _read_all(stdout: asyncio.StreamReader, output: _Output) -> None:
    while chunk := await stdout.read(65536):
        output.add(chunk)


def _kill_group(pid: int, reaper: Reaper) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    # Before bash is reaped: until then its pid, the group's id, is given to no one else.
    reaper.unregister(pid)


async def _finish(started: _Started, reader: asyncio.Future[None]) -> None:
    """Reap the killed process and take the rest of its output, even if the caller is
    cancelled meanwhile (a second cancellation is passed on once this is done)."""
    task = asyncio.ensure_future(_reap(started, reader))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _exited(process: subprocess.Popen[bytes]) -> None:
    """Wait until bash itself exits, and reap it. (Not until the pipe closes: a child left
    in the background keeps it open.)"""
    if process.poll() is not None:
        return
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux (or an old one): ask now and then
        while True:
            if process.poll() is not None:
                return
            await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    try:
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    process.poll()


async def _reap(started: _Started, reader: asyncio.Future[None]) -> None:
    # The pipe closes once every process holding it is gone; one that left the group
    # (setsid) could hold it forever, so the wait is bounded.
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await asyncio.shield(reader)
    except TimeoutError:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    started.transport.close()  # closed already at the end of the output
    await _exited(started.process)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def bash_tools(reaper: Reaper | None = None) -> list[BuiltinTool]:
    """The bash tool. :param reaper: what guards its commands (default: this process's
    reaper, :func:`.reaper.shared`)."""
    prefix = launcher()  # once: the server's capabilities do not change

    async def bash(input: dict[str, Any], context: ToolContext) -> ToolOutcome:
        return await _bash(input, context, prefix, reaper or shared())

    return [BuiltinTool(name="bash", description=DESCRIPTION, input_schema=SCHEMA, body=bash,
                        subject=subject)]


def subject(input: Mapping[str, Any], context: ToolContext | None) -> str:
    """What a permission rule on bash matches: the command, exactly as given."""
    return given(input, "command")
