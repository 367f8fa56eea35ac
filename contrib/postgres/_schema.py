"""The PostgreSQL schema: versioned migrations, run at start-up under an advisory lock so that
instances starting at once apply each migration once, and a database newer than this
wingspan is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wingspan import StoreError

if TYPE_CHECKING:
    import asyncpg

#: The schema, one tuple of statements per version. Version ``n`` is ``MIGRATIONS[n - 1]``;
#: a released migration is never edited, only followed by a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # Records are kept as their wire JSON (``wingspan.wire``), as text: one shape
        # everywhere, decoded by the same fast path as the SQLite store's.
        "CREATE TABLE agents (id text PRIMARY KEY, body text NOT NULL)",
        # ``pk`` is never reused: a deleted and re-created id is a new session.
        # ``last_seq`` is the last seq given in its event log (kept when events are pruned).
        """CREATE TABLE sessions (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            body text NOT NULL,
            last_seq bigint NOT NULL DEFAULT 0)""",
        # One row per message, in order: the count of a session is its highest seq + 1.
        """CREATE TABLE messages (
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq bigint NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (session_pk, seq))""",
        # A run's body is its record; ``last_seq`` is the seq of its latest event (kept by
        # every append), and the columns it is looked up by are copied from the body.
        """CREATE TABLE runs (
            id text PRIMARY KEY,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            status text NOT NULL,
            body text NOT NULL,
            last_seq bigint,
            idempotency_key text,
            finished_at text,
            deltas_pruned boolean NOT NULL DEFAULT false)""",
        "CREATE INDEX runs_by_session ON runs (session_pk, id)",
        """CREATE INDEX runs_by_idempotency_key ON runs (session_pk, idempotency_key)
            WHERE idempotency_key IS NOT NULL""",
        """CREATE INDEX runs_unfinished ON runs (session_pk)
            WHERE status IN ('queued', 'running', 'waiting')""",
        "CREATE INDEX runs_to_prune ON runs (finished_at) WHERE NOT deltas_pruned",
        # The claim on a session: its holder (a run id), the store instance renewing it (the
        # owner, alive while it holds its advisory lock), when it lapses if nobody renews it
        # (the database's clock), and the waiting ticket it was handed to.
        """CREATE TABLE leases (
            session_pk bigint PRIMARY KEY REFERENCES sessions (pk) ON DELETE CASCADE,
            holder text NOT NULL,
            owner text NOT NULL,
            ticket bigint,
            expires_at double precision NOT NULL)""",
        "CREATE INDEX leases_by_owner ON leases (owner)",
        # Claimants waiting their turn, first come (lowest ticket) first served.
        """CREATE TABLE lease_waiters (
            ticket bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            holder text NOT NULL,
            owner text NOT NULL,
            expires_at double precision NOT NULL)""",
        "CREATE INDEX waiters_by_session ON lease_waiters (session_pk, ticket)",
        "CREATE INDEX waiters_by_owner ON lease_waiters (owner)",
        # A credential's key is plain (``key``) or sealed (``sealed``, see
        # ``plugins/_stores/secrets.py``), never both. The key and the endpoint are kept as
        # UTF-8 bytes: a text column cannot hold every string (not NUL).
        """CREATE TABLE credentials (
            provider text PRIMARY KEY,
            type text NOT NULL,
            base_url bytea,
            key bytea,
            sealed bytea,
            CHECK ((key IS NULL) <> (sealed IS NULL)))""",
        # Each session's event log, numbered from 1 without gaps.
        """CREATE TABLE events (
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq bigint NOT NULL,
            run_id text NOT NULL,
            type text NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (session_pk, seq))""",
        # The idempotency keys of creations; ``created_at`` is RFC 3339 UTC to the
        # millisecond (``wire``): text order is time order.
        """CREATE TABLE idempotency_keys (
            scope text NOT NULL,
            key text NOT NULL,
            request_hash text NOT NULL,
            target_id text NOT NULL,
            created_at text NOT NULL,
            PRIMARY KEY (scope, key))""",
        "CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at)",
        """CREATE TABLE permission_requests (
            id text PRIMARY KEY,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            run_id text NOT NULL,
            status text NOT NULL,
            expires_at double precision NOT NULL,
            body text NOT NULL)""",
        "CREATE INDEX permission_requests_by_session ON permission_requests (session_pk, id)",
        """CREATE INDEX permission_requests_pending ON permission_requests (run_id)
            WHERE status = 'pending'""",
        """CREATE TABLE grants (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            body text NOT NULL)""",
        "CREATE INDEX grants_by_session ON grants (session_pk, id)",
    ),
)

#: The table holding the schema's version (one row).
VERSION_TABLE = "wingspan_schema_version"


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


async def migrate(conn: asyncpg.Connection, schema: str, where: str) -> int:
    """Bring ``schema`` up to date, creating it if need be, under an advisory lock held for
    the whole migration (instances starting at once take turns; the later ones find it done).

    :returns: the version the schema is at.
    :raises StoreError: for a database made by a newer wingspan.
    """
    lock = f"wingspan-migrate {schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {quote(schema)}.{VERSION_TABLE} "
                "(version integer NOT NULL)")
            version = await conn.fetchval(
                f"SELECT version FROM {quote(schema)}.{VERSION_TABLE}")
            if version is None:
                await conn.execute(
                    f"INSERT INTO {quote(schema)}.{VERSION_TABLE} (version) VALUES (0)")
                version = 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the wingspan schema {schema!r} of {where} is at version {version}, newer than "
                f"this wingspan knows (up to {len(MIGRATIONS)}); upgrade wingspan to use it"
            )
        while version < len(MIGRATIONS):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {quote(schema)}")
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                version += 1
                await conn.execute(f"UPDATE {VERSION_TABLE} SET version = $1", version)
        return int(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)
