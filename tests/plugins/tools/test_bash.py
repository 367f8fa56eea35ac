"""bash: output, exit codes, timeouts, bounds — and no process outlives a call."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan.plugins.tools.bash import parse_timeout

from .conftest import WAIT, build_runtime, call, session

#: Starts a background child and a foreground child, recording every pid, then blocks.
TREE = "echo $$ > pids; sleep 300 & echo $! >> pids; echo started; sleep 300 & wait"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return []


async def wait_for_pids(path: Path, count: int) -> list[int]:
    """The pids the command wrote, once it wrote ``count`` (polled: another process)."""
    async with asyncio.timeout(WAIT):
        while True:
            if len(pids := read_pids(path)) >= count:
                return pids
            await asyncio.sleep(0.01)


async def assert_all_gone(pids: list[int]) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if not any(alive(pid) for pid in pids):
                return
            await asyncio.sleep(0.01)


async def test_output_is_interleaved_in_order_with_the_exit_code(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    command = "echo one; echo two >&2; echo three; pwd"
    out = await call(runtime, "bash", {"command": command}, work_dir)
    assert out.content == f"one\ntwo\nthree\n{work_dir}\n\n[exit code: 0]"
    assert not out.is_error


async def test_a_failing_command_is_an_error_that_keeps_its_output(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "bash", {"command": "echo partial; ls /nonexistent-dir; exit 7"},
                     work_dir)
    assert out.is_error
    assert out.content.startswith("partial\nls: ")
    assert out.content.endswith("[exit code: 7]")
    silent = await call(runtime, "bash", {"command": "true"}, work_dir)
    assert silent.content == "(no output)\n[exit code: 0]"
    stdin = await call(runtime, "bash", {"command": "cat; echo after"}, work_dir)
    assert stdin.content == "after\n\n[exit code: 0]"  # no input: nothing waits for it


async def test_a_timeout_kills_the_whole_group_and_returns_the_partial_output(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "bash", {"command": TREE, "timeout": 0.5}, work_dir)
    assert out.is_error
    assert out.content.startswith("started\n")
    assert "timed out after 0.5 s" in out.content and "every process it started" in out.content
    pids = await wait_for_pids(work_dir / "pids", 2)
    await assert_all_gone(pids)


async def test_background_children_do_not_outlive_the_command(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "bash", {"command": "sleep 300 & echo $! > pids; echo done"},
                     work_dir)
    assert out.content == "done\n\n[exit code: 0]"
    (pid,) = await wait_for_pids(work_dir / "pids", 1)
    await assert_all_gone([pid])


async def test_cancelling_the_run_kills_the_whole_group(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    script = [[{"name": "bash", "input": {"command": TREE}}], "never"]
    s = session(runtime, script, work_dir, ["bash"])
    run = asyncio.ensure_future(s.run("go"))
    pids = await wait_for_pids(work_dir / "pids", 2)
    assert all(alive(pid) for pid in pids)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, WAIT)
    await assert_all_gone(pids)
    result = s.history[-1].content[0]
    assert result.is_error and "cancelled" in result.content  # type: ignore[union-attr]


async def test_a_cancel_while_bash_is_starting_still_kills_the_group(
    runtime: wingspan.Runtime, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command runs before the start completes (its output pipe is connected after);
    # a cancel in that window must not leave the command's children behind.
    loop = asyncio.get_running_loop()
    real_connect = loop.connect_read_pipe
    gate = asyncio.Event()

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:
        connected = await real_connect(*args, **kwargs)
        await gate.wait()
        return connected

    monkeypatch.setattr(loop, "connect_read_pipe", slow_connect)
    task = asyncio.ensure_future(call(runtime, "bash", {"command": TREE}, work_dir))
    pids = await wait_for_pids(work_dir / "pids", 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    gate.set()
    await assert_all_gone(pids)


async def test_long_output_keeps_head_and_tail(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "bash", {"command": "seq 1 100000"}, work_dir)
    head, _, rest = out.content.partition("\n[... about ")
    assert head.startswith("1\n2\n3\n") and len(out.content) < 30_300
    assert rest.endswith("99999\n100000\n\n[exit code: 0]")
    assert "bytes of output cut ...]" in rest


async def test_the_output_limit_is_a_setting(work_dir: Path) -> None:
    runtime = build_runtime(bash_output_limit=100)
    out = await call(runtime, "bash", {"command": "printf 'a%.0s' $(seq 1 150)"}, work_dir)
    text = out.content.removesuffix("\n[exit code: 0]")
    assert text == "a" * 50 + "\n[... 50 characters cut ...]\n" + "a" * 50
    bad = await call(build_runtime(bash_output_limit="big"), "bash", {"command": "true"},
                     work_dir)
    assert bad.is_error and "bash_output_limit" in bad.content


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 120.0), (5, 5.0), (2.5, 2.5), ("90", 90.0), ("30s", 30.0), ("2m", 120.0),
     ("1m30s", 90.0), ("500ms", 0.5), ("10 min", 600.0)],
)
def test_timeouts_are_seconds_or_durations(value: float | str | None, seconds: float) -> None:
    assert parse_timeout(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "not a duration"), ("30x", "not a duration"), (0, "more than 0"),
     (-1, "more than 0"), ("11m", "maximum of 600 s"), (601, "maximum of 600 s")],
)
async def test_bad_timeouts_are_explained(
    runtime: wingspan.Runtime, work_dir: Path, value: float | str, message: str
) -> None:
    out = await call(runtime, "bash", {"command": "true", "timeout": value}, work_dir)
    assert out.is_error and message in out.content


async def test_a_signal_is_reported(runtime: wingspan.Runtime, work_dir: Path) -> None:
    out = await call(runtime, "bash", {"command": "echo bye; kill -TERM $$"}, work_dir)
    assert out.is_error and out.content == "bye\n\n[killed by signal SIGTERM]"


def test_no_shell_of_a_call_leaks(work_dir: Path) -> None:
    # The same, from code without a running loop (run_sync builds and closes its own).
    runtime = build_runtime()
    s = session(runtime, [[{"name": "bash", "input": {"command": "echo $$"}}], "ok"],
                work_dir, ["bash"])
    result = s.run_sync("go")
    pid = int(result.tool_calls[0].output.split()[0])
    assert not alive(pid)
    assert os.getpgid(0) != pid
