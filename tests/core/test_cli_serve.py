"""`wingspan serve` as a user runs it: real processes on real 127.0.0.1 ports.

This module is also a plugin (loaded by module path in the server processes of
:func:`test_the_start_up_line_says_what_is_served`): a store whose URLs carry secrets.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import wingspan
from wingspan import StoreSpec

ROOT = Path(__file__).resolve().parents[2]
#: Every wait on a server process is bounded by this many seconds.
WAIT = 30.0
SERVING = re.compile(r"serving http://127\.0\.0\.1:(\d+) ")


async def open_vault(url: str, settings: Mapping[str, Any]) -> wingspan.Store:
    from wingspan.plugins.memory import MemoryStore

    return MemoryStore()


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [StoreSpec(scheme="vault", open=open_vault, description="memory, for tests")]


def environment(data_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    env["XDG_DATA_HOME"] = str(data_home)  # the default SQLite store, in the test's dir
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serving:
    """A `wingspan serve` process whose stderr is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wingspan.cli", "serve", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, cwd=ROOT,
        )
        self.stderr = ""
        self._status: int | None = None

    def line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Wait (bounded) for a line of stderr matching ``pattern``."""
        assert self.process.stderr is not None
        deadline = time.monotonic() + WAIT
        while True:
            for line in self.stderr.splitlines():
                found = pattern.search(line)
                if found:
                    return found
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line like {pattern.pattern!r} in time: {self.stderr!r}"
            ready, _, _ = select.select([self.process.stderr], [], [], remaining)
            if ready:
                data = os.read(self.process.stderr.fileno(), 65536)
                assert data, f"the server exited ({self.process.wait(WAIT)}): {self.stderr!r}"
                self.stderr += data.decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM, and the exit status (bounded)."""
        if self._status is not None:
            return self._status
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        assert self.process.stderr is not None
        self.stderr += self.process.stderr.read().decode(errors="replace")
        self.process.stderr.close()
        self._status = status
        return status


@contextmanager
def serving(args: list[str], env: dict[str, str]) -> Iterator[Serving]:
    server = Serving(args, env)
    try:
        yield server
    finally:
        server.stop()


def run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "serve", *args], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=WAIT, env=env, cwd=ROOT,
    )


def test_a_taken_port_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    env = environment(tmp_path)
    port = str(free_port())
    with serving(["--port", port, "--store", "memory://"], env) as first:
        first.line(SERVING)
        database = tmp_path / "second.db"
        second = run_serve(["--port", port, "--db", str(database)], env)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT).status_code == 200
        assert first.stop() == 0
    # 1, as for every start-up failure: the command was right, the machine said no
    assert second.returncode == 1
    assert second.stderr == (
        f"wingspan: error: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(another wingspan serve?); choose another with --port N, or --port 0 for any free "
        "port\n"
    )
    assert not database.exists()  # refused before the store was opened


@pytest.mark.parametrize("given", ["flag", "environment", "file"])
def test_port_0_is_any_free_port_and_the_one_bound_is_said(tmp_path: Path, given: str) -> None:
    args, extra = ["--store", "memory://"], {}
    if given == "flag":
        args += ["--port", "0"]
    elif given == "environment":
        extra["WINGSPAN_PORT"] = "0"
    else:
        (tmp_path / "server.toml").write_text("[server]\nport = 0\n")
        args += ["--config", str(tmp_path / "server.toml")]
    with serving(args, environment(tmp_path, **extra)) as server:
        port = int(server.line(SERVING).group(1))
        assert port not in (0, 2323)
        # the Host check answers the port bound (127.0.0.1:<port> is this server's name)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT).json() == {
            "status": "ok"}
        assert server.stop() == 0
    assert "Running on" not in server.stderr  # hypercorn's line: ours says it


def test_the_start_up_line_says_what_is_served(tmp_path: Path) -> None:
    env = environment(tmp_path, PYTHONPATH=str(ROOT), WINGSPAN_PLUGINS="tests.core.test_cli_serve")
    listed = subprocess.run([sys.executable, "-m", "wingspan.cli", "plugins", "--json"],
                            capture_output=True, text=True, timeout=WAIT, env=env, cwd=ROOT)
    plugins = len(json.loads(listed.stdout)["plugins"])
    url = "vault://keeper:hunter2@vault.example/db?api_key=s3cret&region=north"
    with serving(["--port", "0", "--store", url], env) as server:
        found = server.line(SERVING)
        line, port = found.string, found.group(1)
        assert server.stop() == 0
    assert line == (
        f"wingspan {wingspan.__version__} serving http://127.0.0.1:{port} (store "
        "vault://keeper:[redacted]@vault.example/db?api_key=[redacted]&region=north, "
        f"{plugins} plugins); Ctrl-C stops it"
    )
    assert "hunter2" not in server.stderr and "s3cret" not in server.stderr

    with serving(["--port", "0"], env) as server:  # the default store, named as its file
        line = server.line(SERVING).string
        assert server.stop() == 0
    assert f"(store sqlite://{tmp_path}/wingspan/wingspan.db, {plugins} plugins)" in line


def test_help_gives_the_precedence_the_code_has(tmp_path: Path) -> None:
    help_text = " ".join(
        subprocess.run([sys.executable, "-m", "wingspan.cli", "serve", "--help"],
                       capture_output=True, text=True, timeout=WAIT, check=True).stdout.split())
    assert ("Each setting comes from the first of: these flags, WINGSPAN_* environment "
            "variables, the --config file (TOML), the defaults. So flags win over the "
            "environment, which wins over the file.") in help_text
    # ...and so it is: the environment wins over the file, a flag over both
    (tmp_path / "server.toml").write_text("[server]\nport = 1\nhost = '127.0.0.9'\n")
    env = environment(tmp_path, WINGSPAN_PORT="0", WINGSPAN_HOST="127.0.0.1")
    with serving(["--config", str(tmp_path / "server.toml"), "--store", "memory://"],
                 env) as server:
        assert int(server.line(SERVING).group(1)) != 1
        assert server.stop() == 0
    refused = run_serve(["--config", str(tmp_path / "server.toml"), "--store", "memory://",
                         "--host", "0.0.0.0"], env)
    assert refused.returncode == 1 and "refusing to listen on 0.0.0.0" in refused.stderr
