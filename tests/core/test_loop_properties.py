"""Property: whatever the script, failures and interruptions, the history stays valid, every
request alternates turns as strict chat templates demand, and the next run is accepted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import wingspan
from wingspan import Agent, Session, check_history
from wingspan.testing import make_runtime, scripted

from .test_loop_failures import Alternating

RUNTIME = make_runtime()


@wingspan.tool
async def ok(n: int) -> int:
    """Doubles n.

    :param n: a number
    """
    await asyncio.sleep(0)
    return 2 * n


@wingspan.tool
def boom() -> str:
    """Raises."""
    raise ValueError("boom")


CALLS = st.sampled_from([
    {"name": "ok", "input": {"n": 1}},
    {"name": "boom", "input": {}},
    {"name": "missing", "input": {}},
    {"name": "ok", "input": {"n": "not a number"}},
])
TURNS = st.one_of(
    st.text(max_size=30).map(lambda t: t or "."),
    st.lists(CALLS, min_size=1, max_size=3),
    st.builds(lambda text, calls: {"text": text, "tool_calls": calls},
              st.text(max_size=10), st.lists(CALLS, max_size=2)),
    st.builds(lambda text: {"text": text, "error": "provider fell over"}, st.text(max_size=10)),
)
INTERRUPTIONS = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["close", "cancel"]), st.integers(0, 40)),
)


async def _consume(session: Session, message: str, interruption: Any) -> None:
    if interruption is None:
        with contextlib.suppress(wingspan.ProviderError):
            await session.run(message)
        return
    mode, after = interruption

    async def reader() -> None:
        seen = 0
        async with session.stream(message) as events:
            async for _ in events:
                seen += 1
                if seen > after:
                    if mode == "close":
                        return
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()

    with contextlib.suppress(asyncio.CancelledError, wingspan.ProviderError):
        await asyncio.wait_for(asyncio.create_task(reader()), 10)


@settings(max_examples=150)
@given(
    runs=st.lists(
        st.tuples(st.lists(TURNS, min_size=1, max_size=5), st.integers(1, 6), INTERRUPTIONS),
        min_size=1, max_size=3,
    )
)
def test_history_stays_valid(runs: list[tuple[list[Any], int, Any]]) -> None:
    async def scenario() -> None:
        store = await RUNTIME.open_store("memory://")
        session = Session(agent=Agent(name="a", provider=scripted(["x"])), store=store,
                          runtime=RUNTIME)
        for script, max_steps, interruption in runs:
            provider = Alternating(scripted(script))
            session.agent = Agent(name="a", provider=provider, tools=[ok, boom],
                                  max_steps=max_steps)
            await _consume(session, "go", interruption)
            assert provider.refused == [], session.history
            assert check_history(session.history) == [], session.history
            assert await store.load_messages(session.id) == list(session.history)
        # the next run is accepted and answers
        provider = Alternating(scripted(["fine"]))
        session.agent = Agent(name="a", provider=provider, tools=[ok, boom])
        assert (await session.run("last")).response == "fine"
        assert provider.refused == []
        assert check_history(session.history) == []

    asyncio.run(scenario())
