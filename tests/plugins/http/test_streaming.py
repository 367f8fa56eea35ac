"""The run manager's fan-out and the SSE framing."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from wingspan import (
    Done,
    ErrorEvent,
    ErrorInfo,
    StreamEvent,
    TextDelta,
    ToolResultEvent,
    Usage,
    wire,
)
from wingspan.plugins.http.runs import Run
from wingspan.plugins.http.sse import event_stream, frame

from .conftest import WAIT, parse_sse, runtime_with_plugins

CONVERTER = runtime_with_plugins().converter
texts = st.text(st.characters(codec="utf-8"), max_size=40)
events = st.one_of(
    st.builds(TextDelta, text=texts, index=st.integers(0, 9)),
    st.builds(ToolResultEvent, tool_use_id=texts, tool_name=texts, content=texts,
              is_error=st.booleans()),
    st.builds(ErrorEvent, error=st.builds(ErrorInfo, code=texts, message=texts)),
)


@given(st.lists(events, max_size=5))
def test_frames_round_trip(items: list[StreamEvent]) -> None:
    text = b"".join(frame(i + 1, e, CONVERTER) for i, e in enumerate(items)).decode()
    parsed = parse_sse(text)
    assert [n for n, _, _ in parsed] == list(range(1, len(items) + 1))
    assert [wire.structure(d, type(e), CONVERTER) for (_, _, d), e in zip(
        parsed, items, strict=True)] == items


async def test_a_slow_subscriber_is_dropped_not_the_run() -> None:
    run = Run(session_id="s", agent_id=None, buffer=3)
    slow = run.subscribe()
    fast = run.subscribe()
    received: list[StreamEvent] = []

    async def read_fast() -> None:
        while True:
            event = await fast.next_event(WAIT)
            assert event is not None
            received.append(event)
            if type(event) is Done:
                return

    reader = asyncio.ensure_future(read_fast())
    for i in range(10):
        run.publish(TextDelta(text=str(i), index=0))
        await asyncio.sleep(0)  # let the fast reader keep up, as a real client would
    done = Done(usage=Usage(), steps=1, response="", tool_calls=(), stop_reason="end_turn")
    run.publish(done)
    await asyncio.wait_for(reader, WAIT)
    assert [e.text for e in received[:-1]] == [str(i) for i in range(10)]  # type: ignore[union-attr]
    first = await slow.next_event(WAIT)
    assert type(first) is ErrorEvent and first.error.code == "too_slow"
    assert slow not in run.subscribers


async def test_event_stream_pings_while_silent() -> None:
    run = Run(session_id="s", agent_id=None, buffer=8)
    frames = event_stream(run, CONVERTER, ping_interval=0.01)
    first = await asyncio.wait_for(anext(frames), WAIT)
    assert b"event: ping" in first and first.startswith(b"id: 1\n")
    run.publish(Done(usage=Usage(), steps=1, response="ok", tool_calls=(),
                     stop_reason="end_turn"))
    async with asyncio.timeout(WAIT):
        rest = [chunk async for chunk in frames]
    assert b"event: done" in rest[-1]
    assert json.loads(rest[-1].decode().split("data: ")[1])["response"] == "ok"
    assert not run.subscribers
