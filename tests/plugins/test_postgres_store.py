"""The PostgreSQL store (``wingspan.contrib.postgres``) against a real server: the store contract
suite, claims and the event log, migrations, URLs and errors.

The server is ``$WINGSPAN_TEST_POSTGRES_URL`` (``.ci/run`` sets it and fails when the server
cannot be reached); without it these tests are skipped. Every store is opened in a schema of
its own, so parallel workers never meet, and the schemas are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings

import wingspan
from wingspan import ConfigError, SessionRecord, StoreError
from wingspan.testing import ClaimContract, make_runtime, store_state_machine

from ..conftest import postgres_url

URL = postgres_url()

import asyncpg  # noqa: E402 (only with a server to test against)

from wingspan.contrib.postgres import Options, parse_url  # noqa: E402
from wingspan.contrib.postgres._schema import MIGRATIONS, VERSION_TABLE, quote  # noqa: E402

#: The schemas this module's stores were opened in, dropped at its end.
_schemas: list[str] = []


def new_schema() -> str:
    schema = f"wingspan_test_{wingspan.new_id().lower()}"
    _schemas.append(schema)
    return schema


def schema_url(schema: str, **options: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **options}.items())
    return f"{URL}{'&' if '?' in URL else '?'}{query}"


async def open_postgres(schema: str | None = None, **stores: Any) -> wingspan.Store:
    """Open a store in ``schema`` (a new one by default) through an isolated runtime with
    the contrib plugin enabled by name."""
    runtime = make_runtime(names=["postgres"], stores=stores)
    return await runtime.open_store(schema_url(schema or new_schema()))


@pytest.fixture(autouse=True, scope="module")
def drop_schemas() -> Iterator[None]:
    yield

    async def drop() -> None:
        conn = await asyncpg.connect(URL)
        try:
            for schema in _schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())
    _schemas.clear()


@pytest.fixture
async def store() -> AsyncIterator[wingspan.Store]:
    opened = await open_postgres()
    try:
        yield opened
    finally:
        await opened.close()


# --- the contract suites ----------------------------------------------------------------------


async def _open_fresh() -> wingspan.Store:
    return await open_postgres()


TestPostgresStoreContract = store_state_machine(_open_fresh).TestCase
TestPostgresStoreContract.settings = settings(max_examples=30, stateful_step_count=40)


_SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


async def _open_fresh_encrypted() -> wingspan.Store:
    return await open_postgres(secret_key=_SECRET_KEY)


# The same contract with credentials encrypted at rest.
TestEncryptedPostgresStoreContract = store_state_machine(_open_fresh_encrypted).TestCase
TestEncryptedPostgresStoreContract.settings = settings(max_examples=10, stateful_step_count=40)


class TestPostgresStoreClaims(ClaimContract):
    open_store = staticmethod(_open_fresh)


# --- URLs and options ---------------------------------------------------------------------------


def test_the_stores_own_options_are_taken_out_of_the_url() -> None:
    dsn, options = parse_url("postgresql://u@h:5433/db?schema=s1&sslmode=disable&pool_max=3")
    assert dsn == "postgresql://u@h:5433/db?sslmode=disable"
    assert options == Options(schema="s1", pool_max=3)
    _, defaults = parse_url("postgres://h/db", {"postgres": {"lease_ttl": 5}})
    assert defaults == Options(lease_ttl=5.0)


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://h", "names no database"),
    ("postgresql://h/db?pool_max=0", "pool_max must be a whole number"),
    ("postgresql://h/db?pool_max=2.5", "pool_max must be a whole number"),
    ("postgresql://h/db?timeout=soon", "timeout must be a positive number"),
    ("postgresql://h/db?pool_min=5&pool_max=2", "pool_min (5) is more than pool_max (2)"),
    ("postgresql://h/db?shcema=x", "unknown PostgreSQL store URL parameter 'shcema'"),
    ("postgresql://h/db?schema=a,public", "schema must be a name of 1 to 50 letters"),
    ("postgresql://h/db?schema=9lives", "schema must be a name of 1 to 50 letters"),
    ("postgresql://h/db", None),
])
def test_a_bad_url_is_refused_naming_the_problem(url: str, message: str | None) -> None:
    if message is None:
        parse_url(url)  # the pattern's control case
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_url(url)


async def test_a_password_never_shows_in_errors() -> None:
    url = "postgresql://someone:hunter2@127.0.0.1:1/db?timeout=2"
    with pytest.raises(StoreError) as caught:
        await make_runtime(names=["postgres"]).open_store(url)
    assert "cannot reach the PostgreSQL database" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "someone:***@" in str(caught.value)


# --- the schema ---------------------------------------------------------------------------------


async def test_instances_starting_at_once_migrate_the_schema_once() -> None:
    schema = new_schema()
    stores = await asyncio.gather(*(open_postgres(schema) for _ in range(4)))
    try:
        conn = await asyncpg.connect(URL)
        try:
            version = await conn.fetchval(
                f"SELECT version FROM {quote(schema)}.{VERSION_TABLE}")
            rows = await conn.fetchval(f"SELECT count(*) FROM {quote(schema)}.{VERSION_TABLE}")
        finally:
            await conn.close()
        assert (version, rows) == (len(MIGRATIONS), 1)
        await stores[0].create_session(SessionRecord(id="s"))
        assert (await stores[3].get_session("s")).id == "s"
    finally:
        for opened in stores:
            await opened.close()


async def test_a_schema_newer_than_this_wingspan_is_refused() -> None:
    schema = new_schema()
    await (await open_postgres(schema)).close()
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute(f"UPDATE {quote(schema)}.{VERSION_TABLE} SET version = version + 1")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match=f"at version {len(MIGRATIONS) + 1}, newer than this "
                                         "wingspan knows"):
        await open_postgres(schema)


# --- a database that goes away --------------------------------------------------------------


class Proxy:
    """A TCP proxy to the test server on a loopback port, that can cut every connection
    through it and refuse new ones, then take them again."""

    def __init__(self) -> None:
        target = urlsplit(URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    def url(self, schema: str, **options: Any) -> str:
        parts = urlsplit(schema_url(schema, **options))
        netloc = parts.netloc.rpartition("@")
        host = f"{netloc[0]}@127.0.0.1:{self.port}" if netloc[1] else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_database_that_goes_away_is_a_store_error_and_is_reconnected_to() -> None:
    proxy = Proxy()
    await proxy.start()
    schema = new_schema()
    opened = await make_runtime().open_store(proxy.url(schema, lease_ttl=0.6, timeout=2))
    writer = await open_postgres(schema)  # another instance, straight to the server
    try:
        await opened.create_session(SessionRecord(id="s"))
        await proxy.cut()
        with pytest.raises(StoreError, match="cannot reach the PostgreSQL database"):
            await opened.get_session("s")
        await proxy.start()  # the same port: the database is back
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(StoreError):
                    assert (await opened.get_session("s")).id == "s"
                    break
                await asyncio.sleep(0.05)
            # it listens again: an append by the other instance wakes its waiter
            waiting = asyncio.ensure_future(opened.wait_events("s", after=0, timeout=8))
            await asyncio.sleep(0.5)
            run = wingspan.RunRecord(id=wingspan.new_id(), session_id="s", status="queued")
            await writer.admit_run(run)
            admitted = time.monotonic()
            assert await waiting >= 1
            # woken by the notice, not by the safety poll (every 2 s)
            assert time.monotonic() - admitted < 1.0
    finally:
        await writer.close()
        await opened.close()
        await proxy.cut()


async def test_a_server_whose_database_goes_away_answers_503_then_serves_again() -> None:
    from wingspan.plugins.http.app import create_app
    from wingspan.plugins.http.config import ServerConfig

    proxy = Proxy()
    await proxy.start()
    config = ServerConfig(store=proxy.url(new_schema(), lease_ttl=0.6, timeout=2))
    app = create_app(make_runtime(), config)
    try:
        async with app.test_app():
            client = app.test_client()
            created = await (await client.post("/sessions", json={})).get_json()
            await proxy.cut()
            response = await client.get(f"/sessions/{created['id']}")
            body = await response.get_json()
            assert response.status_code == 503, body
            assert body["code"] == "unavailable" and response.headers["Retry-After"] == "1"
            assert "PostgreSQL" not in body["error"]  # the details are for the server's log
            await proxy.start()
            async with asyncio.timeout(10):
                while True:  # the pool connects again on the next call that needs it
                    if (await client.get(f"/sessions/{created['id']}")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
    finally:
        await proxy.cut()


# --- writes at once from several instances ----------------------------------------------------


async def test_appends_at_once_from_two_instances_number_every_event_once() -> None:
    schema = new_schema()
    first, second = await open_postgres(schema), await open_postgres(schema)
    try:
        for session_id in ("s1", "s2"):
            await first.create_session(SessionRecord(id=session_id))
        runs = {s: (await first.admit_run(wingspan.RunRecord(
            id=wingspan.new_id(), session_id=s, status="queued"))).run for s in ("s1", "s2")}

        async def append(number: int) -> int:
            store = (first, second)[number % 2]
            session_id = ("s1", "s2")[number // 2 % 2]
            message = wingspan.Message(role="user", content=(
                wingspan.TextBlock(text=f"m{number}"),))
            return await store.append_events(
                session_id, runs[session_id].id,
                [wingspan.TextDelta(text=f"e{number}", index=0)] * 3, [message])

        await asyncio.gather(*(append(number) for number in range(80)))
        for session_id in ("s1", "s2"):
            logged = await second.read_events(session_id)
            assert [e.seq for e in logged] == list(range(1, len(logged) + 1))  # no gap, no twin
            texts = [e.event.text for e in logged if isinstance(e.event, wingspan.TextDelta)]
            expected = {f"e{n}" for n in range(80) if ("s1", "s2")[n // 2 % 2] == session_id}
            assert sorted(texts) == sorted(text for text in expected for _ in range(3))
            history = await first.load_messages(session_id)
            assert len(history) == 40 == (await second.get_session(session_id)).message_count
            # each append's message and events went in together, in the same order
            order = [t for i, t in enumerate(texts) if i % 3 == 0]
            assert [m.content[0].text for m in history] == [t.replace("e", "m") for t in order]
            assert (await first.get_run(runs[session_id].id)).last_seq == len(logged)
    finally:
        await first.close()
        await second.close()


async def test_a_long_history_is_decoded_off_the_event_loop_and_then_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A history with many rows not decoded yet by this instance is decoded in a thread (10,000
    messages take tens of milliseconds); reloading it decodes only the rows added since."""
    import threading

    from wingspan.contrib.postgres import _store

    decoded: list[tuple[bool, int]] = []
    real = _store.decode_messages

    def watched(bodies: list[str]) -> list[wingspan.Message]:
        decoded.append((threading.current_thread() is threading.main_thread(), len(bodies)))
        return real(bodies)

    monkeypatch.setattr(_store, "decode_messages", watched)
    schema = new_schema()
    writer, reader = await open_postgres(schema), await open_postgres(schema)
    try:
        await writer.create_session(SessionRecord(id="long"))
        long = [wingspan.Message(role="user", content=(wingspan.TextBlock(text=str(i)),))
                for i in range(_store.DECODED_ON_LOOP + 1)]
        await writer.append_messages("long", long)
        assert await reader.load_messages("long") == long
        assert decoded == [(False, len(long))]  # in a thread
        more = wingspan.Message(role="user", content=(wingspan.TextBlock(text="more"),))
        await writer.append_messages("long", [more])  # by another instance
        assert await reader.load_messages("long") == [*long, more]
        assert decoded[1:] == [(True, 1)]  # the new row only, on the loop
    finally:
        await writer.close()
        await reader.close()
