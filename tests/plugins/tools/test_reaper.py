"""bash's commands die with the process that started them, even when it is killed by SIGKILL.

Each test runs real processes: a Python program using the SDK runs commands through bash,
the test kills that program with SIGKILL, and the commands' process groups must be gone
soon after (the program's reaper kills them). Every wait is polled against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import wingspan
from wingspan.plugins.tools import reaper
from wingspan.plugins.tools.bash import bash_tools

from .conftest import WAIT, call, context

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads processes' states in /proc"
)

#: What the programs share: the bash tool, and notes for the test written once a command
#: runs and is registered with the reaper (so the test knows what to kill and to look for).
COMMON = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    import wingspan
    from wingspan.plugins.tools import reaper

    work_dir = Path(sys.argv[1])

    def run(command):
        bash = wingspan.get_tools(["bash"])[0]
        context = wingspan.ToolContext(work_dir=work_dir, session_id="s", run_id="r",
                                       tool_use_id="t")
        return bash.call({"command": command}, context)

    def long(name):
        # Writes its process group's id (bash's pid: a new session), then blocks.
        return f"echo $$ > {name}.pgid; sleep 30"

    async def started(name):
        # The group of the command that writes `name`.pgid, once the reaper guards it.
        path = work_dir / f"{name}.pgid"
        while True:
            text = path.read_text() if path.exists() else ""
            if text.endswith("\\n") and int(text) in reaper.shared().groups:
                return int(text)
            await asyncio.sleep(0.01)

    def note(name, *values):
        (work_dir / "note.tmp").write_text(" ".join(map(str, values)))
        (work_dir / "note.tmp").rename(work_dir / name)
""")

#: The SDK's whole loop (a session of an agent with the bash tool) running one command.
LOOP = COMMON + textwrap.dedent("""
    async def main():
        script = [[{"name": "bash", "input": {"command": sys.argv[2]}}], "done"]
        agent = wingspan.Agent(
            name="a", provider=wingspan.get_provider("test", {"script": script}),
            tools=wingspan.get_tools(["bash"]))
        session = wingspan.Session(agent=agent, work_dir=work_dir)
        result = asyncio.ensure_future(session.run("go"))
        if sys.argv[2].startswith("echo $$ > loop.pgid"):
            note("loop", await started("loop"), reaper.shared().helper_pid)
        await result
        note("done", reaper.shared().helper_pid)

    asyncio.run(main())
""")


def state(pid: int) -> str | None:
    """A process's state letter (``Z``: a zombie), or ``None`` when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def runs(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")


def group_runs(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: it is dead, waiting for
    its parent's wait, which the init of a container may never do (so ``killpg(pgid, 0)``,
    which a zombie answers, cannot tell)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Programs:
    """Python programs started by a test, killed at its end with the groups and the
    processes it noted."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.started: list[subprocess.Popen[bytes]] = []
        self.groups: list[int] = []
        self.pids: list[int] = []
        self.log = work_dir / "stderr.log"

    def start(self, source: str, *args: str) -> subprocess.Popen[bytes]:
        return self.run([sys.executable, "-c", source, str(self.work_dir), *args])

    def run(self, argv: list[str], env: dict[str, str] | None = None
            ) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            process = subprocess.Popen(argv, cwd=self.work_dir, env=env,
                                       stdout=subprocess.DEVNULL, stderr=log)
        self.started.append(process)
        return process

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}; the programs' "
                                     f"stderr:\n{self.log.read_text()}")
            time.sleep(0.01)

    def note(self, name: str) -> list[int]:
        """The numbers a program noted under ``name``, once it did."""
        path = self.work_dir / name
        self.wait_until(path.exists, f"a program notes {name!r}")
        return [int(value) for value in path.read_text().split()]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(WAIT)

    def close(self) -> None:
        for kill, pid in [*((os.killpg, g) for g in self.groups),
                          *((os.kill, p) for p in self.pids)]:
            with contextlib.suppress(ProcessLookupError):
                kill(pid, signal.SIGKILL)
        for process in self.started:
            process.kill()
            process.wait(WAIT)


@pytest.fixture
def programs(work_dir: Path) -> Iterator[Programs]:
    started = Programs(work_dir)
    try:
        yield started
    finally:
        started.close()


def test_sigkill_of_a_process_running_the_loop_kills_its_command(programs: Programs) -> None:
    program = programs.start(LOOP, "echo $$ > loop.pgid; sleep 30")
    pgid, helper = programs.note("loop")
    programs.groups.append(pgid)
    assert group_runs(pgid) and runs(helper)
    programs.kill(program)
    programs.wait_until(lambda: not group_runs(pgid), "the command's group is gone")
    programs.wait_until(lambda: not runs(helper), "the reaper has exited")


def test_sigkill_of_a_server_kills_the_command_its_agent_runs(
    programs: Programs, work_dir: Path
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    server = programs.run([sys.executable, "-m", "wingspan.cli", "serve", "--host",
                           "127.0.0.1", "--port", str(port), "--store", "memory://"], env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.poll() is None, programs.log.read_text()
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    programs.wait_until(answers, "the server answers")
    command = "echo $$ > server.tmp && mv server.tmp server.pgid; sleep 25"
    script = [[{"name": "bash", "input": {"command": command}}], "done"]
    with httpx.Client(base_url=base, timeout=WAIT) as http:
        agent = http.post("/agents", json={"name": "a", "provider": "test", "tools": ["bash"],
                                           "options": {"script": script}}).json()["id"]
        session = http.post("/sessions", json={"work_dir": str(work_dir)}).json()["id"]

    def send() -> None:  # answered never: the server is killed in the middle
        body = json.dumps({"agent_id": agent, "message": "go"})
        with contextlib.suppress(httpx.TransportError):
            httpx.post(f"{base}/sessions/{session}/message", content=body, timeout=WAIT,
                       headers={"Content-Type": "application/json"})

    message = threading.Thread(target=send, daemon=True)
    message.start()
    marker = work_dir / "server.pgid"
    programs.wait_until(marker.exists, "the command runs")
    pgid = int(marker.read_text())
    programs.groups.append(pgid)
    assert group_runs(pgid)
    programs.kill(server)
    programs.wait_until(lambda: not group_runs(pgid), "the killed server's command is gone")
    message.join(WAIT)


def test_the_reaper_ends_with_its_process(programs: Programs) -> None:
    program = programs.start(LOOP, "true")
    assert program.wait(WAIT) == 0, programs.log.read_text()
    (helper,) = programs.note("done")
    programs.wait_until(lambda: not runs(helper), "the reaper has exited")


FORKS = COMMON + textwrap.dedent("""
    import time

    asyncio.run(run("true"))  # this process's reaper runs from now on
    parent_reaper = reaper.shared().helper_pid

    idle = os.fork()
    if idle == 0:  # holds the parent's pipe, unless a fork lets go of it
        time.sleep(60)
        os._exit(0)

    busy = os.fork()
    if busy == 0:  # runs a command of its own, guarded by a reaper of its own
        async def child():
            command = asyncio.ensure_future(run(long("child")))
            note("child", await started("child"), reaper.shared().helper_pid)
            await command
        asyncio.run(child())
        os._exit(0)

    async def parent():
        command = asyncio.ensure_future(run(long("parent")))
        note("parent", await started("parent"), parent_reaper, idle, busy)
        await command

    asyncio.run(parent())
""")


def test_a_forked_child_has_a_reaper_of_its_own_and_leaves_its_parents_alone(
    programs: Programs,
) -> None:
    program = programs.start(FORKS)
    parent_group, parent_reaper, idle, busy = programs.note("parent")
    programs.groups.append(parent_group)
    programs.pids += [idle, busy]
    child_group, child_reaper = programs.note("child")
    programs.groups.append(child_group)
    assert child_reaper != parent_reaper and runs(child_reaper) and runs(parent_reaper)
    # The child dies: its command goes; its parent's command and reaper stay.
    os.kill(busy, signal.SIGKILL)
    programs.wait_until(lambda: not group_runs(child_group), "the child's command is gone")
    assert group_runs(parent_group) and runs(parent_reaper)
    # The parent dies while a child that ran nothing still runs: its command goes.
    programs.kill(program)
    assert runs(idle)
    programs.wait_until(lambda: not group_runs(parent_group), "the parent's command is gone")
    programs.wait_until(lambda: not runs(parent_reaper), "the parent's reaper has exited")


REPLACED = COMMON + textwrap.dedent("""
    import signal

    async def main():
        first = asyncio.ensure_future(run(long("first")))
        a = await started("first")
        killed = reaper.shared().helper_pid
        os.kill(killed, signal.SIGKILL)
        os.waitpid(killed, 0)
        second = asyncio.ensure_future(run(long("second")))
        b = await started("second")
        note("reapers", a, b, killed, reaper.shared().helper_pid)
        await asyncio.gather(first, second)

    asyncio.run(main())
""")


def test_a_killed_reaper_is_replaced_by_one_told_of_every_running_command(
    programs: Programs,
) -> None:
    program = programs.start(REPLACED)
    first, second, killed, replacement = programs.note("reapers")
    programs.groups += [first, second]
    assert replacement != killed and runs(replacement)
    assert group_runs(first) and group_runs(second)
    programs.kill(program)
    programs.wait_until(
        lambda: not group_runs(first) and not group_runs(second),
        "both commands are gone, the one started before the reaper was replaced too",
    )


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_bash_runs_when_its_reaper_cannot_start(work_dir: Path) -> None:
    broken = reaper.Reaper(program=(str(work_dir / "no-such-python"), "-c", "pass"))
    tool = bash_tools(broken)[0]
    records = Records()
    logger = logging.getLogger("wingspan.tools")
    logger.addHandler(records)
    try:
        for _ in range(2):
            out = await tool.call({"command": "echo still works"}, context(work_dir))
            assert isinstance(out, wingspan.ToolOutcome)
            assert (out.content, out.is_error) == ("still works\n\n[exit code: 0]", False)
    finally:
        logger.removeHandler(records)
    assert broken.helper_pid is None and not broken.groups
    # Said once, not at every call (it is tried again a minute later).
    assert len(records.messages) == 1, records.messages
    assert "could not start the reaper" in records.messages[0]
    assert "commands run unguarded" in records.messages[0]


async def test_one_reaper_serves_every_call_of_a_process_for_a_write_each(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "bash", {"command": "true"}, work_dir)
    assert not out.is_error
    shared = reaper.shared()
    helper = shared.helper_pid
    assert helper is not None and runs(helper)
    await call(runtime, "bash", {"command": "true"}, work_dir)
    assert shared.helper_pid == helper
    assert not shared.groups  # each call's group was let go once killed
    # Registering costs a pipe write: thousands take a blink. (Ids past any pid: never a
    # real group, should this process die meanwhile.)
    began = time.perf_counter()
    for pgid in range(1 << 30, (1 << 30) + 2000):
        shared.register(pgid)
        shared.unregister(pgid)
    assert time.perf_counter() - began < 1.0
    assert shared.helper_pid == helper and runs(helper)


async def test_a_command_is_guarded_from_the_moment_it_starts(
    runtime: wingspan.Runtime, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start of a command ends with its output pipe being connected, a few event loop
    # turns after the command runs (longer on a busy server): it must be guarded before.
    loop = asyncio.get_running_loop()
    real_connect = loop.connect_read_pipe
    gate = asyncio.Event()

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(loop, "connect_read_pipe", slow_connect)
    marker = work_dir / "pgid"
    running = asyncio.ensure_future(
        call(runtime, "bash", {"command": "echo $$ > pgid.tmp; mv pgid.tmp pgid"}, work_dir))
    try:
        async with asyncio.timeout(WAIT):  # another process writes it: polled
            while True:
                if marker.exists():
                    break
                await asyncio.sleep(0.01)
        assert int(marker.read_text()) in reaper.shared().groups
    finally:
        gate.set()
        out = await asyncio.wait_for(running, WAIT)
    assert out.content == "(no output)\n[exit code: 0]"
    assert int(marker.read_text()) not in reaper.shared().groups
