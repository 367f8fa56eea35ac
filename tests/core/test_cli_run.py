"""`wingspan run` as a user runs it: progress on a terminal, stdin, usage errors, and
conversations kept in the store the server uses.

This module is also a plugin (loaded by module path in the command's process): the
provider ``flaky`` reports a retry on the ``wingspan.providers`` logger, as a provider
retrying a failed request does, then answers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

import wingspan
from wingspan import InferenceRequest, ProviderSpec, StreamEvent

ROOT = Path(__file__).resolve().parents[2]
#: Every wait on a process is bounded by this many seconds.
WAIT = 60.0
RETRY = "flaky: retrying in 2 s (attempt 2 of 3)"


class FlakyProvider:
    """Says it is retrying (as a provider whose first request failed), then answers."""

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        from wingspan.testing import scripted

        logging.getLogger("wingspan.providers").info(RETRY)
        async for event in scripted(["answered after a retry"]).stream(request):
            yield event


def flaky(options: Mapping[str, Any]) -> FlakyProvider:
    return FlakyProvider()


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [ProviderSpec(name="flaky", display_name="Flaky", factory=flaky)]


def environment(data_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    env["XDG_DATA_HOME"] = str(data_home)  # the default SQLite store, in the test's dir
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["WINGSPAN_PLUGINS"] = "tests.core.test_cli_run"
    env.update(extra)
    return env


def wingspan_run(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "run", *args], input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=WAIT, env=env, cwd=cwd,
    )


def on_a_terminal(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run ``wingspan run`` with stderr on a pseudo-terminal: (status, stdout, what the
    terminal got)."""
    master, slave = os.openpty()
    with tempfile.TemporaryFile() as stdout:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "wingspan.cli", "run", *args],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave, env=env, cwd=cwd,
            )
        finally:
            os.close(slave)
        terminal = b""
        deadline = time.monotonic() + WAIT
        try:
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the command did not end in time: {terminal!r}"
                ready, _, _ = select.select([master], [], [], remaining)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the command closed the terminal (it exited)
                    break
                if not data:
                    break
                terminal += data
            status = process.wait(timeout=WAIT)
        finally:
            os.close(master)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT)
        stdout.seek(0)
        return status, stdout.read().decode(), terminal.decode(errors="replace")


GLOB_SCRIPT = json.dumps([
    {"text": "Looking.", "tool_calls": [{"name": "glob", "input": {"pattern": "*.txt"}}]},
    "Found a.txt.",
])


def test_a_terminal_is_told_what_the_run_waits_for(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    status, stdout, terminal = on_a_terminal(
        "go", "--tools", "glob", "-o", f"script={GLOB_SCRIPT}", env=environment(tmp_path),
        cwd=tmp_path)
    assert status == 0, terminal
    assert stdout == "Looking.\nFound a.txt.\n"
    for shown in ("waiting for the model…", "running glob…", "waiting for the model (step 2)…"):
        assert f"\r\x1b[K{shown}" in terminal, (shown, terminal)
    assert "← glob: a.txt" in terminal
    assert terminal.endswith("\x1b[K[2 steps · " + terminal.rpartition("[2 steps · ")[2])


def test_without_a_terminal_nothing_extra_is_written(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    out = wingspan_run("go", "--tools", "glob", "-o", f"script={GLOB_SCRIPT}",
                       env=environment(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[:2] == ['→ glob({"pattern":"*.txt"})', "← glob: a.txt"]
    assert len(lines) == 3 and lines[2].startswith("[2 steps · ")
    assert "waiting" not in out.stderr and "\x1b" not in out.stderr and "\r" not in out.stderr


def test_a_retry_is_shown_on_a_terminal_and_logged_with_verbose(tmp_path: Path) -> None:
    env = environment(tmp_path)
    status, stdout, terminal = on_a_terminal("go", "--provider", "flaky", env=env, cwd=tmp_path)
    assert (status, stdout) == (0, "answered after a retry\n"), terminal
    assert f"\r\x1b[K{RETRY}…" in terminal
    assert "INFO" not in terminal  # a progress line, not a log line, at the default level

    quiet = wingspan_run("go", "--provider", "flaky", env=env)
    assert quiet.returncode == 0 and "retrying" not in quiet.stderr
    for flag in (["--verbose"], ["-v"], ["--log-level", "debug"], ["--log-level", "info"]):
        out = wingspan_run("go", "--provider", "flaky", *flag, env=env)
        assert out.returncode == 0, out.stderr
        assert f"wingspan: INFO: wingspan.providers: {RETRY}\n" in out.stderr, flag
    out = wingspan_run("go", "--provider", "flaky", "--log-level", "warning", env=env)
    assert "retrying" not in out.stderr
    out = wingspan_run("go", "--log-level", "loud", env=env)
    assert out.returncode == 2 and "argument --log-level: invalid choice: 'loud'" in out.stderr


def test_dash_reads_the_message_from_stdin(tmp_path: Path) -> None:
    out = wingspan_run("-", env=environment(tmp_path), stdin="What is here?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "This is the test provider answering: What is here?\n"


async def test_an_empty_message_is_refused_in_the_servers_words(tmp_path: Path) -> None:
    from wingspan.plugins.http.app import create_app
    from wingspan.plugins.http.config import ServerConfig
    from wingspan.testing import make_runtime

    app = create_app(make_runtime(), ServerConfig(store="memory://"))
    async with app.test_app():
        client = app.test_client()
        agent = await (await client.post("/agents", json={"name": "a"})).get_json()
        session = await (await client.post("/sessions", json={})).get_json()
        answer = await client.post(f"/sessions/{session['id']}/message",
                                   json={"agent_id": agent["id"], "message": "  "})
        refusal = (await answer.get_json())["error"]
    assert answer.status_code == 400 and refusal == "message must not be empty"
    env = environment(tmp_path)
    for args, stdin in [(["", "--json"], None), ([" \n "], None), (["-"], ""), (["-"], "\n")]:
        out = wingspan_run(*args, env=env, stdin=stdin)
        assert out.returncode == 2, args
        assert out.stderr.startswith("usage: wingspan run ")
        assert out.stderr.endswith(f"wingspan run: error: {refusal}\n")
    assert not (tmp_path / "wingspan").exists()  # refused before any store was opened


def test_tools_work_in_the_current_directory_by_default(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    out = wingspan_run("go", "--tools", "glob", "-o", f"script={GLOB_SCRIPT}",
                       env=environment(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "← glob: a.txt\n" in out.stderr


@pytest.mark.parametrize("steps", ["0", "1001", "-3", "many", "2.5"])
def test_max_steps_out_of_range_says_what_to_pass(tmp_path: Path, steps: str) -> None:
    out = wingspan_run("go", "--max-steps", steps, env=environment(tmp_path))
    assert out.returncode == 2
    assert out.stderr.startswith("usage: wingspan run ")
    assert out.stderr.endswith(
        f"wingspan run: error: argument --max-steps: must be a whole number from 1 to 1000, "
        f"got {steps!r}\n")


def test_a_bad_flag_after_run_prints_runs_usage(tmp_path: Path) -> None:
    out = wingspan_run("go", "--bogus", env=environment(tmp_path))
    assert out.returncode == 2
    assert out.stderr.startswith("usage: wingspan run [-h]")
    assert out.stderr.endswith("wingspan run: error: unrecognized arguments: --bogus\n")


SESSION = re.compile(r" · session (\w+)\]$", re.MULTILINE)


def test_conversations_continue_in_the_servers_default_store(tmp_path: Path) -> None:
    env = environment(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    first = wingspan_run("first question", "-o", 'script=["one"]', env=env, cwd=work)
    assert first.returncode == 0, first.stderr
    found = SESSION.search(first.stderr)
    assert found, first.stderr
    session_id = found.group(1)
    second = wingspan_run("--continue", "second", "-o", 'script=["two"]', env=env)
    assert (second.returncode, second.stdout) == (0, "two\n"), second.stderr
    assert f" · session {session_id}]" in second.stderr
    other = wingspan_run("another", "--store", "memory://", env=env)
    assert other.returncode == 0 and " · session " not in other.stderr  # nothing kept
    third = wingspan_run("--session", session_id, "third", "--json", env=env)
    assert third.returncode == 0, third.stderr

    # the server's default store is the same file: it lists the conversation
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "wingspan.cli", "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        sessions = _get_when_up(f"http://127.0.0.1:{port}/sessions", server)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=WAIT) == 0
    stored = {item["id"]: item for item in sessions}
    assert stored[session_id]["message_count"] == 6
    assert stored[session_id]["title"] == "first question"
    assert stored[session_id]["work_dir"] == str(work.resolve())


def test_resuming_what_is_not_there_is_one_line(tmp_path: Path) -> None:
    env = environment(tmp_path)
    out = wingspan_run("--continue", "hi", env=env)
    assert out.returncode == 1
    assert out.stderr == ("wingspan: error: no session to continue in the store: start one "
                          "with wingspan run MESSAGE\n")
    out = wingspan_run("--session", "01NOPE", "hi", env=env)
    assert (out.returncode, out.stderr) == (1, "wingspan: error: session '01NOPE' not found\n")
    out = wingspan_run("--session", "01NOPE", "--continue", "hi", env=env)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    out = wingspan_run("--continue", "--work-dir", str(tmp_path), "hi", env=env)
    assert out.returncode == 2
    assert out.stderr.endswith("wingspan run: error: --work-dir cannot be given with --session "
                               "or --continue: a session keeps the work dir it was started "
                               "in\n")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_when_up(url: str, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(url, timeout=WAIT).raise_for_status().json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not answer in time"
            time.sleep(0.05)  # polling the port until it listens, bounded by the deadline


def test_attach_follows_a_stored_run_by_id(tmp_path: Path) -> None:
    env = environment(tmp_path)
    first = wingspan_run("hello", "--json", "-o", 'script=["an answer to replay"]', env=env)
    assert first.returncode == 0, first.stderr
    done = json.loads(first.stdout.splitlines()[-1])
    attached = wingspan_run("--attach", done["run_id"], env=env)
    assert (attached.returncode, attached.stdout) == (0, "an answer to replay\n"), \
        attached.stderr
    both = wingspan_run("--attach", done["run_id"], "again", env=env)
    assert both.returncode == 2 and "give no message" in both.stderr
    missing = wingspan_run("--attach", "nope", env=env)
    assert missing.returncode == 1 and "nope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
