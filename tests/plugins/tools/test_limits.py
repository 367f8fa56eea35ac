"""Nothing a file tool is pointed at can hang it or exhaust memory: FIFOs are refused without
blocking, every call has a time limit, big files are streamed or refused, odd names shown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import wingspan
from wingspan.plugins.tools import files

from .conftest import WAIT, build_runtime, call


def release(fifo: Path) -> None:
    """Give whatever waits in ``open(fifo)`` a writer and then end-of-file (old code blocked
    there; without this its stuck threads would keep the test's loop from closing)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))


async def test_fifos_are_refused_at_once_and_do_not_stall_other_sessions(
    runtime: wingspan.Runtime, work_dir: Path, tmp_path: Path
) -> None:
    os.mkfifo(work_dir / "fifo")
    (work_dir / "notes.txt").write_text("needle\n")
    other = tmp_path / "other-session"
    other.mkdir()
    (other / "f.txt").write_text("still works\n")
    # More readers than the default executor has threads (at most 32): each used to block
    # a worker forever in open(), and every other session's file tools queued behind them.
    readers = [call(runtime, "read", {"path": "fifo"}, work_dir) for _ in range(40)]
    others = [
        call(runtime, "edit", {"path": "fifo", "old_string": "a", "new_string": "b"}, work_dir),
        call(runtime, "write", {"path": "fifo", "content": "x"}, work_dir),
        call(runtime, "grep", {"pattern": "x", "path": "fifo"}, work_dir),
        call(runtime, "grep", {"pattern": "needle"}, work_dir),
    ]
    try:
        async with asyncio.timeout(WAIT):
            calls = asyncio.gather(*readers, *others)
            elsewhere = await call(runtime, "read", {"path": "f.txt"}, other)
            outcomes = await calls
    finally:
        release(work_dir / "fifo")
    assert elsewhere.content == "     1\tstill works"
    *reads, edit, write, grep_fifo, grep_tree = outcomes
    for out in [*reads, edit, write, grep_fifo]:
        assert out.is_error and "fifo is a named pipe (FIFO), not a regular file" in out.content
    assert grep_tree.content == "notes.txt:1: needle"  # the FIFO in the tree is skipped
    assert (work_dir / "fifo").is_fifo()


async def test_a_call_over_its_time_limit_is_an_error_and_its_thread_is_stopped(
    runtime: wingspan.Runtime, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (work_dir / "f.txt").write_text("x\n")
    stopped = threading.Event()

    def stuck(*args: object) -> str:  # a read that hangs (a dead network file system)
        stop = args[-1]
        assert isinstance(stop, threading.Event)
        if stop.wait(WAIT):
            stopped.set()
        return "finished late"

    monkeypatch.setattr(files, "_read_lines", stuck, raising=False)
    out = await asyncio.wait_for(
        call(runtime, "read", {"path": "f.txt"}, work_dir, tool_timeout=0.2), WAIT
    )
    assert out.is_error
    assert "read timed out after 0.2 s and was stopped" in out.content
    assert "tool_timeout" in out.content
    assert await asyncio.to_thread(stopped.wait, WAIT)  # told to stop, not left running


async def test_stuck_calls_do_not_starve_other_sessions(
    runtime: wingspan.Runtime, work_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (work_dir / "stuck.txt").write_text("x\n")
    other = tmp_path / "other-session"
    other.mkdir()
    (other / "f.txt").write_text("still works\n")
    real_read_lines = files._read_lines

    def read_lines(*args: object) -> str:
        stop = args[-1]
        assert isinstance(stop, threading.Event)
        if args[1] == "stuck.txt":
            stop.wait(WAIT)
            return "finished late"
        return real_read_lines(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "_read_lines", read_lines)
    # More stuck calls than a default executor's threads (at most 32).
    stuck = [
        asyncio.ensure_future(call(runtime, "read", {"path": "stuck.txt"}, work_dir))
        for _ in range(40)
    ]
    try:
        elsewhere = await asyncio.wait_for(call(runtime, "read", {"path": "f.txt"}, other), WAIT)
        assert elsewhere.content == "     1\tstill works"
        assert not any(task.done() for task in stuck)
    finally:
        for task in stuck:
            task.cancel()  # sets each stop event: the threads end
        await asyncio.gather(*stuck, return_exceptions=True)


@pytest.mark.parametrize("value", [0, -1, "fast", True, float("nan")])
async def test_a_bad_time_limit_setting_is_named(
    work_dir: Path, value: object
) -> None:
    runtime = build_runtime(tool_timeout=value)
    out = await call(runtime, "glob", {"pattern": "*"}, work_dir)
    assert out.is_error and "'tool_timeout' must be a positive number" in out.content


CHILD = textwrap.dedent("""
    import asyncio, json, resource, sys
    from wingspan import ToolContext, ToolError
    from wingspan.testing import make_runtime

    tools = make_runtime().tools
    work_dir = sys.argv[1]

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    async def run(name, input):
        context = ToolContext(work_dir=work_dir, session_id="s", run_id="r",
                              tool_use_id="t", settings={})
        try:
            return await tools[name].call(input, context)
        except ToolError as exc:
            return "error: " + str(exc)

    async def main():
        await run("read", {"path": "small.txt"})  # load every code path first
        await run("edit", {"path": "small.txt", "old_string": "a", "new_string": "b"})
        before = peak()
        read = await run("read", {"path": "line.txt"})
        after_read = peak()
        edit = await run("edit", {"path": "sparse.txt", "old_string": "a", "new_string": "b"})
        after_edit = peak()
        print(json.dumps({"read": read[-200:], "edit": edit, "before": before,
                          "read_peak": after_read, "edit_peak": after_edit}))

    asyncio.run(main())
""")


def test_read_streams_big_files_and_edit_refuses_them(work_dir: Path) -> None:
    (work_dir / "small.txt").write_text("a\n")
    line_size = 100 * 1024 * 1024
    with open(work_dir / "line.txt", "wb") as line:  # one 100 MB line
        block = b"x" * (1 << 20)
        for _ in range(line_size // len(block)):
            line.write(block)
    with open(work_dir / "sparse.txt", "wb") as sparse:  # 200 MB, made in no time
        sparse.truncate(200 * 1024 * 1024)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(work_dir)],
        capture_output=True, text=True, timeout=WAIT * 3, check=False,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    read_growth = result["read_peak"] - result["before"]
    edit_growth = result["edit_peak"] - result["before"]
    assert result["read"].endswith(f"... [line cut: {line_size - 2000} more characters]")
    assert result["edit"] == (
        "error: sparse.txt is 200.0 MiB (209,715,200 bytes), over edit's limit of 10.0 MiB "
        "(10,485,760 bytes, the server's 'edit_max_bytes' setting); change it with bash "
        "(e.g. sed) or split the file"
    )
    # The old code held the whole line (several copies of it: ~1 GB for 400 MB), and edit
    # the whole file; now both stay within a few MB of what the interpreter already used.
    assert read_growth < 16 * 1024 * 1024, read_growth
    assert edit_growth < 16 * 1024 * 1024, edit_growth


async def test_the_edit_size_limit_is_a_setting(work_dir: Path) -> None:
    (work_dir / "f.txt").write_text("a = 1\n" * 100)  # 600 bytes
    small = build_runtime(edit_max_bytes=500)
    refused = await call(small, "edit", {"path": "f.txt", "old_string": "a = 1\n" * 100,
                                         "new_string": "b"}, work_dir)
    assert refused.is_error and "(600 bytes), over edit's limit" in refused.content
    assert "(500 bytes, the server's 'edit_max_bytes' setting)" in refused.content
    fine = await call(build_runtime(edit_max_bytes=600), "edit",
                      {"path": "f.txt", "old_string": "a = 1\n" * 100, "new_string": "b"},
                      work_dir)
    assert not fine.is_error and (work_dir / "f.txt").read_text() == "b"


async def test_names_that_are_not_utf8_are_shown_escaped(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    odd = os.fsdecode(b"caf\xe9")
    (work_dir / odd).mkdir()
    (work_dir / odd / "n.txt").write_text("needle\n")
    outcomes = [
        await call(runtime, "glob", {"pattern": "**/*.txt"}, work_dir),
        await call(runtime, "grep", {"pattern": "needle"}, work_dir),
        await call(runtime, "read", {"path": "."}, work_dir),
        await call(runtime, "read", {"path": odd + "/n.txt"}, work_dir),
        await call(runtime, "write", {"path": odd + "/new.txt", "content": "x"}, work_dir),
    ]
    for out in outcomes:
        out.content.encode("utf-8")  # a model's request carries it: it must encode
    glob, grep, listing, read, write = (out.content for out in outcomes)
    assert glob == "caf\\xe9/n.txt"
    assert grep == "caf\\xe9/n.txt:1: needle"
    assert listing.endswith("caf\\xe9/")
    assert read == "     1\tneedle"
    assert write == "Wrote 1 bytes to caf\\xe9/new.txt (new file)."
