"""Server-sent events: the framing of a session's logged events for a streaming client.

Each frame is ``id: <seq>`` (the event's seq in its session's log, which a client sends
back as ``Last-Event-ID`` to resume after it), ``event: <type>``, ``data: <one line of
JSON>`` and a blank line. A ``ping`` (without an ``id``: it is not in the log) goes out after
every ``ping_interval`` seconds of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from wingspan import Done, ErrorEvent, ErrorInfo, LoggedEvent, Ping, wire

if TYPE_CHECKING:
    import cattrs

__all__ = ["HEADERS", "LIFECYCLE", "event_stream", "frame"]

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

#: The events that bracket runs: only on the run and session event routes.
LIFECYCLE = frozenset({"run_queued", "run_started", "run_finished"})


def frame(seq: int | None, event: Any, converter: cattrs.Converter) -> bytes:
    """One SSE frame. JSON never holds a raw newline (they are escaped in strings), so the
    data is always one line."""
    data = wire.unstructure(event, converter)
    text = wire.compact_json(data)
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {data['type']}\ndata: {text}\n\n".encode()


async def event_stream(
    batches: AsyncGenerator[list[LoggedEvent], None],
    converter: cattrs.Converter,
    *,
    stopped: asyncio.Event,
    stop_error: ErrorInfo,
    lifecycle: bool = True,
    until_terminal: bool = False,
) -> AsyncIterator[bytes]:
    """The frames of ``batches`` (from :func:`wingspan.runs.follow` with a heartbeat: an
    empty batch is a ``ping``) for one client, one write per batch.

    :param stopped: once set (the server stops), the stream ends with an ``error`` frame
        with ``stop_error``.
    :param lifecycle: whether ``run_queued`` / ``run_started`` / ``run_finished`` are sent.
    :param until_terminal: end after the first ``done`` or ``error`` frame.

    A client that goes away only stops reading the log; the run goes on.
    """
    stop = asyncio.ensure_future(stopped.wait())
    step: asyncio.Future[list[LoggedEvent] | None] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(batches, None))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                yield frame(None, ErrorEvent(error=stop_error), converter)
                return
            entries = step.result()
            if entries is None:
                return
            if not entries:
                yield frame(None, Ping(), converter)
                continue
            frames = []
            for entry in entries:
                event = entry.event
                if not lifecycle and event.type in LIFECYCLE:
                    continue
                frames.append(frame(entry.seq, event, converter))
                if until_terminal and type(event) in (Done, ErrorEvent):
                    yield b"".join(frames)
                    return
            if frames:
                yield b"".join(frames)
    finally:
        stop.cancel()
        if step is not None and not step.done():  # the client left, or the server stops
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
        await batches.aclose()
