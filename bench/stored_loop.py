"""The SDK loop with a store: microseconds per step with ``sqlite://`` and ``memory://``
against the same loop without a store.

The loop, fake model and tool are those of ``bench/loop_overhead.py`` (one model call and one
async ``add`` call per step, zero latency). Each run is a new session in the store, so a run
pays what a user's run pays: the session's record, the admission, the claim, the history's
load, every message and event stored, the run's record and the release. The SQLite store is
a file in a temporary directory (WAL, ``synchronous=NORMAL``: the default settings). The
rows take turns, sample by sample, so that the ratios compare like with like.

The floor row is what any SQLite store keeping the loop's promise must add to the loop
without a store: a step's turn is durable before anything depends on it (the next model
call, the tools it asks for, the answer), which is two commits a step (for one step: the
user message before the model call, the answer before the caller gets it). There they
are plain ``sqlite3`` commits of one row each, on the event loop's thread, in a WAL
database with ``synchronous=NORMAL`` — no sequence numbers, no event log, no claims, no
record of the run.

Run from the repository root::

    .venv/bin/python bench/stored_loop.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from loop_overhead import FINAL_TEXT, INSTRUCTIONS, PROMPT, Script, ScriptedProvider, add

import wingspan

RESULTS = Path(__file__).parent / "results" / "stored_loop.md"
RUN_LENGTHS = (1, 10, 100)
#: The targets of issue 13: the SQLite loop's time over the loop's without a store.
TARGETS = {1: 5.0, 100: 3.0}

Run = Callable[[int], Awaitable[wingspan.Result]]


def build(store: wingspan.Store | None, script: Script) -> Run:
    runtime = wingspan.Runtime.from_settings(wingspan.Settings(autoload=False))
    agent = wingspan.Agent(name="bench", provider=ScriptedProvider(script),
                           instructions=INSTRUCTIONS, tools=[add],
                           max_steps=max(RUN_LENGTHS) + 1)

    async def run(steps: int) -> wingspan.Result:
        script.reset(steps)
        session = wingspan.Session(agent=agent, store=store, runtime=runtime)
        result = await session.run(PROMPT)
        if result.response != FINAL_TEXT or len(result.tool_calls) != steps - 1:
            raise RuntimeError(f"the run did not go as scripted: {result!r}")
        return result

    return run


FLOOR = "no store + 2 plain sqlite3 commits a step (floor)"


def build_floor(path: Path) -> tuple[Run, sqlite3.Connection]:
    """The loop without a store, then two commits a step of one row each (see above)."""
    plain = build(None, Script(max(RUN_LENGTHS)))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    turn = json.dumps({"role": "assistant", "content": [{
        "type": "tool_use", "id": "toolu_0001_00", "name": "add", "input": {"a": 1, "b": 2}}]})

    async def run(steps: int) -> wingspan.Result:
        result = await plain(steps)
        for _ in range(2 * steps):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO turns (body) VALUES (?)", (turn,))
            connection.execute("COMMIT")
        return result

    return run, connection


async def sample(run: Run, steps: int, runs: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(runs):
        await run(steps)
    return (time.perf_counter_ns() - start) / 1000 / (runs * steps)


async def measure(samples: int, sample_seconds: float) -> dict[str, dict[int, float]]:
    with tempfile.TemporaryDirectory() as directory:
        sqlite = await wingspan.open_store(f"sqlite:///{directory}/bench.db")
        memory = await wingspan.open_store("memory://")
        floor, floor_connection = build_floor(Path(directory) / "floor.db")
        try:
            rows = {
                "no store": build(None, Script(max(RUN_LENGTHS))),
                FLOOR: floor,
                "memory://": build(memory, Script(max(RUN_LENGTHS))),
                "sqlite://": build(sqlite, Script(max(RUN_LENGTHS))),
            }
            figures: dict[str, dict[int, float]] = {name: {} for name in rows}
            for steps in RUN_LENGTHS:
                runs = {}
                for name, run in rows.items():
                    for _ in range(max(3, 200 // steps)):  # warm-up
                        await run(steps)
                    start = time.perf_counter()
                    await run(steps)
                    runs[name] = max(1, round(sample_seconds / (time.perf_counter() - start)))
                timings: dict[str, list[float]] = {name: [] for name in rows}
                for _ in range(samples):  # the rows take turns
                    for name, run in rows.items():
                        timings[name].append(await sample(run, steps, runs[name]))
                for name in rows:
                    figures[name][steps] = statistics.median(timings[name])
            return figures
        finally:
            floor_connection.close()
            await sqlite.close()
            await memory.close()


def render(figures: dict[str, dict[int, float]], samples: int) -> str:
    header = ["store"]
    for steps in RUN_LENGTHS:
        header += [f"{steps} step{'s' if steps > 1 else ''}: µs/step", "x no store"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (2 * len(RUN_LENGTHS))) + "|"]
    base = figures["no store"]
    for name, per_step in figures.items():
        row = [name]
        for steps in RUN_LENGTHS:
            row += [f"{per_step[steps]:,.1f}", f"{per_step[steps] / base[steps]:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    sqlite = figures["sqlite://"]
    verdicts = [
        f"- {steps} step{'s' if steps > 1 else ''}: sqlite:// is "
        f"{sqlite[steps] / base[steps]:.2f}x the loop without a store (target "
        f"≤ {target:g}x: {'met' if sqlite[steps] / base[steps] <= target else 'missed'})"
        for steps, target in TARGETS.items()
    ] + [
        f"- {steps} step{'s' if steps > 1 else ''}: sqlite:// is "
        f"{sqlite[steps] / figures[FLOOR][steps]:.2f}x the floor; the floor itself is "
        f"{figures[FLOOR][steps] / base[steps]:.2f}x the loop without a store"
        for steps in RUN_LENGTHS
    ]
    return "\n".join([
        "# The SDK loop with a store",
        "",
        "Microseconds per step (one model call + one async tool call) of whole runs, each on a "
        "new session, with the zero-latency fake model of `bench/loop_overhead.py`. Median of "
        f"{samples} samples, the rows taking turns; lower is better.",
        "",
        *lines,
        "",
        *verdicts,
        "",
        f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}; "
        f"measured {time.strftime('%Y-%m-%d')}. Command: `python bench/stored_loop.py`.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--samples", type=int, default=7, help="samples per cell (default 7)")
    parser.add_argument("--sample-seconds", type=float, default=0.3,
                        help="about how long each sample runs (default 0.3)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.samples, args.sample_seconds))
    table = render(figures, args.samples)
    print(table)
    if not args.no_write:
        RESULTS.write_text(table, encoding="utf-8")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
