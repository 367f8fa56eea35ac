"""Every tool through the real loop: Session + Agent + the scripted test provider."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest

import wingspan
from wingspan import check_history
from wingspan.plugins.tools.base import run_blocking
from wingspan.plugins.tools.paths import WorkDir
from wingspan.plugins.tools.search import Grep

from .conftest import WAIT, session

TOOL_NAMES = ["bash", "edit", "glob", "grep", "read", "webfetch", "write"]


def test_the_plugin_registers_the_seven_tools(runtime: wingspan.Runtime) -> None:
    assert sorted(runtime.tools) == TOOL_NAMES
    for tool in runtime.tools.values():
        assert isinstance(tool, wingspan.Tool)
        schema = tool.input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        assert all(p.get("description") for p in schema["properties"].values())
        assert len(tool.description) > 300, tool.name  # says how to use it, with limits
        json.dumps(schema)


async def test_a_coding_session_writes_edits_reads_searches_and_runs(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    script = [
        [{"name": "write", "input": {"path": "src/app.py", "content": "print('hi')\n"}}],
        [{"name": "edit", "input": {"path": "src/app.py", "old_string": "'hi'",
                                     "new_string": "'hello'"}}],
        [
            {"name": "read", "input": {"path": "src/app.py"}},
            {"name": "glob", "input": {"pattern": "**/*.py"}},
            {"name": "grep", "input": {"pattern": "hel+o", "include": "*.py"}},
        ],
        [{"name": "bash", "input": {"command": "python3 src/app.py", "timeout": "30s"}}],
        "done",
    ]
    s = session(runtime, script, work_dir, TOOL_NAMES)
    result = await asyncio.wait_for(s.run("make an app"), WAIT)
    outputs = {c.tool_name: c for c in result.tool_calls}
    assert [c.tool_name for c in result.tool_calls] == [
        "write", "edit", "read", "glob", "grep", "bash"]
    assert not any(c.is_error for c in result.tool_calls), result.tool_calls
    assert (work_dir / "src" / "app.py").read_text() == "print('hello')\n"
    assert "+print('hello')" in outputs["edit"].output
    assert outputs["read"].output == "     1\tprint('hello')"
    assert outputs["glob"].output == "src/app.py"
    assert outputs["grep"].output == "src/app.py:1: print('hello')"
    assert outputs["bash"].output == "hello\n\n[exit code: 0]"
    assert result.response == "done"
    check_history(s.history)


async def test_failures_reach_the_model_as_error_results(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    script = [
        [
            {"name": "read", "input": {"path": "../outside/secret.txt"}},
            {"name": "edit", "input": {"path": "missing.txt", "old_string": "a",
                                       "new_string": "b"}},
            {"name": "grep", "input": {"pattern": "("}},
            {"name": "bash", "input": {"command": "exit 3"}},
            {"name": "webfetch", "input": {"url": "http://127.0.0.1:9/"}},
            {"name": "read", "input": {"path": 5}},
        ],
        "ok",
    ]
    result = await asyncio.wait_for(
        session(runtime, script, work_dir, TOOL_NAMES).run("go"), WAIT
    )
    assert all(c.is_error for c in result.tool_calls)
    read, edit, grep, bash, fetch, bad = (c.output for c in result.tool_calls)
    assert "outside the work dir" in read and "SECRET" not in read
    assert "use write to create it" in edit
    assert "invalid regular expression" in grep
    assert "[exit code: 3]" in bash
    assert "loopback" in fetch
    assert "invalid input" in bad
    assert "Traceback" not in "".join(c.output for c in result.tool_calls)


@pytest.mark.parametrize(
    ("name", "input"),
    [
        ("bash", {"command": "pwd"}),
        ("read", {"path": "a"}),
        ("write", {"path": "a", "content": ""}),
        ("edit", {"path": "a", "old_string": "x", "new_string": "y"}),
        ("glob", {"pattern": "*"}),
        ("grep", {"pattern": "x"}),
    ],
)
async def test_without_a_work_dir_file_tools_and_bash_say_so(
    runtime: wingspan.Runtime, name: str, input: dict[str, object]
) -> None:
    result = await asyncio.wait_for(
        session(runtime, [[{"name": name, "input": input}], "ok"], None, [name]).run("go"), WAIT
    )
    (only,) = result.tool_calls
    assert only.is_error
    assert "no work dir" in only.output and "work_dir" in only.output


async def test_cancelling_a_call_stops_its_worker_thread() -> None:
    # glob, grep, read, write and edit run in worker threads through run_blocking: the
    # thread sees the cancellation and ends instead of running on unobserved.
    loop = asyncio.get_running_loop()
    started, ended = asyncio.Event(), asyncio.Event()
    how: list[str] = []

    def work(stop: threading.Event) -> None:
        loop.call_soon_threadsafe(started.set)
        how.append("stopped" if stop.wait(WAIT) else "ran to the end")
        loop.call_soon_threadsafe(ended.set)

    task = asyncio.ensure_future(run_blocking(work))
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ended.wait(), WAIT)
    assert how == ["stopped"]


async def test_a_stopped_grep_walks_no_further(work_dir: Path) -> None:
    for i in range(50):
        (work_dir / f"f{i}.txt").write_text("match\n")
    stop = threading.Event()
    stop.set()
    grep = Grep(WorkDir(work_dir), re.compile("match"), None, False)
    assert grep.run(".", stop) == ""
    assert grep.matches == 0
