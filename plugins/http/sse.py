"""Server-sent events: the framing of a run's events for a streaming client.

Each frame is ``id: <n>`` (1, 2, ... within the response), ``event: <type>``,
``data: <one line of JSON>`` and a blank line. A ``ping`` goes out after every
``ping_interval`` seconds of silence, and the stream ends after exactly one terminal frame,
``done`` or ``error``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from wingspan import Done, ErrorEvent, Ping, StreamEvent, wire

if TYPE_CHECKING:
    import cattrs

    from .runs import Run

__all__ = ["HEADERS", "event_stream", "frame"]

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def frame(number: int, event: StreamEvent, converter: cattrs.Converter) -> bytes:
    """One SSE frame. JSON never holds a raw newline (they are escaped in strings), so the
    data is always one line."""
    data = wire.unstructure(event, converter)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {number}\nevent: {data['type']}\ndata: {text}\n\n".encode()


async def event_stream(
    run: Run, converter: cattrs.Converter, *, ping_interval: float
) -> AsyncIterator[bytes]:
    """The frames of ``run`` for one client, until its terminal frame. A client that goes
    away only unsubscribes; the run goes on."""
    subscriber = run.subscribe()
    number = 0
    try:
        while True:
            event = await subscriber.next_event(ping_interval)
            if event is None:
                number += 1
                yield frame(number, Ping(), converter)
                continue
            # The events already queued go out together: one write to the socket instead
            # of one per event when the run is ahead of this client.
            frames = []
            while event is not None:
                number += 1
                frames.append(frame(number, event, converter))
                if type(event) is Done or type(event) is ErrorEvent:
                    yield b"".join(frames)
                    return
                event = subscriber.ready()
            yield b"".join(frames)
    finally:
        run.unsubscribe(subscriber)
