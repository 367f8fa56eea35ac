"""What the SQL stores keep of a history in memory, and how they decode its rows."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Sequence

from wingspan import Message, wire


class HistoryCache:
    """Decoded histories of recently used sessions, so reloading one reads only new rows.

    A history only grows, so a cached prefix stays true; a session id deleted and created
    again gets a new ``pk``, which invalidates its entry.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: collections.OrderedDict[str, tuple[int, list[Message]]] = (
            collections.OrderedDict()
        )
        self._size = 0
        self._lock = threading.Lock()

    def get(self, session_id: str, pk: int) -> list[Message]:
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None or entry[0] != pk:
                return []
            self._entries.move_to_end(session_id)
            return entry[1]

    def add(self, session_id: str, pk: int, start: int, messages: Sequence[Message]) -> None:
        """Record that ``messages`` are the history of ``session_id`` from ``start`` on."""
        if not self._limit:
            return
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None and entry[0] == pk and len(entry[1]) == start:
                entry[1].extend(messages)
                self._entries.move_to_end(session_id)
                self._size += len(messages)
            elif start == 0:
                self._drop(session_id)
                self._entries[session_id] = (pk, list(messages))
                self._size += len(messages)
            while self._size > self._limit and self._entries:
                self._drop(next(iter(self._entries)))

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self._size -= len(entry[1])


def decode_messages(bodies: list[str]) -> list[Message]:
    """The stored messages, checked as strictly as the converter would
    (:func:`wingspan.wire.structure_messages`: a direct decoder of the stored shapes).

    The bodies are parsed as one JSON array (one call into the parser instead of one a row,
    about twice as fast on a long history); if that fails or yields another number of values,
    each row is parsed on its own, so that the damaged one is named.
    """
    if len(bodies) > 1:
        try:
            values = json.loads("[" + ",".join(bodies) + "]")
        except ValueError:
            values = None
        if type(values) is list and len(values) == len(bodies):
            return wire.structure_messages(values)
    return [wire.loads(body, Message) for body in bodies]
