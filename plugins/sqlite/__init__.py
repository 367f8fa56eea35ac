"""The ``sqlite://`` store: agents, sessions, history, runs, event logs, idempotency keys and
credentials in one SQLite file.

The server's default store. ``sqlite://`` alone is :func:`default_path`; ``sqlite:///abs/x.db``
is an absolute path and ``sqlite://x.db`` one relative to the working directory (see
``docs/store.md``). Several processes may open the same file: writes are ``BEGIN IMMEDIATE``
transactions in WAL mode, runs on a session are serialised by a lease table (in the order they
were admitted), and each session's events are a log numbered in the transaction that appends
them.

Each store has two threads, each with its own connection: a writer that commits whatever
has queued up in one transaction (group commit; a failing call is run again on its own, so
that it undoes only itself), and a reader. The short calls a run makes at every step (an
append, a run's start and end, a claim, a record read) run on the event loop instead when the
thread is idle and the write lock is free at once: a thread hop costs several times such a
call. Nothing waits on the event loop: a lock held by another connection sends the call to
the thread, which waits for it; the write-ahead log is checkpointed in the thread; and
``synchronous=full`` (an fsync per commit) or ``inline=off`` keeps every call in the threads.

With a secret key (the store setting ``secret_key``, else ``$WINGSPAN_SECRET_KEY``) credential
keys are encrypted at rest with AES-256-GCM; see ``docs/store.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import attrs

import wingspan
from wingspan import ConfigError, StoreSpec

from .._stores.secrets import SECRET_KEY_ENV, SECRET_KEY_SETTING, Cipher, load_key
from ._options import Options

if TYPE_CHECKING:
    from ._store import SqliteStore

__all__ = [
    "DEFAULTS",
    "MIGRATIONS",
    "SECRET_KEY_ENV",
    "SECRET_KEY_SETTING",
    "Options",
    "SqliteStore",
    "default_path",
    "migrate",
    "open_sqlite_store",
    "parse_url",
]

#: The options and their defaults (:class:`Options` says what each does). A URL query
#: (``?timeout=2``) or the store settings' ``sqlite`` table overrides them.
DEFAULTS = Options()


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``sqlite://`` keeps its database: ``$XDG_DATA_HOME/wingspan/wingspan.db``,
    or ``~/.local/share/wingspan/wingspan.db`` when ``XDG_DATA_HOME`` is unset or not an
    absolute path (the XDG rule)."""
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        data_home = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return Path(data_home, "wingspan", "wingspan.db")


def parse_url(url: str, settings: Mapping[str, Any] | None = None) -> tuple[Path, Options]:
    """The database path and options of a ``sqlite://`` URL; ``settings["sqlite"]`` (the
    runtime's store settings) gives defaults for the options.

    :raises ConfigError: for another scheme, ``:memory:``, or an unknown or invalid option.
    """
    if not url.startswith("sqlite://"):
        raise ConfigError(f"a SQLite store URL starts with 'sqlite://', got {url!r}")
    location, _, query = url.removeprefix("sqlite://").partition("?")
    text = unquote(location)
    if text == ":memory:":
        raise ConfigError("a SQLite store lives in a file; use 'memory://' for an in-memory store")
    if not text:
        path = default_path()
    elif text.startswith("/"):
        path = Path("/" + text.lstrip("/"))  # sqlite:////abs (SQLAlchemy's form) is /abs too
    else:
        path = Path(text).expanduser().absolute()
    section = (settings or {}).get("sqlite") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"store settings 'sqlite' must be a table, got {section!r}")
    given: dict[str, Any] = {**section, **dict(parse_qsl(query, keep_blank_values=True))}
    values: dict[str, Any] = {}
    known = attrs.fields_dict(Options)
    for name, value in given.items():
        if name not in known:
            names = ", ".join(known)
            raise ConfigError(f"unknown SQLite store option {name!r} in {url!r}; known: {names}")
        if name == "synchronous":
            if str(value).lower() not in ("normal", "full"):
                raise ConfigError(
                    f"SQLite store option synchronous is normal or full, got {value!r}"
                )
            values[name] = str(value).lower()
            continue
        if name == "inline":
            words = {"1": True, "true": True, "on": True, "0": False, "false": False,
                     "off": False}
            flag = value if isinstance(value, bool) else words.get(str(value).lower())
            if flag is None:
                raise ConfigError(f"SQLite store option inline is on or off, got {value!r}")
            values[name] = flag
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if not number >= (0 if name == "cache_messages" else 0.001) or number == float("inf"):
            raise ConfigError(
                f"SQLite store option {name} must be a positive number, got {value!r}"
            )
        values[name] = int(number) if name == "cache_messages" else number
    return path, Options(**values)


async def open_sqlite_store(url: str, settings: Mapping[str, Any]) -> SqliteStore:
    """Open (creating and migrating if needed) the database a ``sqlite://`` URL names.

    With a secret key (``settings["secret_key"]``, else ``$WINGSPAN_SECRET_KEY``, read now)
    credential keys are stored encrypted, and any stored in the clear are encrypted on open.

    :raises ConfigError: for a malformed URL, option or secret key.
    :raises StoreError: for a path that cannot be opened, a corrupt or foreign file, a
        database from a newer wingspan, or one locked past the timeout.
    """
    # sqlite3 and the store's threads load only when a store is opened: every `wingspan`
    # command loads the plugin, few open a database.
    from ._store import SqliteStore

    path, options = parse_url(url, settings)
    key = load_key(settings)
    cipher = None if key is None else Cipher(key)  # only then is cryptography imported
    store = SqliteStore(path, options, cipher)
    await store._start()
    return store


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [
        StoreSpec(
            scheme="sqlite",
            open=open_sqlite_store,
            description="a SQLite file (default: ~/.local/share/wingspan/wingspan.db)",
        )
    ]


def __getattr__(name: str) -> Any:
    # The schema and the store class, for tools and tests, without importing sqlite3 eagerly.
    if name in ("MIGRATIONS", "migrate"):
        from . import _schema

        return getattr(_schema, name)
    if name == "SqliteStore":
        from ._store import SqliteStore

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
