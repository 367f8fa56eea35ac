"""The claims a store gave up without managing to write so."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Unreleased:
    """Claims this store gave up without managing to write so (a full disk, a write lock
    held too long by another process): it no longer renews them, and the first write
    transaction that succeeds releases them (the store's ``release_unreleased`` job)."""

    def __init__(self) -> None:
        self._claims: dict[tuple[str, str], str] = {}  # (session id, holder) -> why
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._claims)

    def add(self, session_id: str, holder: str, why: str) -> None:
        with self._lock:
            self._claims[session_id, holder] = why

    def snapshot(self) -> dict[tuple[str, str], str]:
        with self._lock:
            return dict(self._claims)

    def on(self, session_id: str) -> bool:
        with self._lock:
            return any(session == session_id for session, _ in self._claims)

    def discard(self, claims: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            for claim in claims:
                self._claims.pop(claim, None)
