"""What a job sees: its connection inside a transaction, the database's clock, and what to do
once the transaction commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

#: What a notice is of (the first word of its payload; the second is its session or run).
EVENTS, CLAIMS, RUN = "e", "c", "r"


class Tx:
    """One job's transaction.

    - ``conn``: the connection, inside the transaction (a write's holds its session's lock).
    - ``effects``: callables run once the transaction commits (this store's waiters woken).
    - ``notices``: payloads of ``NOTIFY`` on the store's channel, sent in the transaction so
      that other instances see them when, and only if, it commits (:meth:`events`,
      :meth:`claims`, :meth:`run`).
    """

    __slots__ = ("_now", "conn", "effects", "notices")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.effects: list[Callable[[], None]] = []
        self.notices: list[str] = []
        self._now: float | None = None

    async def now(self) -> float:
        """The database server's clock, in seconds since the epoch, read once a transaction:
        every instance judges leases by the same clock, whatever its host's says."""
        if self._now is None:
            self._now = float(await self.conn.fetchval(
                "SELECT extract(epoch FROM clock_timestamp())"))
        return self._now

    def events(self, session_id: str) -> None:
        """The session's log grew (or the session was deleted): its waiters look again."""
        self.notices.append(f"{EVENTS} {session_id}")

    def claims(self, session_id: str) -> None:
        """The session's claim was given up or handed on: its waiters look again."""
        self.notices.append(f"{CLAIMS} {session_id}")

    def run(self, run_id: str) -> None:
        """A run's record changed (an abort was asked for, say)."""
        self.notices.append(f"{RUN} {run_id}")
