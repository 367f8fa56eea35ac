"""Fixtures of the HTTP transport's tests: a runtime, an app on a memory store, its Quart
test client, and :func:`start_server` — the one place that starts a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from wingspan import Runtime
from wingspan.plugins.http.app import create_app
from wingspan.plugins.http.config import ServerConfig
from wingspan.testing import make_runtime

from . import tooling

ROOT = Path(__file__).resolve().parents[3]
#: Every wait on a server or a stream is bounded by this many seconds.
WAIT = 20.0

#: The test plugin (a slow tool, a provider needing a key, a dumping store) that every
#: server process loads beside the installed plugins, by module path.
TEST_PLUGINS = "tests.plugins.http.tooling"

T = TypeVar("T")


def runtime_with_plugins() -> Runtime:
    return make_runtime(plugins=[("tooling", tooling)])


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    return runtime_with_plugins()


def make_config(**overrides: Any) -> ServerConfig:
    values: dict[str, Any] = {"store": "memory://", "ping_interval": 15.0, "shutdown_grace": 5.0}
    values.update(overrides)
    return ServerConfig(**values)


@pytest.fixture
def config() -> ServerConfig:
    return make_config()


@pytest.fixture
async def app(runtime: Runtime, config: ServerConfig) -> AsyncIterator[Quart]:
    app = create_app(runtime, config)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running server process on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Any) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log  # stderr goes to a file: a pipe nobody reads could fill and block

    def stop(self, sig: int | None = None) -> int:
        """Send ``sig`` (default SIGTERM) and wait for the exit status."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=WAIT)
            raise
        finally:
            self.stderr()

    def stderr(self) -> str:
        """What the process wrote to stderr (call once it has exited)."""
        self.process.wait(timeout=WAIT)
        if not self._log.closed:
            self._log.seek(0)
            self._text = self._log.read().decode(errors="replace")
            self._log.close()
        return str(self._text)


def start_server(
    *flags: str, env: dict[str, str] | None = None, wait_ready: bool = True,
    token: str | None = None,
) -> Server:
    """Start a server process with ``flags`` (``--store memory://`` unless a store is given)
    on a free port, and wait (bounded) until ``/health`` answers."""
    port = free_port()
    args: Sequence[str] = list(flags)
    if "--store" not in args and "--db" not in args:
        args = ["--store", "memory://", *args]
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("WINGSPAN_")}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ["WINGSPAN_PLUGINS"] = TEST_PLUGINS
    environ.update(env or {})
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Server.stderr)
    process = subprocess.Popen(
        # exactly `wingspan serve`, with the test plugin named in WINGSPAN_PLUGINS
        [sys.executable, "-m", "wingspan.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), *args],
        cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=log,
    )
    server = Server(process, port, log)
    if wait_ready:
        deadline = time.monotonic() + WAIT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited: {server.stderr()}")
            try:
                if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError("the server did not answer /health in time")
            time.sleep(0.05)  # polling the port until it listens; bounded by the deadline
    return server


@pytest.fixture
def server() -> Iterator[Server]:
    running = start_server()
    yield running
    assert running.stop() == 0


def bounded(items: Iterable[T], within: float = WAIT) -> Iterator[T]:
    """``items`` (the chunks or lines of a streaming response), failing once ``within``
    seconds have passed: a stream that never ends but pings now and then would keep an
    HTTP client's read timeout from ever firing."""
    deadline = time.monotonic() + within
    for item in items:
        yield item
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream did not end within {within:g} s")


def parse_sse(text: str, *, pings: bool = False) -> list[tuple[int, str, dict[str, Any]]]:
    """``(id, event, data)`` of every frame, checking the framing on the way; ``ping`` frames
    are left out unless ``pings``. A frame of no logged event (a ``ping``, a stopping
    server's ``error``) has no id: 0 here."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        seq = 0
        if lines[0].startswith("id: "):
            seq = int(lines.pop(0)[len("id: "):])
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        data = json.loads(lines[1][len("data: "):])
        event = lines[0][len("event: "):]
        assert data["type"] == event
        # every event has its seq but a ping and a stopping server's last word (not logged)
        unlogged = event == "ping" or (event == "error"
                                       and data["error"]["code"] == "server_stopping")
        assert (seq == 0) == unlogged, block
        if event != "ping" or pings:
            frames.append((seq, event, data))
    return frames
