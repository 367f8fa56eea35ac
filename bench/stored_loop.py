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

Two more rows bound what a SQLite store of wingspan's design can reach:

- ``kernel's share`` — ``memory://`` with ``append_events`` keeping nothing: what the loop
  does for any store (the events built and handed over, the run admitted, started and
  finished), without the store's own work for the steps;
- ``kernel's share + wingspan's SQL`` — that, plus the statements the SQLite store runs for
  a step, in plain ``sqlite3`` on a database with its schema: two commits a step, each
  numbering the events in the session's row, inserting the message (numbered by the highest
  seq) and the events, and looking at the run's record; the first with the step's six
  events, the second with the tool result's one. No Python beyond the ``sqlite3`` calls: what
  is left of ``sqlite://`` over this row is the store's Python.

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
import typing
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
KERNEL = "memory://, appends keeping nothing (kernel's share)"
SCHEMA = "kernel's share + wingspan's SQL in plain sqlite3"
#: The events of a step's two commits (the turn's, then the tool result's): see the docstring.
STEP_EVENTS = (6, 1)


#: A step's turn as stored.
TURN = json.dumps({"role": "assistant", "content": [{
    "type": "tool_use", "id": "toolu_0001_00", "name": "add", "input": {"a": 1, "b": 2}}]})


def plain_connection(path: Path) -> sqlite3.Connection:
    """A connection with the SQLite store's settings (WAL, ``synchronous=NORMAL``)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def build_floor(path: Path) -> tuple[Run, sqlite3.Connection]:
    """The loop without a store, then two commits a step of one row each (see above)."""
    plain = build(None, Script(max(RUN_LENGTHS)))
    connection = plain_connection(path)
    connection.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")

    async def run(steps: int) -> wingspan.Result:
        result = await plain(steps)
        for _ in range(2 * steps):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO turns (body) VALUES (?)", (TURN,))
            connection.execute("COMMIT")
        return result

    return run, connection


class KernelShare:
    """``memory://`` whose ``append_events`` keeps nothing (see the docstring)."""

    def __init__(self, store: wingspan.Store) -> None:
        self._store = store
        self._seq = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def append_events(self, session_id: str, run_id: str, events: object,
                            messages: object = ()) -> int:
        self._seq += 1
        return self._seq


async def build_schema_floor(path: Path, kernel: Run) -> tuple[Run, sqlite3.Connection]:
    """``kernel`` followed by the SQLite store's statements for each step (see above)."""
    store = await wingspan.open_store(f"sqlite:///{path}")  # makes the schema
    await store.create_session(wingspan.SessionRecord(id="floor"))
    await store.close()
    connection = plain_connection(path)
    connection.execute("PRAGMA foreign_keys = ON")
    event = json.dumps({"type": "content_block_stop", "index": 0})

    def commit(events: int) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO messages (session_pk, seq, body) SELECT pk, coalesce((SELECT "
            "max(seq) + 1 FROM messages WHERE session_pk = sessions.pk), 0), ? FROM sessions "
            "WHERE id = ? RETURNING session_pk, seq", (TURN, "floor")).fetchall()
        pk, last = connection.execute(
            "UPDATE sessions SET last_seq = last_seq + ? WHERE id = ? RETURNING pk, last_seq",
            (events, "floor")).fetchone()
        connection.executemany(
            "INSERT INTO events (session_pk, seq, run_id, type, body) VALUES (?, ?, ?, ?, ?)",
            [(pk, last - events + n, "run", "content_block_stop", event)
             for n in range(1, events + 1)])
        connection.execute(
            "UPDATE runs SET body = json_set(body, '$.last_seq', ?), deltas_pruned = 0 "
            "WHERE id = ? AND session_pk = ? AND NOT status IN ('running', 'waiting')",
            (last, "run", pk))
        connection.execute("COMMIT")

    async def run(steps: int) -> wingspan.Result:
        result = await kernel(steps)
        for _ in range(steps):
            for events in STEP_EVENTS:
                commit(events)
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
        kept_nothing = await wingspan.open_store("memory://")
        kernel = build(typing.cast(wingspan.Store, KernelShare(kept_nothing)),
                       Script(max(RUN_LENGTHS)))
        floor, floor_connection = build_floor(Path(directory) / "floor.db")
        schema, schema_connection = await build_schema_floor(Path(directory) / "schema.db",
                                                             kernel)
        try:
            rows = {
                "no store": build(None, Script(max(RUN_LENGTHS))),
                FLOOR: floor,
                KERNEL: kernel,
                SCHEMA: schema,
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
            schema_connection.close()
            await sqlite.close()
            await memory.close()
            await kept_nothing.close()


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
    longest = max(RUN_LENGTHS)
    verdicts += [
        f"- {longest} steps: the kernel's share is {figures[KERNEL][longest] / base[longest]:.2f}x "
        f"the loop without a store; with wingspan's SQL for each step "
        f"{figures[SCHEMA][longest] / base[longest]:.2f}x (this schema's least, with no Python "
        f"of the store's); sqlite:// is {sqlite[longest] / figures[SCHEMA][longest]:.2f}x that",
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
