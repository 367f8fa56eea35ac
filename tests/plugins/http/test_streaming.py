"""The SSE framing of logged events: ids, pings, batches, lifecycle and stopping."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from wingspan import (
    Done,
    ErrorEvent,
    ErrorInfo,
    RunFinished,
    RunStarted,
    SessionRecord,
    Store,
    StreamEvent,
    TextDelta,
    ToolResultEvent,
    Usage,
    new_id,
    wire,
)
from wingspan.plugins.http.runs import STREAM_STOPPED
from wingspan.plugins.http.sse import event_stream, frame
from wingspan.plugins.memory import MemoryStore
from wingspan.runs import follow

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


async def _logged_session(store: Store) -> str:
    session = await store.create_session(SessionRecord(id=new_id()))
    return session.id


async def test_event_stream_pings_while_silent_then_sends_what_is_logged() -> None:
    store = MemoryStore()
    sid = await _logged_session(store)
    stopped = asyncio.Event()
    frames = event_stream(follow(store, sid, heartbeat=0.01), CONVERTER, stopped=stopped,
                          stop_error=STREAM_STOPPED)
    first = await asyncio.wait_for(anext(frames), WAIT)
    assert first.startswith(b"event: ping\n")  # not in the log: no id
    done = Done(usage=Usage(), steps=1, response="ok", tool_calls=(), stop_reason="end_turn")
    await store.append_events(sid, "r", [TextDelta(text="a", index=0), done])
    async with asyncio.timeout(WAIT):
        while (chunk := await anext(frames)).startswith(b"event: ping"):
            pass
    assert [n for n, _, _ in parse_sse(chunk.decode())] == [1, 2]  # one write for the batch
    assert json.loads(chunk.decode().split("data: ")[-1])["response"] == "ok"
    await frames.aclose()


async def test_a_stream_ends_with_an_error_frame_when_the_server_stops() -> None:
    store = MemoryStore()
    sid = await _logged_session(store)
    stopped = asyncio.Event()
    frames = event_stream(follow(store, sid), CONVERTER, stopped=stopped,
                          stop_error=STREAM_STOPPED)
    pending = asyncio.ensure_future(anext(frames))
    await asyncio.sleep(0)
    stopped.set()
    last = await asyncio.wait_for(pending, WAIT)
    assert b"event: error" in last and b"server_stopping" in last
    async with asyncio.timeout(WAIT):
        assert [chunk async for chunk in frames] == []


async def test_lifecycle_events_are_left_out_and_the_stream_ends_at_its_terminal() -> None:
    store = MemoryStore()
    sid = await _logged_session(store)
    done = Done(usage=Usage(), steps=1, response="", tool_calls=(), stop_reason="end_turn")
    await store.append_events(sid, "r", [RunStarted(run_id="r"), done,
                                         RunFinished(run_id="r", status="completed")])
    frames = event_stream(follow(store, sid), CONVERTER, stopped=asyncio.Event(),
                          stop_error=STREAM_STOPPED, lifecycle=False, until_terminal=True)
    async with asyncio.timeout(WAIT):
        sent = b"".join([chunk async for chunk in frames]).decode()
    assert [(n, kind) for n, kind, _ in parse_sse(sent)] == [(2, "done")]
