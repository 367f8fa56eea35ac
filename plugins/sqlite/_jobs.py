"""What the store's threads run: one function per operation, given the thread's connection
(the claims on sessions are in ``_leases``).

A writer job runs inside the writer's transaction; it raises to undo itself (the writer then
runs each job of its batch on its own). Effects on in-memory state wait for the commit
(``tx.effects``).
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import wingspan
from wingspan import (
    ConflictError,
    Message,
    NotFoundError,
    StoreError,
    wire,
)

from .._stores.history import HistoryCache, decode_messages
from .._stores.sql import MESSAGE_COUNT, SESSION_COLUMNS
from ._worker import Tx

_CHUNK = 64  # messages converted between two chances for the event loop to run
T = TypeVar("T")


def returning(cursor: sqlite3.Cursor) -> Any:
    """The first row of a ``RETURNING`` statement, stepping it to its end: one left half
    done keeps its transaction from committing or rolling back."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def yielding(items: Sequence[T]) -> Iterator[T]:
    """``items``, letting other threads (the event loop's) take the GIL every so often: a
    thread that converts thousands of messages would otherwise keep it for 5 ms at a time
    (the interpreter's switch interval), and more when several threads contend for it."""
    for start in range(0, len(items), _CHUNK):
        if start:
            time.sleep(0)
        yield from items[start : start + _CHUNK]


def insert(tx: Tx, table: str, kind: str, record_id: str, body: str) -> int:
    try:
        cursor = tx.conn.execute(f"INSERT INTO {table} (id, body) VALUES (?, ?)", (record_id, body))
    except sqlite3.IntegrityError:
        raise ConflictError(f"{kind} {record_id} already exists") from None
    return cursor.lastrowid or 0


def select_body(tx: Tx, table: str, kind: str, record_id: str) -> str:
    row = tx.conn.execute(f"SELECT body FROM {table} WHERE id = ?", (record_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"{kind} {record_id!r} not found")
    body: str = row[0]
    return body


def select_session(tx: Tx, session_id: str) -> tuple[str, int, int]:
    row = tx.conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return row[0], row[1], row[2]


def update_body(tx: Tx, table: str, kind: str, record_id: str, body: str) -> None:
    if not tx.conn.execute(f"UPDATE {table} SET body = ? WHERE id = ?", (body, record_id)).rowcount:
        raise NotFoundError(f"{kind} {record_id!r} not found")


def update_session(tx: Tx, session_id: str, body: str) -> tuple[int, int]:
    """:returns: the session's message count and ``last_seq``."""
    row = returning(
        tx.conn.execute(
            f"UPDATE sessions SET body = ? WHERE id = ? RETURNING {MESSAGE_COUNT}, last_seq",
            (body, session_id),
        )
    )
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return row[0], row[1]


def delete(tx: Tx, table: str, kind: str, record_id: str) -> None:
    if not tx.conn.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,)).rowcount:
        raise NotFoundError(f"{kind} {record_id!r} not found")


def page(
    tx: Tx, table: str, columns: str, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    # Newest first by id (ULIDs sort by creation); the cursor is the last id shown, so rows
    # added meanwhile never shift a later page.
    rows = tx.conn.execute(
        f"SELECT id, {columns} FROM {table} WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
        (cursor, limit + 1),
    ).fetchall()
    shown = rows[:limit]
    next_cursor = shown[-1][0] if len(rows) > limit else None
    return [row[1:] for row in shown], next_cursor


def session_pk(tx: Tx, session_id: str) -> int:
    row = tx.conn.execute("SELECT pk FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    pk: int = row[0]
    return pk


def append(tx: Tx, cache: HistoryCache, session_id: str, messages: tuple[Message, ...]) -> int:
    # The count is the highest seq + 1, read in the same statement: keeping it in the
    # session row would dirty one more page per commit.
    bodies = [wire.dumps(m) for m in yielding(messages)]
    if bodies:
        row = returning(
            tx.conn.execute(
                "INSERT INTO messages (session_pk, seq, body) SELECT pk, "
                f"{MESSAGE_COUNT}, ? FROM sessions WHERE id = ? RETURNING session_pk, seq",
                (bodies[0], session_id),
            )
        )
    else:
        row = tx.conn.execute(
            f"SELECT pk, {MESSAGE_COUNT} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    pk, start = row
    if len(bodies) > 1:
        tx.conn.executemany(
            "INSERT INTO messages (session_pk, seq, body) VALUES (?, ?, ?)",
            [(pk, start + i, body) for i, body in enumerate(bodies) if i],
        )
    tx.effects.append(lambda: cache.add(session_id, pk, start, messages))
    return int(start) + len(messages)


_gc_lock = threading.Lock()
_gc_pauses = 0  # decodings in progress that paused the collector


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a history is read and decoded.

    Decoding makes tens of thousands of small objects and no cycles, so the collections it
    sets off find nothing to free, yet each full one walks every object of the process (the
    message cache among them): on a 10,000-message history they cost as much as the
    decoding itself. The collector runs again as soon as the last decoding ends.
    """
    global _gc_pauses
    with _gc_lock:
        if _gc_pauses == 0 and not gc.isenabled():
            paused = False  # someone else turned it off: leave it alone
        else:
            paused = True
            _gc_pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if paused:
            with _gc_lock:
                _gc_pauses -= 1
                if _gc_pauses == 0:
                    gc.enable()


#: The most rows :func:`load_recent` decodes (about 2 µs each): more, and the load is left
#: to the reader's thread.
RECENT_ROWS = 64
#: What :func:`load_recent` answers for a history with more rows to decode than that.
LONG: Any = object()


def load(tx: Tx, cache: HistoryCache, session_id: str) -> list[Message]:
    with _collector_paused():
        return _load(tx, cache, session_id)


def load_recent(tx: Tx, cache: HistoryCache, session_id: str) -> list[Message]:
    """:func:`load` for a history whose rows not yet cached are at most :data:`RECENT_ROWS`
    (a session used lately, or a short one), else :data:`LONG` with nothing read."""
    return _load(tx, cache, session_id, RECENT_ROWS)


def _load(
    tx: Tx, cache: HistoryCache, session_id: str, most: int | None = None
) -> list[Message]:
    conn = tx.conn
    conn.execute("BEGIN")  # one snapshot for the count and the rows
    try:
        row = conn.execute(
            f"SELECT pk, {MESSAGE_COUNT} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"session {session_id!r} not found")
        pk, count = row
        known = cache.get(session_id, pk)
        start = min(len(known), count)
        if most is not None and count - start > most:
            return LONG  # type: ignore[no-any-return]
        bodies = conn.execute(
            "SELECT body FROM messages WHERE session_pk = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (pk, start, count),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    if len(bodies) != count - start:
        raise StoreError(
            f"session {session_id} should hold {count} messages; the database is damaged"
        )
    try:
        new = decode_messages([body for (body,) in bodies])
    except wingspan.ValidationError as exc:
        raise StoreError(f"a stored message of session {session_id} is damaged: {exc}") from None
    if new:
        cache.add(session_id, pk, start, new)
    return known[:start] + new


def save_run(tx: Tx, run_id: str, session_id: str, status: str, body: str) -> None:
    pk = session_pk(tx, session_id)
    tx.conn.execute(
        "INSERT OR REPLACE INTO runs (id, session_pk, status, body) VALUES (?, ?, ?, ?)",
        (run_id, pk, status, body),
    )


def reserve_key(tx: Tx, scope: str, key: str, request_hash: str, new_id: str) -> str:
    """:meth:`SqliteStore.reserve_key`'s job: the key's id, ``new_id`` if it is new."""
    tx.conn.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, target_id, created_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
        (scope, key, request_hash, new_id, wire.format_timestamp(wingspan.utc_now())),
    )
    first_hash, target_id = tx.conn.execute(
        "SELECT request_hash, target_id FROM idempotency_keys WHERE scope = ? AND key = ?",
        (scope, key),
    ).fetchone()
    if first_hash != request_hash:
        raise ConflictError(
            f"idempotency key {key!r} was already used for another request (scope {scope!r}); "
            "send a new key for a new request"
        )
    return str(target_id)


def prune_keys(tx: Tx, cutoff: str) -> int:
    """Drop the idempotency keys reserved before ``cutoff`` (a stored timestamp's text)."""
    return int(
        tx.conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,)).rowcount
    )


def set_credential(
    tx: Tx, provider: str, kind: str, base_url: str | None, key: str | None, sealed: bytes | None
) -> None:
    """Store a credential, its key plain (``key``) or sealed (``sealed``)."""
    replacing = tx.conn.execute(
        "SELECT 1 FROM credentials WHERE provider = ?", (provider,)
    ).fetchone()
    tx.conn.execute(
        "INSERT OR REPLACE INTO credentials (provider, type, base_url, key, sealed) "
        "VALUES (?, ?, ?, ?, ?)",
        (provider, kind, base_url, key, sealed),
    )
    if replacing:
        tx.truncate_wal = True  # the old key's bytes must not stay in the log


def get_credential(
    tx: Tx, provider: str
) -> tuple[str, str | None, str | None, bytes | None] | None:
    """``(type, base_url, key, sealed)`` of ``provider``'s credential, if one is stored."""
    row = tx.conn.execute(
        "SELECT type, base_url, key, sealed FROM credentials WHERE provider = ?", (provider,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def delete_credential(tx: Tx, provider: str) -> bool:
    deleted = bool(
        tx.conn.execute("DELETE FROM credentials WHERE provider = ?", (provider,)).rowcount
    )
    if deleted:
        tx.truncate_wal = True
    return deleted


def seal_plain_credentials(tx: Tx, seal: Callable[[str, str, str | None, str], bytes]) -> int:
    """Seal the keys stored in the clear. :returns: how many there were."""
    rows = tx.conn.execute(
        "SELECT provider, type, base_url, key FROM credentials WHERE key IS NOT NULL"
    ).fetchall()
    for provider, kind, base_url, key in rows:
        tx.conn.execute(
            "UPDATE credentials SET key = NULL, sealed = ? WHERE provider = ?",
            (seal(provider, kind, base_url, key), provider),
        )
    if rows:
        tx.truncate_wal = True
    return len(rows)


def list_credentials(tx: Tx) -> dict[str, str]:
    rows = tx.conn.execute("SELECT provider, type FROM credentials ORDER BY provider").fetchall()
    return {provider: kind for provider, kind in rows}
