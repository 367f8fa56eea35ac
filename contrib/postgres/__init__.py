"""The ``postgresql://`` store: everything the SQLite store keeps, in a PostgreSQL database
that several ``wingspan serve`` instances share (``pip install 'wingspan[postgres]'``).

``postgresql://user@host:5432/db`` (or ``postgres://``) is a libpq connection URL as asyncpg
takes it (``sslmode``, ``password`` and the rest), plus the store's own options in its query
(``?schema=wingspan&pool_max=10``) or the store settings' ``postgres`` table (see
:class:`Options`). The tables live in one schema (``wingspan`` unless ``schema`` says
otherwise), created and migrated at start-up under an advisory lock, so instances starting at
once take turns.

The writes to a session are transactions holding that session's advisory lock, so they are
serialised across every instance as the SQLite store's single writer serialises them, while
other sessions' go on beside them; each instance keeps
an advisory lock of its own while it lives, so the claims of an instance that dies (or loses
its connection) are recovered at once by the others; new events, freed claims and changed
runs are announced with ``NOTIFY`` on the schema's channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

import wingspan
from wingspan import ConfigError, StoreSpec

if TYPE_CHECKING:
    from ._store import PostgresStore

__all__ = ["Options", "open_postgres_store", "parse_url"]

SCHEMES = ("postgresql", "postgres")
#: What a schema's name may be: a plain identifier, the same quoted or not, in a
#: ``search_path`` or a channel's name.
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
#: The connection parameters a URL's query may hold besides the store's options: libpq's, as
#: asyncpg reads them. Any other name is refused (asyncpg would send it to the server as a
#: setting, so a misspelt option would fail only at connection, or not at all).
CONNECTION_PARAMETERS = frozenset({
    "host", "port", "dbname", "database", "user", "password", "passfile", "sslmode",
    "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "target_session_attrs", "krbsrvname", "gsslib", "service",
    "servicefile",
})
EXTRA = "pip install 'wingspan[postgres]'"


@attrs.frozen(kw_only=True)
class Options:
    """How a PostgreSQL store behaves.

    :ivar schema: the schema holding wingspan's tables (created if need be).
    :ivar pool_min: connections the pool keeps open.
    :ivar pool_max: connections the pool opens at most.
    :ivar timeout: seconds to connect, and for any one statement, before failing.
    :ivar lease_ttl: seconds a claim outlives an instance that is still connected but stopped
        renewing it (an instance whose connection drops loses its claims at once).
    """

    schema: str = "wingspan"
    pool_min: int = 1
    pool_max: int = 10
    timeout: float = 10.0
    lease_ttl: float = 30.0


DEFAULTS = Options()


def parse_url(url: str, settings: Mapping[str, Any] | None = None) -> tuple[str, Options]:
    """The connection URL to give the driver (the store's options taken out of it) and the
    options; ``settings["postgres"]`` gives defaults for the options.

    :raises ConfigError: for another scheme, a URL without a database, or an unknown or
        invalid option.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"a PostgreSQL store URL starts with 'postgresql://', got {url!r}")
    if not parts.path.strip("/"):
        raise ConfigError(
            f"the PostgreSQL store URL {redact(url)!r} names no database: "
            "postgresql://user@host:5432/DATABASE")
    section = (settings or {}).get("postgres") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"store settings 'postgres' must be a table, got {section!r}")
    known = attrs.fields_dict(Options)
    given: dict[str, Any] = dict(section)
    driver_query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in known:
            given[name] = value
        elif name in CONNECTION_PARAMETERS:
            driver_query.append((name, value))
        else:
            raise ConfigError(
                f"unknown PostgreSQL store URL parameter {name!r}; the store's options are "
                f"{', '.join(known)}, and the connection parameters "
                f"{', '.join(sorted(CONNECTION_PARAMETERS))}")
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in known:
            raise ConfigError(f"unknown PostgreSQL store option {name!r}; known: "
                              f"{', '.join(known)}")
        if name == "schema":
            if not isinstance(value, str) or not SCHEMA_NAME.fullmatch(value):
                raise ConfigError(
                    "PostgreSQL store option schema must be a name of 1 to 50 letters, digits "
                    f"and underscores, not starting with a digit; got {value!r}")
            values[name] = value
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        whole = name.startswith("pool_")
        if not number >= (1 if whole else 0.001) or number == float("inf") or (
                whole and number != int(number)):
            kind = "a whole number of 1 or more" if whole else "a positive number"
            raise ConfigError(f"PostgreSQL store option {name} must be {kind}, got {value!r}")
        values[name] = int(number) if whole else number
    options = Options(**values)
    if options.pool_min > options.pool_max:
        raise ConfigError(f"PostgreSQL store option pool_min ({options.pool_min}) is more than "
                          f"pool_max ({options.pool_max})")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(driver_query),
                      parts.fragment))
    return dsn, options


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit((parts.scheme, f"{user}:***@{netloc[2]}", parts.path, parts.query,
                       parts.fragment))


async def open_postgres_store(url: str, settings: Mapping[str, Any]) -> PostgresStore:
    """Open (creating and migrating the schema if need be) the store a ``postgresql://`` URL
    names.

    :raises ConfigError: for a malformed URL, option or secret key, or without the
        ``postgres`` extra.
    :raises StoreError: for a server that cannot be reached or refuses the connection, or a
        schema from a newer wingspan.
    """
    try:
        import asyncpg  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise ConfigError(
            f"the PostgreSQL store needs the postgres extra, and asyncpg is missing: {EXTRA}"
        ) from None
    from wingspan.plugins._stores.secrets import Cipher, load_key

    from ._store import PostgresStore

    dsn, options = parse_url(url, settings)
    key = load_key(settings)
    store = PostgresStore(dsn, options, None if key is None else Cipher(key))
    await store._start()
    return store


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [
        StoreSpec(scheme=scheme, open=open_postgres_store,
                  description="a PostgreSQL database that several instances share")
        for scheme in SCHEMES
    ]
