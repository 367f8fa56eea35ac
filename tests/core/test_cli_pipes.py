"""The wingspan command in pipelines: a reader that goes away, and ``python -m wingspan``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wingspan

WAIT = 60.0


def environment(data_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    env["XDG_DATA_HOME"] = str(data_home)  # the default SQLite store, in the test's dir
    return env


def into_a_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe whose reader has gone: what ``| head -1`` is by
    the time the command writes its second line, without waiting for that to happen."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "wingspan.cli", *args], stdin=subprocess.DEVNULL,
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=WAIT, env=env,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["plugins", "--json"],
    ["plugins"],
    ["tools"],
    ["tools", "--json"],
    ["providers", "--json"],
    ["run", "hi", "--json"],
    ["run", "hi"],
])
def test_a_reader_that_goes_away_ends_the_command_quietly(args: list[str], tmp_path: Path) -> None:
    out = into_a_closed_pipe(args, environment(tmp_path))
    # 141 (128 + SIGPIPE), what the shell reports for any Unix tool whose reader left
    assert (out.returncode, out.stderr) == (141, "")


def test_a_run_cut_off_by_its_reader_leaves_the_conversation_usable(tmp_path: Path) -> None:
    env = environment(tmp_path)
    out = into_a_closed_pipe(["run", "first", "--json", "-o", 'script=["one"]'], env)
    assert (out.returncode, out.stderr) == (141, "")
    again = subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "run", "--continue", "second", "--json",
         "-o", 'script=["two"]'],
        capture_output=True, text=True, timeout=WAIT, env=env,
    )
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout.splitlines()[-1])
    assert (done["type"], done["response"]) == ("done", "two")


def test_python_dash_m_wingspan_is_the_command(tmp_path: Path) -> None:
    env = environment(tmp_path)
    version = subprocess.run([sys.executable, "-m", "wingspan", "--version"],
                             capture_output=True, text=True, timeout=WAIT, env=env)
    assert (version.returncode, version.stdout) == (0, f"wingspan {wingspan.__version__}\n")
    listed = subprocess.run([sys.executable, "-m", "wingspan", "providers", "--json"],
                            capture_output=True, text=True, timeout=WAIT, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "test" in {provider["id"] for provider in json.loads(listed.stdout)}
    usage = subprocess.run([sys.executable, "-m", "wingspan"], capture_output=True, text=True,
                           timeout=WAIT, env=env)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: wingspan ")
