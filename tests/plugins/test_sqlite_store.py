"""The SQLite store: the store contract suite, claims, files, errors, migrations, the event loop.

Tests with real subprocesses (claims across processes, dead holders, SIGKILL crash safety) are
in ``test_sqlite_processes.py``. Every store is opened through :func:`open_sqlite`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
from hypothesis import settings

import wingspan
import wingspan.plugins.sqlite
from wingspan import (
    Agent,
    Credential,
    Message,
    RunRecord,
    Session,
    SessionRecord,
    StoreError,
    TextBlock,
    TextDelta,
    ToolResultBlock,
    ToolUseBlock,
    check_history,
)
from wingspan.plugins.sqlite import MIGRATIONS, default_path, migrate, parse_url
from wingspan.testing import ClaimContract, make_runtime, scripted, store_state_machine

WAIT = 10  # seconds: every wait is bounded
T = TypeVar("T")


async def open_sqlite(url: str, **stores: Any) -> wingspan.Store:
    """Open a ``sqlite://`` store through an isolated runtime's registry (the entry point)."""
    runtime = make_runtime(stores=stores)
    return await runtime.open_store(url)


def text(role: Any, value: str) -> Message:
    return Message(role=role, content=(TextBlock(text=value),))


async def until(condition: Callable[[], T], failure: str, timeout: float = WAIT) -> T:
    """Poll ``condition`` until it returns a true value (and return that value); fail with
    ``failure`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{failure} (within {timeout:g} s)"
        await asyncio.sleep(0.01)
    return value


def watch_database(path: Path) -> sqlite3.Connection:
    """A read-only connection to a store's database, to watch its claims from outside."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def lease_of(db: sqlite3.Connection, session_id: str) -> tuple[str, float] | None:
    """``(holder, expires_at)`` of the claim on ``session_id``, or None while it is free."""
    row = db.execute(
        "SELECT l.holder, l.expires_at FROM leases l JOIN sessions s ON s.pk = l.session_pk "
        "WHERE s.id = ?",
        (session_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), float(row[1]))


async def wait_for_waiter(path: Path, holder: str, timeout: float = WAIT) -> None:
    """Wait until ``holder`` is queued for a claim (its row is in ``lease_waiters``)."""
    db = watch_database(path)
    try:
        query = "SELECT 1 FROM lease_waiters WHERE holder = ?"
        await until(lambda: db.execute(query, (holder,)).fetchone(), f"{holder} never queued",
                    timeout)
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[wingspan.Store]:
    opened = await open_sqlite(f"sqlite://{tmp_path}/store.db")
    try:
        yield opened
    finally:
        await opened.close()


# --- the contract suite ----------------------------------------------------------------------

_contract_dir: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def contract_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    _contract_dir.append(tmp_path_factory.mktemp("contract"))


async def _open_fresh() -> wingspan.Store:
    return await open_sqlite(f"sqlite://{_contract_dir[-1]}/{wingspan.new_id()}.db")


TestSqliteStoreContract = store_state_machine(_open_fresh).TestCase
TestSqliteStoreContract.settings = settings(max_examples=60, stateful_step_count=40)

_SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


async def _open_fresh_encrypted() -> wingspan.Store:
    url = f"sqlite://{_contract_dir[-1]}/{wingspan.new_id()}.db"
    return await open_sqlite(url, secret_key=_SECRET_KEY)


# The same contract with credentials encrypted at rest (see test_sqlite_secrets.py).
TestEncryptedSqliteStoreContract = store_state_machine(_open_fresh_encrypted).TestCase
TestEncryptedSqliteStoreContract.settings = settings(max_examples=20, stateful_step_count=40)


# --- claims in one process ---------------------------------------------------------------


class TestSqliteStoreClaims(ClaimContract):
    open_store = staticmethod(_open_fresh)


async def test_a_live_holder_keeps_its_claim_past_the_lease_ttl(tmp_path: Path) -> None:
    ttl = 0.5
    url = f"sqlite://{tmp_path}/s.db?lease_ttl={ttl}"
    first, second = await open_sqlite(url), await open_sqlite(url)
    watch = watch_database(tmp_path / "s.db")
    try:
        await first.create_session(SessionRecord(id="s"))
        assert await first.claim_session("s", "run-1")
        granted = lease_of(watch, "s")
        assert granted is not None and granted[0] == "run-1"
        first_expiry = granted[1]

        def renewed_past_its_first_expiry() -> bool:
            lease = lease_of(watch, "s")
            assert lease is not None and lease[0] == "run-1", lease
            # Freshly renewed (half a lifetime or more to go): the claim below is not a race.
            return time.time() > first_expiry and lease[1] > time.time() + ttl / 2

        await until(renewed_past_its_first_expiry, "the claim was not renewed past its expiry")
        assert not await second.claim_session("s", "run-2", wait=False)
        await first.release_session("s", "run-1")
        assert await second.claim_session("s", "run-2", wait=False)
    finally:
        watch.close()
        await first.close()
        await second.close()


async def test_another_store_is_served_when_the_holder_releases(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    first, second = await open_sqlite(url), await open_sqlite(url)
    try:
        await first.create_session(SessionRecord(id="s"))
        assert await first.claim_session("s", "run-1")
        waiting = asyncio.create_task(second.claim_session("s", "run-2", timeout=WAIT))
        await wait_for_waiter(tmp_path / "s.db", "run-2")
        assert not waiting.done()
        await first.release_session("s", "run-1")
        assert await asyncio.wait_for(waiting, WAIT)
        assert not await first.claim_session("s", "run-3", wait=False)
    finally:
        await first.close()
        await second.close()


async def test_closing_a_store_gives_up_its_claims(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    first, second = await open_sqlite(url), await open_sqlite(url)
    try:
        await first.create_session(SessionRecord(id="s"))
        await first.append_messages("s", [text("user", "go")])
        assert await first.claim_session("s", "run-1")
        await first.save_run(RunRecord(id="run-1", session_id="s"))
        use = ToolUseBlock(id="toolu_1", name="bash", input={"command": "sleep 100"})
        calling = Message(role="assistant", content=(use,))
        await first.append_messages("s", [calling])
        await first.close()
        assert await second.claim_session("s", "run-2", wait=False)
        assert (await second.get_run("run-1")).status == "interrupted"
        history = await second.load_messages("s")
        assert check_history(history) == []
        assert history[-1] == wingspan.repair_history([calling])[0]
        (result,) = history[-1].content
        assert isinstance(result, ToolResultBlock) and result.is_error
    finally:
        await first.close()
        await second.close()


# --- history, listings, credentials ----------------------------------------------------------


async def test_concurrent_appends_are_committed_in_order(store: wingspan.Store) -> None:
    await store.create_session(SessionRecord(id="s"))
    counts = await asyncio.gather(
        *(store.append_messages("s", [text("user", str(i))]) for i in range(200))
    )
    assert counts == list(range(1, 201))
    assert [m.text for m in await store.load_messages("s")] == [str(i) for i in range(200)]


async def test_a_failing_call_in_a_group_commit_undoes_only_itself(store: wingspan.Store) -> None:
    await store.create_session(SessionRecord(id="s"))
    results = await asyncio.gather(
        store.append_messages("s", [text("user", "a")]),
        store.append_messages("missing", [text("user", "b")]),
        store.create_session(SessionRecord(id="s")),
        store.append_messages("s", [text("user", "c"), text("assistant", "d")]),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[3] == 3
    assert isinstance(results[1], wingspan.NotFoundError)
    assert isinstance(results[2], wingspan.ConflictError)
    assert [m.text for m in await store.load_messages("s")] == ["a", "c", "d"]


async def test_appends_from_another_connection_are_loaded(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    first, second = await open_sqlite(url), await open_sqlite(url)
    try:
        await first.create_session(SessionRecord(id="s"))
        await first.append_messages("s", [text("user", "one")])
        assert len(await first.load_messages("s")) == 1  # now remembered by `first`
        await second.append_messages("s", [text("assistant", "two")])
        assert [m.text for m in await first.load_messages("s")] == ["one", "two"]
        # The same id deleted and created again elsewhere is a new history.
        await second.delete_session("s")
        await second.create_session(SessionRecord(id="s"))
        await second.append_messages("s", [text("user", "fresh")])
        assert [m.text for m in await first.load_messages("s")] == ["fresh"]
        assert (await first.get_session("s")).message_count == 1
    finally:
        await first.close()
        await second.close()


async def test_deleting_a_session_deletes_its_rows(store: wingspan.Store, tmp_path: Path) -> None:
    await store.create_session(SessionRecord(id="s"))
    await store.create_session(SessionRecord(id="kept"))
    for session_id in ("s", "kept"):
        await store.append_messages(session_id, [text("user", "hi")])
        await store.save_run(RunRecord(id=f"run-{session_id}", session_id=session_id))
    assert await store.claim_session("s", "run-s")
    await store.delete_session("s")
    with sqlite3.connect(tmp_path / "store.db") as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sessions", "messages", "runs", "leases")
        }
    db.close()
    assert counts == {"sessions": 1, "messages": 1, "runs": 1, "leases": 0}
    with pytest.raises(wingspan.NotFoundError):
        await store.get_run("run-s")


async def test_listing_pages_have_no_gaps_or_duplicates_while_rows_are_added(
    store: wingspan.Store,
) -> None:
    before = [SessionRecord(id=wingspan.new_id()) for _ in range(7)]
    for record in before:
        await store.create_session(record)
    seen: list[str] = []
    page = await store.list_sessions(limit=3)
    for _ in range(10):  # 7 sessions make 3 pages; more means the cursors go round
        seen.extend(s.id for s in page.items)
        await store.create_session(SessionRecord(id=wingspan.new_id()))  # newer: not on later pages
        if page.next_cursor is None:
            break
        page = await store.list_sessions(limit=3, cursor=page.next_cursor)
    else:
        pytest.fail(f"the pages never ended: {seen}")
    assert seen == sorted((r.id for r in before), reverse=True)


async def test_credentials_are_kept_but_never_listed(store: wingspan.Store) -> None:
    await store.set_credential("anthropic", Credential(key="sk-secret"))
    assert await store.get_credential("anthropic") == Credential(key="sk-secret")
    proxied = Credential(key="sk-2", base_url="https://proxy.example/v1")
    await store.set_credential("openai", proxied)
    assert await store.get_credential("openai") == proxied
    await store.set_credential("openai", Credential(key="sk-3"))
    assert await store.get_credential("openai") == Credential(key="sk-3", base_url=None)
    listed = await store.list_credentials()
    assert listed == {"anthropic": "api_key", "openai": "api_key"}
    assert "sk-secret" not in repr(listed)
    assert "sk-secret" not in repr(await store.get_credential("anthropic"))


async def test_a_session_resumes_from_the_store(store: wingspan.Store) -> None:
    @wingspan.tool
    async def add(a: int, b: int) -> int:
        """Add.

        :param a: a number
        :param b: another
        """
        return a + b

    runtime = make_runtime()
    agent = Agent(
        name="calc",
        provider=scripted([[{"name": "add", "input": {"a": 1, "b": 2}}], "3"]),
        tools=[add],
    )
    session = Session(agent=agent, store=store, runtime=runtime)
    result = await asyncio.wait_for(session.run("1+2?"), WAIT)
    assert result.run_id is not None
    assert (await store.get_run(result.run_id)).status == "completed"
    again = await Session.resume(store, session.id, agent=agent, runtime=runtime)
    assert again.history == session.history and len(again.history) == 4
    await asyncio.wait_for(again.run("again"), WAIT)
    assert check_history(await store.load_messages(session.id)) == []


# --- files, URLs and errors ------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert parse_url("sqlite:///abs/x.db")[0] == Path("/abs/x.db")
    assert parse_url("sqlite:////abs/x.db")[0] == Path("/abs/x.db")
    assert parse_url("sqlite://rel/x.db")[0] == tmp_path / "rel" / "x.db"
    assert parse_url("sqlite://~/x.db")[0] == tmp_path / "home" / "x.db"
    assert parse_url("sqlite:///a%20b.db")[0] == Path("/a b.db")
    default = tmp_path / "home" / ".local" / "share" / "wingspan" / "wingspan.db"
    assert parse_url("sqlite://")[0] == default == default_path()
    _, options = parse_url(
        "sqlite:///x.db?timeout=0.5&lease_ttl=3&synchronous=FULL", {"sqlite": {"timeout": 9}}
    )
    assert (options.timeout, options.lease_ttl, options.synchronous) == (0.5, 3, "full")
    assert parse_url("sqlite:///x.db", {"sqlite": {"timeout": 9}})[1].timeout == 9
    assert parse_url("sqlite:///x.db")[1] == wingspan.plugins.sqlite.DEFAULTS
    for bad, message in [
        ("sqlite://:memory:", "memory://"),
        ("sqlite:///x.db?nope=1", "unknown SQLite store option 'nope'"),
        ("sqlite:///x.db?timeout=soon", "timeout must be a positive number"),
        ("sqlite:///x.db?lease_ttl=0", "lease_ttl must be a positive number"),
        ("sqlite:///x.db?synchronous=off", "synchronous is normal or full"),
    ]:
        with pytest.raises(wingspan.ConfigError, match=message):
            parse_url(bad)


def test_default_path_honours_xdg_data_home(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "XDG_DATA_HOME": str(tmp_path)}
    assert default_path(env) == tmp_path / "wingspan" / "wingspan.db"
    assert default_path({"HOME": "/home/u", "XDG_DATA_HOME": "relative/is/ignored"}) == Path(
        "/home/u/.local/share/wingspan/wingspan.db"
    )


async def test_default_url_creates_the_directory_and_private_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    store = await open_sqlite("sqlite://")
    try:
        await store.create_session(SessionRecord(id="s"))
        await store.set_credential("openai", Credential(key="sk-1"))
        folder = tmp_path / "data" / "wingspan"
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["wingspan.db", "wingspan.db-shm", "wingspan.db-wal"]
        for name in names:
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        await store.close()


async def test_wal_and_foreign_keys_are_on(store: wingspan.Store, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()


@pytest.mark.parametrize("make", ["parent is a file", "path is a directory"])
async def test_a_path_that_cannot_be_opened_is_a_clear_error(tmp_path: Path, make: str) -> None:
    if make == "parent is a file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "x.db"
    else:
        path = tmp_path / "dir"
        path.mkdir()
    with pytest.raises(StoreError, match=f"cannot open the database {path}"):
        await open_sqlite(f"sqlite://{path}")


@pytest.mark.parametrize("garbage", [b"not a database", os.urandom(8192)])
async def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="is not a SQLite database or is corrupt"):
        await open_sqlite(f"sqlite://{path}")
    assert path.read_bytes() == garbage  # left as it was


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="another application"):
        await open_sqlite(f"sqlite://{path}")


async def test_a_database_from_a_newer_wingspan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = await open_sqlite(f"sqlite://{path}")
    await store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match=r"newer wingspan \(schema version 99; this one knows"):
        await open_sqlite(f"sqlite://{path}")


async def test_a_locked_database_is_a_clear_error_past_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = await open_sqlite(f"sqlite://{path}?timeout=0.2")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.create_session(SessionRecord(id="s"))
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"stayed locked .* more than 0.2 s"):
            await asyncio.wait_for(store.append_messages("s", [text("user", "x")]), WAIT)
        assert time.monotonic() - started < WAIT
        assert (await store.get_session("s")).message_count == 0  # reads go on meanwhile
        blocker.execute("ROLLBACK")
        assert await store.append_messages("s", [text("user", "x")]) == 1
    finally:
        blocker.close()
        await store.close()


def test_migrations_apply_in_order_and_a_failed_one_leaves_the_database_as_it_was(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        broken = ("CREATE TABLE extra (x)", "INSERT INTO agents VALUES ('a', '{}')", "NOT SQL")
        with pytest.raises(StoreError, match=r"to schema version 1 failed .* left at version 0"):
            migrate(db, "x.db", [broken])
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        assert migrate(db, "x.db") == len(MIGRATIONS)
        db.execute("INSERT INTO agents VALUES ('kept', '{}')")
        with pytest.raises(StoreError, match=f"version {len(MIGRATIONS) + 1} failed"):
            migrate(db, "x.db", [*MIGRATIONS, broken])
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None
        assert db.execute("SELECT id FROM agents").fetchall() == [("kept",)]
        # The next version applies on top, once, and stays applied.
        added = ("CREATE TABLE extra (x)",)
        assert migrate(db, "x.db", [*MIGRATIONS, added]) == len(MIGRATIONS) + 1
        assert migrate(db, "x.db", [*MIGRATIONS, added]) == len(MIGRATIONS) + 1
    finally:
        db.close()


async def test_credentials_of_a_version_1_database_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path, MIGRATIONS[:1])
    db.execute("INSERT INTO credentials VALUES ('anthropic', 'api_key', 'sk-old')")
    db.close()
    store = await open_sqlite(f"sqlite://{path}")
    try:
        assert await store.get_credential("anthropic") == Credential(key="sk-old")
        assert await store.list_credentials() == {"anthropic": "api_key"}
    finally:
        await store.close()


async def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    agent = wingspan.AgentRecord(id=wingspan.new_id(), name="a", options={"k": [1, None]})
    await store.create_agent(agent)
    await store.create_session(SessionRecord(id="s", title="t"))
    await store.append_messages("s", [text("user", "kept")])
    credential = Credential(type="oauth", key="tok", base_url="http://localhost:8080/v1")
    await store.set_credential("openai", credential)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get_session("s")
    store = await open_sqlite(url)
    try:
        assert await store.get_agent(agent.id) == agent
        assert (await store.get_session("s")).title == "t"
        assert [m.text for m in await store.load_messages("s")] == ["kept"]
        assert await store.get_credential("openai") == credential
    finally:
        await store.close()


# --- the event loop never waits on the database -------------------------------------------

DATABASE = (sqlite3.Connection, sqlite3.Cursor, sqlite3.Blob)


class LoopWatch:
    """Records the SQLite calls made on this thread (the event loop's, not the store's)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), DATABASE):
            self.calls.append(arg.__qualname__)

    def __enter__(self) -> LoopWatch:
        self._previous = sys.getprofile()
        sys.setprofile(self)
        # The watch sees a call made here (else an empty list would prove nothing).
        probe = sqlite3.connect(":memory:")
        probe.execute("SELECT 1").fetchall()
        probe.close()
        assert self.calls == ["Connection.execute", "Cursor.fetchall", "Connection.close"]
        self.calls.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)


async def write_heavily(store: wingspan.Store, n: int) -> list[str]:
    session_id = f"s{n}"
    await store.create_session(SessionRecord(id=session_id))
    for i in range(150):
        count = await store.append_messages(session_id, [text("user", f"{i} " + "x" * 2000)])
        assert count == i + 1
        if i % 50 == 49:
            loaded = await store.load_messages(session_id)
            assert [m.text.split()[0] for m in loaded] == [str(k) for k in range(i + 1)]
    return [m.text.split()[0] for m in await store.load_messages(session_id)]


async def test_with_inline_off_no_database_call_runs_on_the_event_loop(tmp_path: Path) -> None:
    """``inline=off``: every SQLite call of a busy store runs in its threads (how late the
    loop runs meanwhile is measured by ``bench/store.py``, not asserted here)."""
    store = await open_sqlite(f"sqlite://{tmp_path}/store.db?inline=off")
    try:
        with LoopWatch() as watch:
            histories = await asyncio.wait_for(
                asyncio.gather(*(write_heavily(store, n) for n in range(8))), 60)
        assert watch.calls == []
        assert histories == [[str(i) for i in range(150)]] * 8
    finally:
        await store.close()


async def test_short_calls_run_inline_and_long_loads_never_do(
    store: wingspan.Store, tmp_path: Path,
) -> None:
    """By default an append on an idle store is committed on the event loop (no thread
    hop), and so is the load of a history with few rows to decode; a long history not
    yet decoded by this store is read in the threads."""
    from wingspan.plugins.sqlite._jobs import RECENT_ROWS

    await store.create_session(SessionRecord(id="s"))
    with LoopWatch() as watch:
        await store.append_messages("s", [text("user", "hi")])
    assert "Connection.execute" in watch.calls  # the fast path is taken
    with LoopWatch() as watch:
        assert [m.text for m in await store.load_messages("s")] == ["hi"]
    assert "Connection.execute" in watch.calls
    long = [text("user", str(i)) for i in range(RECENT_ROWS + 1)]
    await store.create_session(SessionRecord(id="long"))
    await store.append_messages("long", long)
    fresh = await open_sqlite(f"sqlite://{tmp_path}/store.db")  # nothing decoded yet
    try:
        with LoopWatch() as watch:
            assert await fresh.load_messages("long") == long
        assert "Cursor.fetchall" not in watch.calls  # counted on the loop, read in the thread
        await fresh.append_messages("long", [text("user", "one more")])
        with LoopWatch() as watch:  # decoded now: only the new row is left to read
            assert (await fresh.load_messages("long"))[-1].text == "one more"
        assert "Connection.execute" in watch.calls
    finally:
        await fresh.close()


async def test_a_live_followers_read_runs_inline_and_a_long_replay_never_does(
    store: wingspan.Store,
) -> None:
    """Reading the few events appended since a follower's last read is done on the event
    loop; a replay of more than a few dozen, in the threads, and both read the same log."""
    from wingspan.plugins.sqlite._events import RECENT_EVENTS

    await store.create_session(SessionRecord(id="s"))
    pings = [TextDelta(text=str(i), index=0) for i in range(RECENT_EVENTS + 1)]
    await store.append_events("s", "r", pings)
    with LoopWatch() as watch:
        replay = await store.read_events("s")
    assert "Cursor.fetchall" not in watch.calls
    assert [entry.seq for entry in replay] == list(range(1, RECENT_EVENTS + 2))
    with LoopWatch() as watch:
        tail = await store.read_events("s", after=2)  # as many as inline reads take
    assert "Cursor.fetchall" in watch.calls
    assert tail == replay[2:]
    with LoopWatch() as watch:
        assert await store.read_events("s", after=10, limit=5) == replay[10:15]
    assert "Cursor.fetchall" in watch.calls  # a short page of a long log
    # Under load (writes queue up in the writer), every history still comes out whole.
    histories = await asyncio.wait_for(
        asyncio.gather(*(write_heavily(store, n) for n in range(8))), 60)
    assert histories == [[str(i) for i in range(150)]] * 8


async def test_a_write_lock_held_elsewhere_is_waited_for_in_the_thread(
    store: wingspan.Store, tmp_path: Path,
) -> None:
    """The fast path never waits for a lock: while another connection holds the write
    lock, the event loop keeps running, and the write is committed once the lock is free."""
    await store.create_session(SessionRecord(id="s"))
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        append = asyncio.ensure_future(store.append_messages("s", [text("user", "later")]))
        await asyncio.sleep(0.5)
        assert not append.done()
        assert ticks >= 10  # the loop was not blocked by the waiting write
        other.execute("COMMIT")
        assert await asyncio.wait_for(append, 10) == 1
        ticker.cancel()
    finally:
        other.close()
    assert [m.text for m in await store.load_messages("s")] == ["later"]
    # ...and the next write, the lock free again, takes the fast path once more.
    with LoopWatch() as watch:
        assert await store.append_messages("s", [text("user", "now")]) == 2
    assert "Connection.execute" in watch.calls


class SlowCheckpoints(sqlite3.Connection):
    """A connection whose checkpoints take half a second (a slow disk's sync)."""

    started = threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql:
            SlowCheckpoints.started.set()
            time.sleep(0.5)
        return super().execute(sql, *args)


async def test_a_checkpoint_never_holds_up_a_write(tmp_path: Path) -> None:
    """A checkpoint syncs the database file (tens of ms, more on a slow disk): while one
    runs, the run's appends still commit on the event loop at once, as the writer's
    connection is not the checkpoint's."""
    from wingspan.plugins.sqlite._worker import CHECKPOINT_EVERY

    path = tmp_path / "store.db"
    store = await open_sqlite(f"sqlite://{path}")
    store._checkpoints._open = lambda: sqlite3.connect(  # type: ignore[attr-defined]
        path, isolation_level=None, check_same_thread=False, factory=SlowCheckpoints)
    try:
        await store.create_session(SessionRecord(id="s"))
        for i in range(CHECKPOINT_EVERY):
            await store.append_messages("s", [text("user", f"{i}")])
        assert await asyncio.to_thread(SlowCheckpoints.started.wait, 5)
        started = time.monotonic()
        with LoopWatch() as watch:
            count = await store.append_messages("s", [text("user", "during")])
        assert time.monotonic() - started < 0.25
        assert count == CHECKPOINT_EVERY + 1
        assert "Connection.execute" in watch.calls  # inline, not queued behind it
    finally:
        await store.close()


async def test_the_write_ahead_log_is_checkpointed_beside_the_writer(tmp_path: Path) -> None:
    """No commit checkpoints (the writer connection's autocheckpoint is off): a thread of
    the store's own does, every so many commits, so the log does not grow without bound."""
    from wingspan.plugins.sqlite._worker import CHECKPOINT_EVERY

    store = await open_sqlite(f"sqlite://{tmp_path}/store.db")
    try:
        await store.create_session(SessionRecord(id="s"))
        for i in range(CHECKPOINT_EVERY * 3):
            await store.append_messages("s", [text("user", f"{i} " + "x" * 3000)])
        await asyncio.sleep(0.2)  # the checkpoint queued last runs in the thread
        probe = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        try:
            # A checkpoint that finds nothing left to copy: the writer copied it already.
            busy, frames, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            probe.close()
        assert busy == 0
        # Without the writer's checkpoints the log would hold every commit since the start
        # (over 3 x CHECKPOINT_EVERY frames); with them, at most the last stretch.
        assert frames < 2 * CHECKPOINT_EVERY * 2
        assert len(await store.load_messages("s")) == CHECKPOINT_EVERY * 3
    finally:
        await store.close()


async def test_an_append_after_a_saved_record_ahead_of_the_log_is_its_last_seq(
        store: wingspan.Store) -> None:
    """A running run's ``last_seq`` is read from the log after the seq its record says
    (``RUN_BODY``); a record saved claiming a seq the log has not reached yet is still
    brought back to the seq of the run's next event (found by the contract suite)."""
    await store.create_session(SessionRecord(id="s"))
    run = RunRecord(id=wingspan.new_id(), session_id="s", status="running", first_seq=2,
                    last_seq=2)
    await store.save_run(run)
    assert (await store.get_run(run.id)).last_seq == 2
    last = await store.append_events("s", run.id, [TextDelta(text="", index=0)])
    assert last == 1 and (await store.get_run(run.id)).last_seq == 1
    await store.append_events("s", run.id, [TextDelta(text="", index=0)] * 2)
    assert (await store.get_run(run.id)).last_seq == 3
