"""The HTTP app without sockets: what one message costs wingspan itself, by store.

``create_app`` driven by Quart's test client in this process (no hypercorn, no sockets, no
client of its own to share the CPU with), so that the figures are the app's and the kernel's
alone. For ``memory://`` and a ``sqlite://`` file, each measured in the same run:

- a blocking one-step message (``POST /sessions/{id}/message``, the ``test`` provider
  answering ``ok``), one after another, a fresh session every 10 messages; the median time
  per message over batches of 100, and the time spent in each store method;
- the first frame of a streaming message (``POST /sessions/{id}/message/stream``): the time
  from sending the request to the first body chunk, median and p95.

``bench/server.py`` measures the same over real sockets against a raw Quart app.

Run from the repository root::

    .venv/bin/python bench/http_inprocess.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "http_inprocess.md"
ROUNDS = 2


class Timing:
    """A store seen through a wrapper that adds up the time of each method's calls."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await value(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return timed


async def measure(url: str, messages: int, streams: int) -> dict[str, Any]:
    import wingspan.testing
    from wingspan.plugins.http.app import create_app
    from wingspan.plugins.http.config import ServerConfig

    runtime = wingspan.testing.make_runtime()
    store = await runtime.open_store(url)
    timing = Timing(store)
    app = create_app(runtime, ServerConfig(store="memory://"), store=timing)  # type: ignore[arg-type]
    try:
        async with app.test_app():
            client = app.test_client()
            agent = (await (await client.post("/agents", json={
                "name": "one-step", "options": {"script": ["ok"]}})).get_json())["id"]
            body = {"agent_id": agent, "message": "hi"}
            session = ""

            async def blocking(i: int) -> None:
                nonlocal session
                if i % 10 == 0:
                    session = (await (await client.post("/sessions", json={})).get_json())["id"]
                answer = await client.post(f"/sessions/{session}/message", json=body)
                assert answer.status_code == 200, await answer.get_data()

            for i in range(100):  # warm-up
                await blocking(i)
            timing.seconds.clear()
            timing.calls.clear()
            batches = []
            for start in range(0, messages, 100):
                started = time.perf_counter()
                for i in range(start, start + 100):
                    await blocking(i)
                batches.append((time.perf_counter() - started) / 100)
            per_store = {name: seconds / messages for name, seconds in timing.seconds.items()}
            calls = {name: count / messages for name, count in timing.calls.items()}

            raw = json.dumps(body).encode()
            firsts = []
            for i in range(streams + 20):
                if i % 10 == 0:
                    session = (await (await client.post("/sessions", json={})).get_json())["id"]
                started = time.perf_counter()
                async with client.request(f"/sessions/{session}/message/stream", method="POST",
                                          headers={"Content-Type": "application/json"}) as conn:
                    await conn.send(raw)
                    await conn.send_complete()
                    data = await asyncio.wait_for(conn.receive(), 10)
                    if i >= 20:
                        firsts.append(time.perf_counter() - started)
                    while b"event: done" not in data and b"event: error" not in data:
                        data += await asyncio.wait_for(conn.receive(), 10)
    finally:
        await store.close()
    firsts.sort()
    return {
        "message_ms": statistics.median(batches) * 1e3,
        "store": per_store,
        "calls": calls,
        "first_ms": statistics.median(firsts) * 1e3,
        "first_p95_ms": firsts[int(len(firsts) * 0.95)] * 1e3,
    }


def render(results: dict[str, dict[str, Any]], messages: int, streams: int) -> str:
    names = list(results)
    lines = [
        "# The HTTP app in process",
        "",
        f"`bench/http_inprocess.py`: `create_app` with Quart's test client (no sockets); "
        f"{messages:,} blocking one-step messages (median of batches of 100, a fresh session "
        f"every 10) and {streams} streaming ones, after a warm-up; each store in a process of "
        f"its own, {ROUNDS} runs each taking turns, the faster kept.",
        "",
        "| measure | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---:|" * len(names),
        "| blocking message (ms) | "
        + " | ".join(f"{results[n]['message_ms']:.2f}" for n in names) + " |",
        "| first stream frame, median / p95 (ms) | "
        + " | ".join(f"{results[n]['first_ms']:.2f} / {results[n]['first_p95_ms']:.2f}"
                     for n in names) + " |",
        "",
        "Store time per blocking message, by method (µs; calls per message in brackets):",
        "",
        "| method | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    methods = sorted({m for n in names for m in results[n]["store"]},
                     key=lambda m: -max(results[n]["store"].get(m, 0) for n in names))
    for method in methods:
        cells = [f"{results[n]['store'].get(method, 0) * 1e6:.1f} "
                 f"({results[n]['calls'].get(method, 0):.2f})" for n in names]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(
        f"**{sum(results[n]['store'].values()) * 1e6:.1f}**" for n in names) + " |")
    lines += ["", f"Python {platform.python_version()}, {platform.machine()}, "
              f"{platform.system()}. Command: `python bench/http_inprocess.py`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one measurement, in a process of its own
        print(json.dumps(asyncio.run(measure(args.one, args.messages, args.streams))))
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        # Each store in a fresh process (what one ran before slows the next), twice, the
        # stores taking turns; the faster of each store's two runs is kept.
        for _ in range(ROUNDS):
            for url in ("memory://", f"sqlite:///{Path(directory) / 'bench.db'}"):
                name = url.split("://")[0] + "://"
                output = subprocess.run(
                    [sys.executable, __file__, "--one", url, "--messages", str(args.messages),
                     "--streams", str(args.streams)],
                    check=True, capture_output=True, text=True).stdout
                result = json.loads(output)
                if name not in results or result["message_ms"] < results[name]["message_ms"]:
                    results[name] = result
    table = render(results, args.messages, args.streams)
    print(table)
    if not args.no_write:
        RESULTS.write_text(table)


if __name__ == "__main__":
    sys.exit(main())
