"""The schema, its migrations, and opening a connection (run in the store's threads)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wingspan import StoreError

if TYPE_CHECKING:
    from ._options import Options

#: ``PRAGMA application_id`` of a wingspan database ("WSPN").
APPLICATION_ID = 0x5753504E

#: The schema, one tuple of statements per version. Version ``n`` is ``MIGRATIONS[n - 1]``;
#: a released migration is never edited, only followed by a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # Records are kept as their wire JSON (``wingspan.wire``): one shape everywhere.
        "CREATE TABLE agents (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
        # ``pk`` is never reused (AUTOINCREMENT): a deleted and re-created id is a new session.
        """CREATE TABLE sessions (
            pk INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            body TEXT NOT NULL)""",
        # One row per message, in order: the count of a session is its highest seq + 1.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            UNIQUE (session_pk, seq))""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            status TEXT NOT NULL,
            body TEXT NOT NULL)""",
        "CREATE INDEX runs_by_session ON runs (session_pk)",
        """CREATE TABLE credentials (
            provider TEXT PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL)""",
        # The claim on a session: its holder, the store instance (owner) that renews it,
        # and when it lapses if nobody does. ``ticket`` is the waiter it was handed to.
        """CREATE TABLE leases (
            session_pk INTEGER PRIMARY KEY REFERENCES sessions (pk) ON DELETE CASCADE,
            holder TEXT NOT NULL,
            owner TEXT NOT NULL,
            ticket INTEGER,
            expires_at REAL NOT NULL)""",
        "CREATE INDEX leases_by_owner ON leases (owner)",
        # Claimants waiting their turn, first come (lowest ticket) first served.
        """CREATE TABLE lease_waiters (
            ticket INTEGER PRIMARY KEY AUTOINCREMENT,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            holder TEXT NOT NULL,
            owner TEXT NOT NULL,
            expires_at REAL NOT NULL)""",
        "CREATE INDEX waiters_by_session ON lease_waiters (session_pk, ticket)",
        "CREATE INDEX waiters_by_owner ON lease_waiters (owner)",
    ),
    (
        # A credential may name the endpoint its key goes to, and its key may be sealed
        # (encrypted, see ``plugins/_stores/secrets.py``): ``key`` holds a plain key,
        # ``sealed`` a sealed one, never both. SQLite cannot alter a column, so the table is
        # copied.
        """CREATE TABLE credentials_2 (
            provider TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            base_url TEXT,
            key TEXT,
            sealed BLOB,
            CHECK ((key IS NULL) != (sealed IS NULL)))""",
        """INSERT INTO credentials_2 (provider, type, key)
            SELECT provider, type, key FROM credentials""",
        "DROP TABLE credentials",
        "ALTER TABLE credentials_2 RENAME TO credentials",
    ),
    (
        # The process behind a claim or a waiting ticket (``wingspan.procs``): its host (the
        # machine, boot and pid namespace), pid and start time. A claimant on the same host
        # that finds that process gone recovers the claim at once. NULL (rows written before
        # this version): it lapses, as claims of other hosts do.
        "ALTER TABLE leases ADD COLUMN host TEXT",
        "ALTER TABLE leases ADD COLUMN pid INTEGER",
        "ALTER TABLE leases ADD COLUMN started INTEGER",
        "ALTER TABLE lease_waiters ADD COLUMN host TEXT",
        "ALTER TABLE lease_waiters ADD COLUMN pid INTEGER",
        "ALTER TABLE lease_waiters ADD COLUMN started INTEGER",
    ),
    (
        # Each session's event log, numbered from 1 without gaps. ``last_seq`` is the last
        # number given: kept when the events it numbered are pruned, none is given twice.
        "ALTER TABLE sessions ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0",
        # Mostly deltas of a few dozen bytes: one b-tree keyed by their place, no rowid.
        """CREATE TABLE events (
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (session_pk, seq)) WITHOUT ROWID""",
        # A run's body stays its record; what is looked up by is read out of it (so the
        # two never disagree, and runs stored before this version are indexed too).
        """ALTER TABLE runs ADD COLUMN idempotency_key TEXT
            GENERATED ALWAYS AS (json_extract(body, '$.idempotency_key')) VIRTUAL""",
        # RFC 3339 UTC to the millisecond (``wire``): text order is time order.
        """ALTER TABLE runs ADD COLUMN finished_at TEXT
            GENERATED ALWAYS AS (json_extract(body, '$.finished_at')) VIRTUAL""",
        # Whether the run's deltas were pruned since it last changed or logged an event
        # (a pruned run is not looked at again).
        "ALTER TABLE runs ADD COLUMN deltas_pruned INTEGER NOT NULL DEFAULT 0",
        # Not unique: an admission refuses a key in use, a saved run may repeat one.
        """CREATE INDEX runs_by_idempotency_key ON runs (session_pk, idempotency_key)
            WHERE idempotency_key IS NOT NULL""",
        """CREATE INDEX runs_unfinished ON runs (session_pk)
            WHERE status IN ('queued', 'running', 'waiting')""",
        "CREATE INDEX runs_to_prune ON runs (finished_at) WHERE deltas_pruned = 0",
        # A session's runs are listed newest (highest id) first.
        "DROP INDEX runs_by_session",
        "CREATE INDEX runs_by_session ON runs (session_pk, id)",
    ),
    (
        # The idempotency keys of creations (``Store.reserve_key``): the id the first request
        # reserved and a digest of what it asked, so a repeat is told from a reuse of the key.
        # ``created_at`` is RFC 3339 UTC to the millisecond (``wire``): text order is time
        # order, for pruning.
        """CREATE TABLE idempotency_keys (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            target_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (scope, key)) WITHOUT ROWID""",
        "CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at)",
    ),
    (
        # Permission requests (``wingspan.PermissionRequest`` as wire JSON), oldest (lowest
        # id) first per session; a run's pending ones are found by the partial index.
        """CREATE TABLE permission_requests (
            id TEXT PRIMARY KEY,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            expires_at REAL NOT NULL,
            body TEXT NOT NULL)""",
        "CREATE INDEX permission_requests_by_session ON permission_requests (session_pk, id)",
        """CREATE INDEX permission_requests_pending ON permission_requests (run_id)
            WHERE status = 'pending'""",
        # A session's grants (``wingspan.Rule`` as wire JSON), in the order they were made.
        """CREATE TABLE grants (
            id INTEGER PRIMARY KEY,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            body TEXT NOT NULL)""",
        "CREATE INDEX grants_by_session ON grants (session_pk, id)",
    ),
)


def store_error(exc: sqlite3.Error, path: Path, timeout: float) -> StoreError:
    name: str = getattr(exc, "sqlite_errorname", "")
    if is_busy(exc):
        return StoreError(
            f"the database {path} stayed locked by another connection for more than "
            f"{timeout:g} s; try again, or allow longer with ?timeout=SECONDS"
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return StoreError(
            f"{path} is not a SQLite database or is corrupt ({exc}); restore it from a backup, "
            "or move it aside to start a new one"
        )
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return StoreError(f"cannot write the database {path} ({exc}); check its permissions")
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"the disk holding {path} is full; free some space and try again")
    return StoreError(f"the database {path} failed: {exc}")


def create_file(path: Path) -> None:
    """Create the database file (mode 0600; SQLite gives its -wal and -shm files the same
    mode) and its parent directory, unless they exist."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc.strerror or exc}; check that the path is a "
            "file you may write, in a directory that can be created"
        ) from None


def connect(path: Path, options: Options, *, read_only: bool) -> sqlite3.Connection:
    # Used by its worker's thread, and by the event loop's when the worker lends it (under
    # the worker's lock: never by two threads at once).
    connection = sqlite3.connect(path, timeout=options.timeout, isolation_level=None,
                                 check_same_thread=False)
    try:
        if read_only:
            connection.execute("PRAGMA query_only = ON")
        elif connection.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise StoreError(f"the database {path} cannot use write-ahead logging")
        # In WAL mode NORMAL loses nothing when the process is killed, only on power loss.
        connection.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
        connection.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (a replaced or deleted credential key) are zeroed, not left in free space.
        connection.execute("PRAGMA secure_delete = ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header
    except BaseException:
        connection.close()
        raise
    return connection


def begin_immediate(connection: sqlite3.Connection, timeout: float) -> None:
    """``BEGIN IMMEDIATE``, waiting up to ``timeout`` seconds for another connection's write
    lock. The writer's connection has no busy handler (``busy_timeout`` 0), so that a write
    tried on the event loop never waits; its thread waits here instead.

    :raises sqlite3.OperationalError: "database is locked" once ``timeout`` has passed.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds a lock."""
    name: str = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def truncate_wal(connection: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database file and empty it, so that the old pages
    it holds (with the bytes of a deleted or replaced credential) are gone from the disk.

    Best effort: while another connection reads, the log cannot be emptied; its old
    frames are then overwritten by later commits.
    """
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def migrate(
    connection: sqlite3.Connection,
    path: Path | str = "the database",
    migrations: Sequence[Sequence[str]] = MIGRATIONS,
) -> int:
    """Bring the schema up to ``len(migrations)``, one transaction per version.

    :returns: the schema version.
    :raises StoreError: for a database of another application, one written by a newer
        wingspan, or a migration that fails (its transaction is rolled back, leaving the
        database at the version before it).
    """
    latest = len(migrations)
    while True:
        connection.execute("BEGIN IMMEDIATE")  # re-read inside: another process may migrate
        try:
            version: int = connection.execute("PRAGMA user_version").fetchone()[0]
            application = connection.execute("PRAGMA application_id").fetchone()[0]
            foreign = application != APPLICATION_ID and (
                application != 0
                or connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            )
            if foreign:
                raise StoreError(
                    f"{path} is a SQLite database of another application, not wingspan's"
                )
            if version > latest:
                raise StoreError(
                    f"{path} was written by a newer wingspan (schema version {version}; this one "
                    f"knows up to {latest}); upgrade wingspan to open it"
                )
            if version == latest:
                connection.execute("COMMIT")
                return version
            try:
                for statement in migrations[version]:
                    connection.execute(statement)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"migrating {path} to schema version {version + 1} failed ({exc}); "
                    f"it is left at version {version}"
                ) from None
            connection.execute(f"PRAGMA user_version = {version + 1}")
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
