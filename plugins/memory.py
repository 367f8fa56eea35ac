"""The ``memory://`` store: everything in this process's memory, gone when it ends.

It is a :class:`wingspan.KeyValueStore` on dicts, so it keeps the full store contract (the
same state machine checks it as the SQLite store) and suits tests and short-lived embedding.
Claims are served first come, first served; they live and end with this process, so there is
never a dead holder's claim to recover, and a release, which writes nothing, is never put off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import wingspan
from wingspan import (
    AgentRecord,
    ConfigError,
    Credential,
    KeyValueStore,
    LoggedEvent,
    Message,
    RunRecord,
    SessionRecord,
    StoreSpec,
)


class MemoryStore(KeyValueStore):
    """A :class:`wingspan.Store` in memory."""

    label = "memory store"

    def __init__(self) -> None:
        super().__init__()
        self._agents: dict[str, AgentRecord] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._messages: dict[str, list[Message]] = {}
        self._events: dict[str, list[LoggedEvent]] = {}
        self._runs: dict[str, RunRecord] = {}
        self._credentials: dict[str, Credential] = {}
        self._tables: dict[str, dict[str, Any]] = {
            "agents": self._agents,
            "sessions": self._sessions,
            "messages": self._messages,
            "events": self._events,
            "runs": self._runs,
            "credentials": self._credentials,
        }
        for table in self.TABLES:  # the permission requests and grants, say
            self._tables.setdefault(table, {})

    def __repr__(self) -> str:
        return f"<MemoryStore sessions={len(self._sessions)} agents={len(self._agents)}>"

    def read(self, table: str, key: str) -> Any:
        return self._tables[table].get(key)

    def write(self, table: str, key: str, value: Any) -> None:
        self._tables[table][key] = value

    def remove(self, table: str, key: str) -> None:
        self._tables[table].pop(key, None)

    def keys(self, table: str) -> Iterable[str]:
        return self._tables[table].keys()

    def append(self, table: str, key: str, values: Sequence[Any]) -> int:
        history: list[Any] = self._tables[table].setdefault(key, [])
        history.extend(values)  # in place: appending costs what is appended, not the list
        return len(history)


async def open_memory_store(url: str, settings: Mapping[str, Any]) -> MemoryStore:
    if url not in ("memory://", "memory:"):
        raise ConfigError(f"a memory store URL is just 'memory://', got {url!r}")
    return MemoryStore()


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [
        StoreSpec(
            scheme="memory",
            open=open_memory_store,
            description="in this process's memory; lost when it ends",
        )
    ]
