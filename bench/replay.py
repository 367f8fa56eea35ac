"""Replay from the event log: a finished 10,000-event run read back over HTTP, and the time
from a reconnect to its first replayed frame, next to the raw Quart SSE ceiling.

``wingspan serve --db FILE`` (the SQLite store, the default) and the raw Quart + hypercorn
app of ``bench/server.py`` each run in their own process on 127.0.0.1. A one-step agent of
the ``test`` provider answers with 40,000 characters in 4-character ``text_delta`` events
(10,000 of them, plus the run's other events), once; then, each timed on one keep-alive
connection:

1. **Replay**: ``GET /runs/{id}/events`` from the start to the end of the run, events per
   second; the raw route sends as many frames of the same size from memory.
2. **Reconnect**: ``GET /runs/{id}/events`` with ``Last-Event-ID`` at the middle of the run,
   the time to the first frame of the rest (target: under 5 ms); the raw route's first frame
   for comparison.

Run from the repository root::

    python bench/replay.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from server import (
    Connection,
    Server,
    create_agent,
    expect,
    raw_argv,
    server_process,
    wingspan_argv,
)

RESULTS = Path(__file__).resolve().parent / "results" / "replay.md"
DELTAS = 10_000
CHUNK = 4


async def wingspan_run(server: Server) -> tuple[str, int]:
    """Run the long answer once: its run id and how many events its log holds."""
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        agent = await create_agent(http, ["abcd" * DELTAS], chunk_size=CHUNK)
        session = (await expect(await http.post("/sessions", json={}), 201))["id"]
        result = await expect(await http.post(f"/sessions/{session}/message", json={
            "agent_id": agent, "message": "talk"}))
        run = await expect(await http.get(f"/runs/{result['run_id']}"))
    return str(run["id"]), int(run["last_seq"]) - int(run["first_seq"]) + 1


async def timed(server: Server, path: str, payload: bytes | None, headers: bytes,
                rounds: int) -> tuple[list[float], list[float], int]:
    """``rounds`` reads of a stream: events per second, seconds to the first frame, frames."""
    rates, firsts, frames = [], [], 0
    async with Connection(server) as connection:
        for _ in range(rounds):
            read = await connection.stream(path, payload, headers)
            rates.append(read.frames / read.total_s)
            firsts.append(read.first_frame_s)
            frames = read.frames
    return rates, firsts, frames


async def measure(rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wingspan-bench-replay-") as directory:
        folder = Path(directory)
        async with server_process("wingspan sqlite", wingspan_argv(
                ["--db", str(folder / "replay.db")]), folder) as server:
            run_id, events = await wingspan_run(server)
            path = f"/runs/{run_id}/events"
            await timed(server, path, None, b"", 2)  # warm-up
            rates, _, frames = await timed(server, path, None, b"", rounds)
            middle = b"Last-Event-ID: %d\r\n" % (events // 2)
            _, firsts, _ = await timed(server, path, None, middle, rounds * 10)
            figures.update(ours_rate=statistics.median(rates), ours_frames=frames,
                           ours_first=statistics.median(firsts),
                           ours_first_p95=statistics.quantiles(firsts, n=20)[-1])
        async with server_process("raw", raw_argv(), folder) as server:
            payload = json.dumps({"frames": frames, "text": "abcd"}).encode()
            await timed(server, "/stream", payload, b"", 2)
            rates, firsts, _ = await timed(server, "/stream", payload, b"", rounds)
            figures.update(raw_rate=statistics.median(rates))
            half = json.dumps({"frames": frames // 2, "text": "abcd"}).encode()
            _, firsts, _ = await timed(server, "/stream", half, b"", rounds * 10)
            figures.update(raw_first=statistics.median(firsts))
    return figures


def render(f: dict[str, float], rounds: int) -> str:
    return "\n".join([
        "# Replay from the event log",
        "",
        f"A finished run of {f['ours_frames']:,.0f} events ({DELTAS:,} `text_delta`s of "
        f"{CHUNK} characters and the run's other events) read back with "
        "`GET /runs/{id}/events` from `wingspan serve --db FILE` (SQLite, the default store), "
        "next to the raw Quart + hypercorn SSE route of `bench/server.py` sending as many "
        f"frames of the same size from memory; median of {rounds} reads, then of "
        f"{rounds * 10} reconnects, each on one keep-alive connection in the benchmark's "
        "process, both servers on 127.0.0.1.",
        "",
        "| measure | raw Quart SSE | wingspan (SQLite log) | ratio |",
        "|---|---:|---:|---:|",
        f"| replay, events/s | {f['raw_rate']:,.0f} | {f['ours_rate']:,.0f} | "
        f"{f['ours_rate'] / f['raw_rate']:.0%} |",
        f"| reconnect (`Last-Event-ID` at the middle) to first frame, ms | "
        f"{f['raw_first'] * 1000:.2f} | {f['ours_first'] * 1000:.2f} "
        f"(p95 {f['ours_first_p95'] * 1000:.2f}) | {f['ours_first'] / f['raw_first']:.2f}x |",
        "",
        "Target: the first replayed frame under 5 ms.",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {platform.system()}; "
        f"measured {time.strftime('%Y-%m-%d')}. Command: `python bench/replay.py`.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed replays (default 10)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    table = render(asyncio.run(measure(args.rounds)), args.rounds)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
