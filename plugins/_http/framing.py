"""The two stream framings: ``text/event-stream`` (:class:`SSEDecoder`) and
newline-delimited JSON (:class:`NDJSONDecoder`), both fed bytes as they arrive."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:
    from .client import HttpClient


@attrs.frozen
class ServerSentEvent:
    """One dispatched SSE event (the WHATWG event-stream format)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: ``event``, ``data`` (several lines join
    with ``\\n``), ``id`` and ``retry`` fields; ``:`` comments; LF, CRLF or CR line ends,
    also split across chunks; UTF-8 split across chunks; a leading BOM."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._position = 0  # where the lines not yet read start in _buffer
        self._started = False
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """Take the next bytes; return the events they complete, each read from the
        buffer only when asked for, so the first event of a large chunk reaches the caller
        before the rest is parsed. Lines not read yet (the caller stopped early) stay
        buffered for the next call."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            # The previous chunk ended with a CR: an LF now is the rest of that CRLF.
            self._after_cr = False
            text = text.removeprefix("\n")
        self._buffer = self._buffer[self._position:] + text
        self._position = 0
        return self._events()

    def _events(self) -> Iterator[ServerSentEvent]:
        text = self._buffer
        length = len(text)
        start = self._position
        # The next CR and LF at or after start (-1: none left), each searched for again only
        # once passed: a stream without CRs is not scanned to its end for every line.
        cr, lf = text.find("\r", start), text.find("\n", start)
        while start < length:
            if 0 <= cr < start:
                cr = text.find("\r", start)
            if 0 <= lf < start:
                lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            end = lf if cr == -1 else cr if lf == -1 else min(cr, lf)
            after = end + 1
            if text[end] == "\r":
                if after == length:
                    self._after_cr = True
                elif text[after] == "\n":
                    after += 1
            line = text[start:end]
            self._position = start = after  # read, whether or not the caller asks for more
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event or "message", id=self._id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event


class NDJSONDecoder:
    """Incremental newline-delimited JSON: one value per line, blank lines skipped."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Any]:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        return [self._parse(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        """Values left at the end of the stream (a last line without its newline)."""
        rest, self._buffer = self._buffer, b""
        return [self._parse(rest)] if rest.strip() else []

    def _parse(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise self._client.malformed(f"a line is not JSON: {line[:120]!r}") from None


T = TypeVar("T")


def token_count(value: Any) -> int | None:
    """A token count as a server reports it; ``None`` when it reports none (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def load_json(client: HttpClient, data: str) -> Any:
    """An SSE event's data as JSON, or the malformed-chunk error."""
    try:
        return json.loads(data)
    except ValueError:
        raise client.malformed(f"an event's data is not JSON: {data[:120]!r}") from None


def translate(
    client: HttpClient,
    item: Any,
    handle: Callable[[dict[str, Any]], T],
    *,
    what: str,
    label: str,
    shown: str,
) -> T:
    """Translate one decoded stream item with ``handle``.

    An item that is not a JSON object, or that ``handle`` cannot read (a missing key, a wrong
    type), is a malformed-stream :class:`~wingspan.ProviderError` naming it: ``what`` names
    the item in the first case (``"a chunk"``), ``label`` in the second (``"chunk"``), and
    ``shown`` is the raw text quoted.
    """
    if not isinstance(item, dict):
        raise client.malformed(f"{what} is not a JSON object: {shown}")
    try:
        return handle(item)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise client.malformed(
            f"unexpected {label} ({type(exc).__name__}: {exc}): {shown}"
        ) from None
