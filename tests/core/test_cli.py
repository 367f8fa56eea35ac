"""The wingspan command, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`wingspan run` keeps conversations in the default SQLite store: a throwaway one."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("XDG_DATA_HOME", str(path))
    return path


def wingspan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    return subprocess.run(
        [sys.executable, "-m", "wingspan.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
    )


def test_plugins_tools_and_providers_are_listed() -> None:
    out = wingspan("plugins")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"]
    assert any(line.split()[:2] == ["test", "wingspan"] for line in out.stdout.splitlines())
    data = json.loads(wingspan("plugins", "--json").stdout)
    assert {"name": "memory", "distribution": "wingspan", "version": data["plugins"][0]["version"],
            "hooks": ["wingspan_stores"]} in data["plugins"]
    providers = json.loads(wingspan("providers", "--json").stdout)
    assert any(p["id"] == "test" for p in providers)
    assert wingspan("tools").returncode == 0


def test_run_streams_text_to_stdout_and_activity_to_stderr(tmp_path: Path) -> None:
    script = json.dumps([{"text": "Looking.", "tool_calls": [{"name": "nope", "input": {}}]},
                         "All done here."])
    out = wingspan("run", "hello", "--provider", "test", "-o", f"script={script}",
                   "--work-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Looking.\nAll done here.\n"
    assert "→ nope({})" in out.stderr
    assert "✗ nope: unknown tool 'nope'" in out.stderr
    assert "[2 steps ·" in out.stderr and "stop: end_turn · session " in out.stderr


def test_run_json_prints_one_event_per_line() -> None:
    out = wingspan("run", "hi", "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0] == {"type": "message_start", "step": 1}
    assert events[-1]["type"] == "done" and events[-1]["steps"] == 1


def test_errors_are_one_clear_line() -> None:
    for args, message in [
        (["run", "x", "--provider", "nope"], "unknown provider 'nope'"),
        (["run", "x", "--tools", "nope"], "unknown tool 'nope'"),
        (["run", "x", "-o", "bogus=1"], "unknown option bogus"),
        (["run", "x", "--work-dir", "/does/not/exist"], "does not exist"),
        (["serve", "--transport", "carrier-pigeon"], "no transport named 'carrier-pigeon'"),
    ]:
        out = wingspan(*args)
        assert out.returncode == 1, args
        assert out.stderr.startswith("wingspan: error: ") and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_a_disabled_name_no_plugin_has_is_a_warning_on_every_command() -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "WINGSPAN_DISABLE": "sqlit"}
    out = subprocess.run([sys.executable, "-m", "wingspan.cli", "plugins"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "wingspan: warning:" in out.stderr and "'sqlit'" in out.stderr
    assert "Traceback" not in out.stderr
