"""The kernel's event shape from APIs that stream loose deltas: :class:`BlockWriter`
numbers and opens/closes content blocks, :func:`call_id_prefix` names the tool calls the
API leaves unnamed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wingspan import (
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    TextDelta,
    TextStart,
    ToolUseStart,
)

if TYPE_CHECKING:
    from wingspan import StreamEvent


class BlockWriter:
    """Numbers content blocks from 0 and keeps one open at a time, so APIs that stream
    "text, then tool calls" as loose deltas produce the kernel's block shape."""

    def __init__(self) -> None:
        self.count = 0
        self._open: str | None = None  # "text" or the open tool call's key

    def text(self, text: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._open != "text":
            events += self.close()
            events.append(ContentBlockStart(index=self.count, content_block=TextStart()))
            self._open = "text"
        events.append(TextDelta(text=text, index=self.count))
        return events

    def tool(self, key: str, id: str, name: str) -> list[StreamEvent]:
        """Start the tool-use block ``key`` (an API-side identity, e.g. its index)."""
        events = self.close()
        events.append(ContentBlockStart(index=self.count,
                                        content_block=ToolUseStart(id=id, name=name)))
        self._open = f"tool:{key}"
        return events

    def is_open(self, key: str) -> bool:
        return self._open == f"tool:{key}"

    def json(self, fragment: str) -> list[StreamEvent]:
        return [InputJsonDelta(partial_json=fragment, index=self.count)] if fragment else []

    def close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        self._open = None
        self.count += 1
        return [ContentBlockStop(index=self.count - 1)]


def call_id_prefix(body: Mapping[str, Any]) -> str:
    """A prefix for tool-call ids the API does not give: derived from the request, so
    the same request gets the same ids and ids never repeat within a session (every
    request of a session carries a longer or different history)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode())
    return f"call_{digest.hexdigest()[:16]}"
