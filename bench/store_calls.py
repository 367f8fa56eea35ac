"""Store calls per message: what one blocking ``POST /sessions/{id}/message`` asks of the store.

The HTTP app (Quart's test client, no sockets) runs on the SQLite store, wrapped so that each
call of a store method is counted; every call is a job for the store's writer or reader
thread, so a round trip of two thread hops. A one-step agent (the ``test`` provider answering
at once) answers ``--messages`` messages on one session after a warm-up; the table gives the
calls per message, by method, and their sum. Run from the repository root::

    python bench/store_calls.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
from pathlib import Path

from http_inprocess import Timing


async def measure(messages: int) -> tuple[collections.Counter[str], int]:
    import wingspan.testing
    from wingspan.plugins.http.app import create_app
    from wingspan.plugins.http.config import ServerConfig

    runtime = wingspan.testing.make_runtime()
    with tempfile.TemporaryDirectory() as directory:
        store = await runtime.open_store(f"sqlite:///{Path(directory) / 'calls.db'}")
        counting = Timing(store)  # it counts the calls too
        app = create_app(runtime, ServerConfig(store="memory://"), store=counting)  # type: ignore[arg-type]
        async with app.test_app():
            client = app.test_client()
            agent = (await (await client.post("/agents", json={
                "name": "one-step", "options": {"script": ["ok"]}})).get_json())["id"]
            session = (await (await client.post("/sessions", json={})).get_json())["id"]
            body = {"agent_id": agent, "message": "hi"}
            for _ in range(3):  # warm-up: the session's first runs
                await client.post(f"/sessions/{session}/message", json=body)
            counting.calls.clear()
            for _ in range(messages):
                answer = await client.post(f"/sessions/{session}/message", json=body)
                assert answer.status_code == 200, await answer.get_data()
            calls = collections.Counter(counting.calls)
        await store.close()
    return calls, messages


def render(calls: collections.Counter[str], messages: int) -> str:
    rows = [f"| `{name}` | {count / messages:.2f} |" for name, count in sorted(calls.items())]
    total = sum(calls.values()) / messages
    return "\n".join(["| store method | calls per message |", "|---|---:|", *rows,
                      f"| **all** | **{total:.2f}** |"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="messages counted (default 50)")
    args = parser.parse_args(argv)
    print(render(*asyncio.run(measure(args.messages))))


if __name__ == "__main__":
    main()
