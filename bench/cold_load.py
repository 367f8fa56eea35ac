"""Cold load: a 10,000-message history read from a SQLite store opened afresh, against the
stdlib reference.

- **reference** — what any code reading the same rows must do at least: a fresh
  ``sqlite3`` connection, the session's message rows in order, and one ``json.loads`` per
  row, giving plain dicts (on the event loop's thread: no thread hop);
- **wingspan** — ``load_messages`` on a ``sqlite://`` store opened afresh (nothing decoded
  yet: every row is parsed and checked, and typed ``Message`` s come back), its open not
  timed.

The history is a coding session's shape: a user turn, then rounds of an assistant turn with
text and a tool call and the user turn with its result, and the closing answer. The two rows
take turns, sample by sample, on one database file in a warm page cache; the table gives
the median of each and their ratio (issue 13's target: at most 1.1x).

Run from the repository root::

    .venv/bin/python bench/cold_load.py
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
from pathlib import Path

import wingspan
from wingspan import Message, SessionRecord, TextBlock, ToolResultBlock, ToolUseBlock

RESULTS = Path(__file__).parent / "results" / "cold_load.md"
TARGET = 1.1
#: Seconds between opening the store and loading (a server opens its store once, long
#: before a request loads a history).
SETTLE = 0.1


def history(size: int) -> list[Message]:
    """A session of ``size`` messages: rounds of a tool call and its result."""
    messages = [Message(role="user", content=(TextBlock(text="Fix the failing test in "
                                                         "tests/test_parser.py, please."),))]
    turn = 0
    while len(messages) < size - 1:
        turn += 1
        call = f"toolu_{turn:06d}"
        messages.append(Message(role="assistant", content=(
            TextBlock(text=f"Step {turn}: let me look at the parser's handling of this case."),
            ToolUseBlock(id=call, name="read", input={"path": f"src/parser_{turn % 40}.py",
                                                      "offset": turn, "limit": 200}),
        )))
        messages.append(Message(role="user", content=(ToolResultBlock(
            tool_use_id=call, content=f"{turn}: def parse(text):\n    return tokens(text)\n" * 4,
        ),)))
    messages.append(Message(role="assistant", content=(TextBlock(text="Fixed."),)))
    return messages[:size]


def reference(path: Path, session_id: str) -> float:
    started = time.perf_counter()
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT m.body FROM messages m JOIN sessions s ON m.session_pk = s.pk "
            "WHERE s.id = ? ORDER BY m.seq", (session_id,)).fetchall()
        loaded = [json.loads(body) for (body,) in rows]
    finally:
        db.close()
    elapsed = time.perf_counter() - started
    assert loaded and type(loaded[0]) is dict
    return elapsed * 1e3


async def ours(url: str, session_id: str, size: int) -> float:
    runtime = wingspan.Runtime.from_settings(wingspan.Settings(autoload=False))
    store = await runtime.open_store(url)
    try:
        await asyncio.sleep(SETTLE)  # what the store does as it opens is not the load
        started = time.perf_counter()
        loaded = await store.load_messages(session_id)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    assert len(loaded) == size
    return elapsed * 1e3


async def measure(size: int, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cold.db"
        url = f"sqlite:///{path}"
        runtime = wingspan.Runtime.from_settings(wingspan.Settings(autoload=False))
        store = await runtime.open_store(url)
        try:
            await store.create_session(SessionRecord(id="s"))
            messages = history(size)
            for start in range(0, size, 500):
                await store.append_messages("s", messages[start:start + 500])
            assert await store.load_messages("s") == messages
        finally:
            await store.close()
        times: dict[str, list[float]] = {"reference": [], "wingspan": []}
        for _ in range(2):  # warm-up: the page cache, the imports
            reference(path, "s")
            await ours(url, "s", size)
        for _ in range(samples):
            gc.collect()
            times["reference"].append(reference(path, "s"))
            gc.collect()
            times["wingspan"].append(await ours(url, "s", size))
    result = {name: statistics.median(values) for name, values in times.items()}
    result.update({f"{name} min": min(values) for name, values in times.items()})
    return result


def render(size: int, samples: int, result: dict[str, float]) -> str:
    ratio = result["wingspan"] / result["reference"]
    verdict = "met" if ratio <= TARGET else "**missed**"
    return "\n".join([
        "# Cold load of a history",
        "",
        f"`bench/cold_load.py`: a {size:,}-message history (rounds of a tool call and its "
        "result) read from a SQLite file in a warm page cache, median of "
        f"{samples} samples, the rows taking turns.",
        "",
        "| row | what comes back | median ms | ratio | min ms | ratio |",
        "|---|---|---:|---:|---:|---:|",
        f"| reference: fresh `sqlite3` connection, one `json.loads` per row | dicts "
        f"| {result['reference']:.1f} | 1.00x | {result['reference min']:.1f} | 1.00x |",
        f"| wingspan: `load_messages` on a store opened afresh | checked, typed `Message`s "
        f"| {result['wingspan']:.1f} | {ratio:.2f}x | {result['wingspan min']:.1f} "
        f"| {result['wingspan min'] / result['reference min']:.2f}x |",
        "",
        f"Target: at most {TARGET}x the reference (medians): {verdict}. This machine's speed "
        "drifts from run to run (the reference alone has varied 39-62 ms): compare the "
        "ratios, and run it more than once.",
        "",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {platform.system()}. Command: `python bench/cold_load.py`.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    table = render(args.size, args.samples, asyncio.run(measure(args.size, args.samples)))
    print(table)
    if not args.no_write:
        RESULTS.write_text(table)


if __name__ == "__main__":
    sys.exit(main())
