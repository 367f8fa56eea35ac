"""What the store's calls run inside their transactions: one function per operation (the
claims are in ``_leases``, the runs in ``_runs``, the event log in ``_events``).

A write job runs in a transaction that holds, from its start, the lock of the session it
changes (``PostgresStore._write``); it raises to undo itself. Effects on in-memory state wait
for the commit (``tx.effects``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

import wingspan
from wingspan import (
    ConflictError,
    Message,
    NotFoundError,
    RunRecord,
    SessionRecord,
    StoreError,
    wire,
)
from wingspan.plugins._stores.history import HistoryCache
from wingspan.plugins._stores.sql import MESSAGE_COUNT, SESSION_COLUMNS, session

from ._tx import Tx

#: Tables whose records are looked up by ``id`` (never from user input).
TABLES = frozenset({"agents", "sessions"})


async def insert(tx: Tx, table: str, kind: str, record_id: str, body: str) -> None:
    assert table in TABLES
    inserted = await tx.conn.fetchval(
        f"INSERT INTO {table} (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING "
        "RETURNING 1", record_id, body)
    if inserted is None:
        raise ConflictError(f"{kind} {record_id} already exists")


async def select_body(tx: Tx, table: str, kind: str, record_id: str) -> str:
    assert table in TABLES
    body = await tx.conn.fetchval(f"SELECT body FROM {table} WHERE id = $1", record_id)
    if body is None:
        raise NotFoundError(f"{kind} {record_id!r} not found")
    return str(body)


async def select_session(tx: Tx, session_id: str) -> SessionRecord:
    row = await tx.conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return session(row[0], row[1], row[2])


async def update_body(tx: Tx, table: str, kind: str, record_id: str, body: str) -> None:
    assert table in TABLES
    if await tx.conn.fetchval(
            f"UPDATE {table} SET body = $1 WHERE id = $2 RETURNING 1", body, record_id) is None:
        raise NotFoundError(f"{kind} {record_id!r} not found")


async def update_session(tx: Tx, session_id: str, body: str) -> tuple[int, int]:
    """:returns: the session's message count and ``last_seq``."""
    row = await tx.conn.fetchrow(
        f"UPDATE sessions SET body = $1 WHERE id = $2 RETURNING {MESSAGE_COUNT}, last_seq",
        body, session_id)
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return int(row[0]), int(row[1])


async def delete(tx: Tx, table: str, kind: str, record_id: str) -> None:
    assert table in TABLES
    if await tx.conn.fetchval(
            f"DELETE FROM {table} WHERE id = $1 RETURNING 1", record_id) is None:
        raise NotFoundError(f"{kind} {record_id!r} not found")


async def delete_session(tx: Tx, session_id: str) -> None:
    """Delete a session with all that is its (the foreign keys cascade), waking whoever
    waits on its log or its claim (they find it gone)."""
    await delete(tx, "sessions", "session", session_id)
    tx.events(session_id)
    tx.claims(session_id)


async def page(
    tx: Tx, table: str, columns: str, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    # Newest first by id (ULIDs sort by creation); the cursor is the last id shown, so rows
    # added meanwhile never shift a later page.
    assert table in TABLES
    rows = await tx.conn.fetch(
        f"SELECT id, {columns} FROM {table} WHERE $1::text IS NULL OR id < $1 "
        "ORDER BY id DESC LIMIT $2", cursor, limit + 1)
    shown = rows[:limit]
    next_cursor = shown[-1][0] if len(rows) > limit else None
    return [tuple(row)[1:] for row in shown], next_cursor


async def session_pk(tx: Tx, session_id: str) -> int:
    pk = await tx.conn.fetchval("SELECT pk FROM sessions WHERE id = $1", session_id)
    if pk is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return int(pk)


async def append(tx: Tx, session_id: str, messages: Sequence[Message]) -> int:
    """Append ``messages`` to the history (numbered on from its count, in one statement).

    :returns: the message count afterwards.
    """
    if not messages:
        row = await tx.conn.fetchrow(
            f"SELECT {MESSAGE_COUNT} FROM sessions WHERE id = $1", session_id)
        if row is None:
            raise NotFoundError(f"session {session_id!r} not found")
        return int(row[0])
    # (The count is read once for the statement: its own rows are not seen by it.)
    last = await tx.conn.fetchval(
        "WITH m AS (INSERT INTO messages (session_pk, seq, body) "
        f"SELECT pk, {MESSAGE_COUNT} + n - 1, text "
        "FROM sessions, unnest($2::text[]) WITH ORDINALITY AS m(text, n) WHERE id = $1 "
        "RETURNING seq) SELECT max(seq) FROM m",
        session_id, [wire.dumps(m) for m in messages])
    if last is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return int(last) + 1


async def last_message(tx: Tx, pk: int) -> Message | None:
    """The latest message of session ``pk``'s history, if it has one."""
    body = await tx.conn.fetchval(
        "SELECT body FROM messages WHERE session_pk = $1 ORDER BY seq DESC LIMIT 1", pk)
    return None if body is None else wire.loads(body, Message)


async def load_rows(
    tx: Tx, cache: HistoryCache, session_id: str
) -> tuple[int, list[Message], list[str]]:
    """What a load reads (in one snapshot): the session's pk, the prefix of its history
    this instance has decoded already, and the bodies of the messages after it.

    A history only grows, so a cached prefix stays true (a session deleted and created
    again is another pk, which the cache tells apart).
    """
    row = await tx.conn.fetchrow(
        f"SELECT pk, {MESSAGE_COUNT} FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"session {session_id!r} not found")
    pk, count = int(row[0]), int(row[1])
    known = cache.get(session_id, pk)
    start = min(len(known), count)
    rows = await tx.conn.fetch(
        "SELECT body FROM messages WHERE session_pk = $1 AND seq >= $2 ORDER BY seq",
        pk, start)
    if len(rows) != count - start:
        raise StoreError(
            f"session {session_id} should hold {count} messages; the database is damaged")
    return pk, known[:start], [body for (body,) in rows]


# --- run records ----------------------------------------------------------------------------

#: The columns :func:`run_record` makes a record of.
RUN_COLUMNS = "body, last_seq"


def run_record(body: str, last_seq: int | None) -> RunRecord:
    """A run's record from its row: the body, with the ``last_seq`` its appends keep."""
    run = wire.loads(body, RunRecord)
    return run if run.last_seq == last_seq else attrs.evolve(run, last_seq=last_seq)


async def stored_run(tx: Tx, run_id: str) -> tuple[int, RunRecord]:
    """``(session pk, record)`` of a run. :raises NotFoundError: when there is none."""
    row = await tx.conn.fetchrow(
        f"SELECT session_pk, {RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return int(row[0]), run_record(row[1], row[2])


async def get_run(tx: Tx, run_id: str) -> RunRecord:
    return (await stored_run(tx, run_id))[1]


def _run_values(run: RunRecord) -> tuple[Any, ...]:
    finished_at = None if run.finished_at is None else wire.format_timestamp(run.finished_at)
    return run.status, wire.dumps(run), run.last_seq, run.idempotency_key, finished_at


async def insert_run(tx: Tx, pk: int, run: RunRecord) -> None:
    """Store a new run of session ``pk``."""
    await tx.conn.execute(
        "INSERT INTO runs (id, session_pk, status, body, last_seq, idempotency_key, "
        "finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", run.id, pk, *_run_values(run))


async def write_run(tx: Tx, run: RunRecord) -> None:
    """Store a new state of a run that exists (to be looked at by the next prune)."""
    await tx.conn.execute(
        "UPDATE runs SET status = $2, body = $3, last_seq = $4, idempotency_key = $5, "
        "finished_at = $6, deltas_pruned = false WHERE id = $1", run.id, *_run_values(run))
    tx.run(run.id)


async def save_run(tx: Tx, run: RunRecord) -> None:
    pk = await session_pk(tx, run.session_id)
    await tx.conn.execute(
        "INSERT INTO runs (id, session_pk, status, body, last_seq, idempotency_key, "
        "finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET "
        "session_pk = excluded.session_pk, status = excluded.status, body = excluded.body, "
        "last_seq = excluded.last_seq, idempotency_key = excluded.idempotency_key, "
        "finished_at = excluded.finished_at, deltas_pruned = false",
        run.id, pk, *_run_values(run))
    tx.run(run.id)


# --- idempotency keys and credentials -------------------------------------------------------


async def reserve_key(tx: Tx, scope: str, key: str, request_hash: str, new_id: str) -> str:
    """:meth:`PostgresStore.reserve_key`'s job: the key's id, ``new_id`` if it is new."""
    await tx.conn.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, target_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        scope, key, request_hash, new_id, wire.format_timestamp(wingspan.utc_now()))
    first_hash, target_id = await tx.conn.fetchrow(
        "SELECT request_hash, target_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
        scope, key)
    if first_hash != request_hash:
        raise ConflictError(
            f"idempotency key {key!r} was already used for another request (scope {scope!r}); "
            "send a new key for a new request"
        )
    return str(target_id)


async def prune_keys(tx: Tx, cutoff: str) -> int:
    """Drop the idempotency keys reserved before ``cutoff`` (a stored timestamp's text)."""
    rows = await tx.conn.fetch(
        "DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1", cutoff)
    return len(rows)


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogatepass")


def _decoded(data: bytes | None) -> str | None:
    return None if data is None else bytes(data).decode("utf-8", "surrogatepass")


async def set_credential(
    tx: Tx, provider: str, kind: str, base_url: str | None, key: str | None, sealed: bytes | None
) -> None:
    """Store a credential, its key plain (``key``) or sealed (``sealed``)."""
    await tx.conn.execute(
        "INSERT INTO credentials (provider, type, base_url, key, sealed) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider) DO UPDATE SET type = excluded.type, "
        "base_url = excluded.base_url, key = excluded.key, sealed = excluded.sealed",
        provider, kind, _encoded(base_url), _encoded(key), sealed)


async def get_credential(
    tx: Tx, provider: str
) -> tuple[str, str | None, str | None, bytes | None] | None:
    """``(type, base_url, key, sealed)`` of ``provider``'s credential, if one is stored."""
    row = await tx.conn.fetchrow(
        "SELECT type, base_url, key, sealed FROM credentials WHERE provider = $1", provider)
    if row is None:
        return None
    sealed = None if row[3] is None else bytes(row[3])
    return row[0], _decoded(row[1]), _decoded(row[2]), sealed


async def delete_credential(tx: Tx, provider: str) -> bool:
    return await tx.conn.fetchval(
        "DELETE FROM credentials WHERE provider = $1 RETURNING 1", provider) is not None


async def seal_plain_credentials(
    tx: Tx, seal: Callable[[str, str, str | None, str], bytes]
) -> int:
    """Seal the keys stored in the clear. :returns: how many there were."""
    rows = await tx.conn.fetch(
        "SELECT provider, type, base_url, key FROM credentials WHERE key IS NOT NULL")
    for provider, kind, base_url, key in rows:
        await tx.conn.execute(
            "UPDATE credentials SET key = NULL, sealed = $1 WHERE provider = $2",
            seal(provider, kind, _decoded(base_url), _decoded(key) or ""), provider)
    return len(rows)


async def list_credentials(tx: Tx) -> dict[str, str]:
    rows = await tx.conn.fetch("SELECT provider, type FROM credentials ORDER BY provider")
    return {provider: kind for provider, kind in rows}
