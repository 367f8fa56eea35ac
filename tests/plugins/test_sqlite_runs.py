"""The SQLite store's runs and event log: admission, lifecycle, the log, waits, recovery.

The contract suite (``test_sqlite_store.py``) checks the answers of one store against a
model; this module checks what only a shared file shows: claims granted in admission order,
events numbered without gaps and waits woken across processes, the interrupted runs a dead
process or a closed store leaves, and a database of the previous schema version.

The children are this module run as a script (``python -m tests.plugins.test_sqlite_runs
ROLE URL ...`` from the repository root): real processes, killed with SIGKILL where a test
says so.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

import wingspan
from tests.plugins.test_sqlite_store import open_sqlite, until, wait_for_waiter, watch_database
from wingspan import (
    ConfigError,
    ConflictError,
    ErrorEvent,
    ErrorInfo,
    LoggedEvent,
    Message,
    NotFoundError,
    Ping,
    RunFinished,
    RunQueued,
    RunRecord,
    RunStarted,
    SessionRecord,
    StoreError,
    TextBlock,
    TextDelta,
    ToolResultEvent,
    utc_now,
    wire,
)
from wingspan.plugins.sqlite import MIGRATIONS, migrate

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20  # seconds: every wait is bounded


def queued(run_id: str, session_id: str = "s", **fields: object) -> RunRecord:
    return RunRecord(id=run_id, session_id=session_id, status="queued", started_at=None,
                     **fields)  # type: ignore[arg-type]


def delta(text: str) -> TextDelta:
    return TextDelta(text=text, index=0)


def interrupted(run: RunRecord) -> list[object]:
    """The two events a run recorded interrupted ends its log with."""
    assert run.error
    return [
        ErrorEvent(error=ErrorInfo(code="interrupted", message=run.error)),
        RunFinished(run_id=run.id, status="interrupted"),
    ]


async def events_of(store: wingspan.Store, run_id: str) -> list[object]:
    return [e.event for e in await store.read_events("s", run_id=run_id)]


def table_counts(path: Path) -> dict[str, int]:
    db = watch_database(path)
    try:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sessions", "runs", "events", "leases", "lease_waiters")
        }
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[wingspan.Store]:
    opened = await open_sqlite(f"sqlite://{tmp_path}/store.db")
    try:
        await opened.create_session(SessionRecord(id="s"))
        yield opened
    finally:
        await opened.close()


# --- the children ----------------------------------------------------------------------------


async def child(role: str, url: str, *args: str) -> None:
    store = await open_sqlite(url)
    try:
        if role == "append":  # batches of 1 to 3 deltas, once told to go
            name, batches = args[0], int(args[1])
            await ready()
            for i in range(batches):
                batch = [delta(f"{name} {i} {j}") for j in range(i % 3 + 1)]
                await store.append_events("s", name, batch)
        elif role == "admit":  # 16 admissions with keys repeated, then run each one created
            offset = int(args[0])
            await ready()
            created = []
            for i in range(16):
                key = f"k{offset + i % 12}"
                admission = await store.admit_run(queued(wingspan.new_id(), idempotency_key=key))
                print(json.dumps([key, admission.run.id, admission.created]), flush=True)
                if admission.created:
                    created.append(admission.run)
            await asyncio.gather(*(execute(store, run) for run in created))
        elif role == "append-one":
            print(await store.append_events("s", "other", [delta("from afar")]), flush=True)
        elif role == "hold":  # a running run and a queued one, then wait to be killed
            await store.admit_run(queued("run-1"))
            await store.admit_run(queued("run-2"))
            assert await store.claim_session("s", "run-1", wait=False)
            await store.start_run("run-1")
            await store.append_events("s", "run-1", [delta("half")])
            print("ready", flush=True)
            await asyncio.sleep(WAIT * 3)
    finally:
        await store.close()


async def ready() -> None:
    """Say so, and wait for the parent's go (a line on stdin): children that start
    together, opened stores and all."""
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)


async def execute(store: wingspan.Store, run: RunRecord) -> None:
    """What a kernel does with an admitted run: wait its turn, start, log, finish, let go."""
    assert await store.claim_session("s", run.id, timeout=WAIT)
    started = await store.start_run(run.id)
    await store.append_events("s", run.id, [delta("working")])
    await store.finish_run(attrs.evolve(started, status="completed", finished_at=utc_now()))
    await store.release_session("s", run.id)


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, role: str, url: str, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.plugins.test_sqlite_runs", role, url, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        return cls(process)

    async def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def line(self) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        if not line:
            _, err = await self.finish()
            raise AssertionError(f"the child ended early:\n{err}")
        return line.decode().strip()

    async def finish(self) -> tuple[list[str], str]:
        """Wait for the child to end: the lines it printed, and its stderr."""
        out, err = await asyncio.wait_for(self.process.communicate(), WAIT)
        assert self.process.returncode == 0, err.decode()
        return out.decode().splitlines(), err.decode()

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), WAIT)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.communicate(), WAIT)


# --- admission ---------------------------------------------------------------------------------


async def test_admission_stores_the_run_queued_and_logs_it(store: wingspan.Store) -> None:
    given = attrs.evolve(queued("run-1", agent_id="a"), finished_at=utc_now())
    admission = await store.admit_run(given)
    expected = attrs.evolve(given, finished_at=None, first_seq=1, last_seq=1)
    # the session was free: the run holds its claim at once (and a second in line does not)
    assert admission == wingspan.Admission(run=expected, created=True, claimed=True)
    assert not await store.claim_session("s", "someone-else", wait=False)
    assert await store.get_run("run-1") == expected
    assert await store.read_events("s") == [
        LoggedEvent(seq=1, run_id="run-1", event=RunQueued(run_id="run-1"))
    ]
    assert (await store.get_session("s")).last_seq == 1
    with pytest.raises(ConflictError, match="run-1 already exists"):
        await store.admit_run(queued("run-1"))
    with pytest.raises(ConfigError, match="queued"):
        await store.admit_run(attrs.evolve(queued("run-2"), status="running"))
    with pytest.raises(ConfigError, match="if_busy"):
        await store.admit_run(queued("run-2"), if_busy="later")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.admit_run(queued("run-2", session_id="missing"))
    assert (await store.get_session("s")).last_seq == 1  # refusals change nothing
    second = await store.admit_run(queued("run-2", agent_id="a"))
    assert not second.claimed  # behind run-1


async def test_an_idempotency_key_admits_once_per_session(store: wingspan.Store) -> None:
    first = (await store.admit_run(queued("run-1", idempotency_key="k1"))).run
    again = await store.admit_run(queued("run-2", idempotency_key="k1"))
    assert again == wingspan.Admission(run=first, created=False)
    with pytest.raises(ConflictError, match="idempotency key 'k1'"):
        await store.admit_run(queued("run-3", idempotency_key="k1", request_hash="other"))
    await store.create_session(SessionRecord(id="t"))
    elsewhere = await store.admit_run(queued("run-4", "t", idempotency_key="k1"))
    assert elsewhere.created  # a key is the session's
    assert [r.id for r in (await store.list_runs("s")).items] == ["run-1"]
    assert len(await store.read_events("s")) == 1


async def test_a_busy_session_rejects_or_interrupts(store: wingspan.Store) -> None:
    await store.admit_run(queued("run-1"))
    await store.admit_run(queued("run-2"))
    assert await store.claim_session("s", "run-1")
    await store.start_run("run-1")
    with pytest.raises(ConflictError, match="session s is busy with run run-1"):
        await store.admit_run(queued("run-3"), if_busy="reject")
    await store.admit_run(queued("run-3"), if_busy="interrupt")
    assert (await store.get_run("run-1")).abort_requested  # its process stops it
    assert (await store.get_run("run-2")).status == "aborted"
    assert (await store.get_run("run-3")).status == "queued"


async def test_claims_are_granted_in_admission_order(
    store: wingspan.Store, tmp_path: Path
) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await store.admit_run(queued(run_id))
    assert not await store.claim_session("s", "run-2", wait=False)  # not first in line
    order: list[str] = []

    async def turn(holder: str) -> None:
        assert await store.claim_session("s", holder, timeout=WAIT)
        order.append(holder)
        await store.release_session("s", holder)

    # Claimed last to first, and after a claimant never admitted: served as admitted.
    latecomer = asyncio.create_task(turn("resume"))
    await wait_for_waiter(tmp_path / "store.db", "resume")
    claims = [asyncio.create_task(turn(h)) for h in ("run-3", "run-2", "run-1")]
    await asyncio.wait_for(asyncio.gather(latecomer, *claims), WAIT)
    assert order == ["run-1", "run-2", "run-3", "resume"]


async def test_a_run_aborted_in_line_is_still_granted_its_turn(store: wingspan.Store) -> None:
    await store.admit_run(queued("run-1"))
    await store.admit_run(queued("run-2"))
    aborted = await store.abort_run("run-2")
    assert aborted.status == "aborted" and aborted.error == "aborted before it started"
    assert await events_of(store, "run-2") == [
        RunQueued(run_id="run-2"),
        ErrorEvent(error=ErrorInfo(code="aborted",
                                   message="the run was aborted before it started")),
        RunFinished(run_id="run-2", status="aborted"),
    ]
    assert aborted.last_seq == 4 and aborted.finished_at is not None
    assert await store.claim_session("s", "run-1")
    waiting = asyncio.create_task(store.claim_session("s", "run-2", timeout=WAIT))
    await store.release_session("s", "run-1")
    assert await asyncio.wait_for(waiting, WAIT)
    with pytest.raises(ConflictError, match="aborted, not queued"):
        await store.start_run("run-2")
    with pytest.raises(ConflictError, match=r"run run-2 has already finished \(aborted\)"):
        await store.abort_run("run-2")


# --- the lifecycle -------------------------------------------------------------------------


async def test_a_run_starts_logs_and_finishes(store: wingspan.Store) -> None:
    await store.admit_run(queued("run-1"))
    assert await store.claim_session("s", "run-1")
    started = await store.start_run("run-1")
    assert started.status == "running" and started.started_at is not None
    assert started.last_seq == 2
    assert await store.append_events("s", "run-1", [delta("a"), delta("b")]) == 4
    assert (await store.get_run("run-1")).last_seq == 4
    asked = await store.abort_run("run-1")
    assert asked.abort_requested and asked.status == "running"
    done = attrs.evolve(started, status="aborted", finished_at=utc_now(), first_seq=None)
    finished = await store.finish_run(done, [ErrorEvent(error=ErrorInfo(code="aborted",
                                                                        message="stopped"))])
    assert finished == attrs.evolve(done, first_seq=1, last_seq=6)
    assert await store.get_run("run-1") == finished
    # The first ending wins: a second is not written.
    assert await store.finish_run(attrs.evolve(done, status="failed"), [Ping()]) == finished
    assert (await store.get_session("s")).last_seq == 6
    with pytest.raises(ConfigError, match="finished run"):
        await store.finish_run(attrs.evolve(done, status="running"))
    with pytest.raises(NotFoundError):
        await store.start_run("nope")
    with pytest.raises(NotFoundError):
        await store.finish_run(attrs.evolve(done, id="nope"))


async def test_runs_are_listed_newest_first_in_pages(store: wingspan.Store) -> None:
    ids = [wingspan.new_id() for _ in range(5)]
    for run_id in ids:
        await store.admit_run(queued(run_id))
    await store.create_session(SessionRecord(id="t"))
    await store.admit_run(queued(wingspan.new_id(), "t"))
    seen: list[str] = []
    page = await store.list_runs("s", limit=2)
    while True:
        seen.extend(r.id for r in page.items)
        if page.next_cursor is None:
            break
        page = await store.list_runs("s", limit=2, cursor=page.next_cursor)
    assert seen == sorted(ids, reverse=True)
    with pytest.raises(ConfigError):
        await store.list_runs("s", limit=0)
    with pytest.raises(NotFoundError):
        await store.list_runs("missing")


# --- the event log -----------------------------------------------------------------------


async def test_events_are_numbered_without_gaps_and_read_back(store: wingspan.Store) -> None:
    seqs = await asyncio.gather(
        *(store.append_events("s", f"run-{i % 2}", [delta(str(i))] * (i % 3 + 1))
          for i in range(30))
    )
    assert sorted(seqs) == seqs and seqs[-1] == sum(i % 3 + 1 for i in range(30))
    logged = await store.read_events("s")
    assert [e.seq for e in logged] == list(range(1, seqs[-1] + 1))
    assert await store.append_events("s", "run-0", []) == seqs[-1]  # nothing: no change
    assert await store.read_events("s", after=5, limit=3) == logged[5:8]
    assert await store.read_events("s", run_id="run-1") == [
        e for e in logged if e.run_id == "run-1"
    ]
    assert await store.read_events("s", after=seqs[-1]) == []
    for limit in (0, -1, 1.5, "2"):
        with pytest.raises(ConfigError, match="limit"):
            await store.read_events("s", limit=limit)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="LogEvents"):
        await store.append_events("s", "run-0", [Message(role="user", content=(
            TextBlock(text="not an event"),))])  # type: ignore[list-item]
    with pytest.raises(NotFoundError):
        await store.read_events("missing")
    with pytest.raises(NotFoundError):
        await store.append_events("missing", "run-0", [Ping()])


async def test_a_waiter_is_woken_by_an_append_in_its_process(store: wingspan.Store) -> None:
    await store.append_events("s", "run-1", [Ping()])
    assert await store.wait_events("s", after=0, timeout=WAIT) == 1  # there already
    waiting = asyncio.create_task(store.wait_events("s", after=1, timeout=WAIT))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await store.append_events("s", "run-1", [Ping(), Ping()])
    assert await asyncio.wait_for(waiting, WAIT) == 3
    # Its time up, a wait answers the last_seq as it is.
    assert await store.wait_events("s", after=3, timeout=0.01) == 3
    with pytest.raises(NotFoundError):
        await store.wait_events("missing", after=0, timeout=WAIT)


async def test_deleting_or_closing_ends_the_waits(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite://{tmp_path}/x.db")
    try:
        for session_id in ("s", "t"):
            await store.create_session(SessionRecord(id=session_id))
        on_s = asyncio.create_task(store.wait_events("s", after=0, timeout=WAIT))
        on_t = asyncio.create_task(store.wait_events("t", after=0, timeout=WAIT))
        await asyncio.sleep(0.05)
        await store.delete_session("s")
        with pytest.raises(NotFoundError, match="deleted"):
            await asyncio.wait_for(on_s, WAIT)
        assert not on_t.done()
    finally:
        await store.close()
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(on_t, WAIT)


async def test_a_cancelled_wait_leaves_nothing_behind(store: wingspan.Store) -> None:
    mine = asyncio.current_task()
    waiting = asyncio.create_task(store.wait_events("s", after=0, timeout=WAIT))
    await asyncio.sleep(0.05)  # waiting, and polling for other processes' appends
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await until(lambda: asyncio.all_tasks() == {mine}, "the poll outlived the last wait")
    assert await store.append_events("s", "run-1", [Ping()]) == 1


async def test_pruning_drops_the_deltas_of_runs_finished_before(store: wingspan.Store) -> None:
    for run_id in ("old", "recent", "running"):
        await store.admit_run(queued(run_id))
        await store.append_events("s", run_id, [delta("x"), Ping(), ToolResultEvent(
            tool_use_id="t", tool_name="bash", content="ok")])
    old = await store.get_run("old")
    await store.finish_run(attrs.evolve(old, status="completed",
                                        finished_at=utc_now() - timedelta(hours=2)))
    recent = await store.get_run("recent")
    await store.finish_run(attrs.evolve(recent, status="completed", finished_at=utc_now()))
    last_seq = (await store.get_session("s")).last_seq
    assert await store.prune_events(before=utc_now() - timedelta(hours=1)) == 2
    assert await events_of(store, "old") == [
        RunQueued(run_id="old"), ToolResultEvent(tool_use_id="t", tool_name="bash", content="ok"),
        RunFinished(run_id="old", status="completed"),
    ]
    assert len(await events_of(store, "recent")) == 5
    assert await store.prune_events(before=utc_now() - timedelta(hours=1)) == 0
    # Deltas added to a pruned run are pruned again; the running run's never are.
    await store.append_events("s", "old", [delta("late")])
    assert await store.prune_events(before=utc_now() + timedelta(seconds=1)) == 3
    assert len(await events_of(store, "running")) == 4
    assert (await store.get_session("s")).last_seq == last_seq + 1
    assert await store.append_events("s", "old", [Ping()]) == last_seq + 2  # never reused
    with pytest.raises(ConfigError, match="timezone"):
        await store.prune_events(before=utc_now().replace(tzinfo=None))


async def test_deleting_a_session_deletes_its_runs_and_events(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite://{tmp_path}/x.db")
    try:
        for session_id in ("s", "kept"):
            await store.create_session(SessionRecord(id=session_id))
            await store.admit_run(queued(f"run-{session_id}-1", session_id))
            await store.admit_run(queued(f"run-{session_id}-2", session_id))
            assert await store.claim_session(session_id, f"run-{session_id}-1")
        await store.delete_session("s")
        assert table_counts(tmp_path / "x.db") == {
            "sessions": 1, "runs": 2, "events": 2, "leases": 1, "lease_waiters": 1,
        }
        with pytest.raises(NotFoundError):
            await store.get_run("run-s-2")
        await store.create_session(SessionRecord(id="s"))  # a new session: a new log
        assert await store.append_events("s", "run-x", [Ping()]) == 1
    finally:
        await store.close()


# --- recovery ----------------------------------------------------------------------------


async def test_closing_a_store_interrupts_its_runs_running_and_in_line(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    first, second = await open_sqlite(url), await open_sqlite(url)
    try:
        await first.create_session(SessionRecord(id="s"))
        await first.admit_run(queued("run-1"))
        await first.admit_run(queued("run-2"))
        assert await first.claim_session("s", "run-1")
        await first.start_run("run-1")
        await first.close()
        runs = {run_id: await second.get_run(run_id) for run_id in ("run-1", "run-2")}
        assert runs["run-1"].error == "the store was closed before the run finished"
        assert runs["run-2"].error == "the store was closed before the run started"
        for run in runs.values():
            assert run.status == "interrupted" and run.finished_at is not None
            assert (await events_of(second, run.id))[-2:] == interrupted(run)
            assert run.last_seq == (await second.read_events("s", run_id=run.id))[-1].seq
        assert await second.claim_session("s", "next", wait=False)
    finally:
        await first.close()
        await second.close()


async def test_a_queued_run_whose_place_lapsed_is_interrupted(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    # `first` renews its tickets every 100 s: not while this test runs.
    first, second = await open_sqlite(f"{url}?lease_ttl=300"), await open_sqlite(url)
    try:
        await first.create_session(SessionRecord(id="s"))
        assert await second.claim_session("s", "holder")
        await first.admit_run(queued("run-1"))
        await first.admit_run(queued("run-2"))
        # As a process of another host would leave it: its ticket no longer renewed.
        db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        db.execute("UPDATE lease_waiters SET expires_at = 0, host = NULL")
        db.close()
        await second.release_session("s", "holder")
        for run_id in ("run-1", "run-2"):
            run = await second.get_run(run_id)
            assert run.status == "interrupted" and "expired" in (run.error or "")
            assert (await events_of(second, run_id))[-2:] == interrupted(run)
        # A finished run is not interrupted again, though its place is gone.
        assert await second.claim_session("s", "next", wait=False)
        assert len(await second.read_events("s")) == 6
    finally:
        await first.close()
        await second.close()


# --- across processes ----------------------------------------------------------------------


async def test_appends_of_two_processes_are_numbered_without_gaps(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    children = []
    try:
        await store.create_session(SessionRecord(id="s"))
        children = [await Child.start("append", url, name, "60") for name in "ab"]
        for process in children:
            assert await process.line() == "ready"
        for process in children:
            await process.go()
        for process in children:
            await process.finish()
        logged = await store.read_events("s")
        total = 2 * sum(i % 3 + 1 for i in range(60))
        assert [e.seq for e in logged] == list(range(1, total + 1))
        assert (await store.get_session("s")).last_seq == total
        for name in "ab":  # each one's events all there, in the order it appended them
            texts = [e.event.text for e in logged if e.run_id == name]  # type: ignore[union-attr]
            assert texts == [f"{name} {i} {j}" for i in range(60) for j in range(i % 3 + 1)]
    finally:
        for process in children:
            await process.close()
        await store.close()


async def test_admissions_of_two_processes_are_claimed_in_admission_order(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    children = []
    try:
        await store.create_session(SessionRecord(id="s"))
        # Keys k0..k11 then k0..k3, and k6..k17 then k6..k9: 18 distinct, 14 repeats.
        children = [await Child.start("admit", url, offset) for offset in ("0", "6")]
        for process in children:
            assert await process.line() == "ready"
        for process in children:
            await process.go()
        admissions = []
        for process in children:
            lines, _ = await process.finish()
            admissions.extend(json.loads(line) for line in lines)
        run_of: dict[str, set[str]] = {}
        for key, run_id, _ in admissions:
            run_of.setdefault(key, set()).add(run_id)
        assert len(run_of) == 18 and all(len(runs) == 1 for runs in run_of.values())
        assert sum(created for _, _, created in admissions) == 18
        logged = await store.read_events("s")
        admitted = [e.run_id for e in logged if isinstance(e.event, RunQueued)]
        started = [e.run_id for e in logged if isinstance(e.event, RunStarted)]
        assert sorted(admitted) == sorted(set().union(*run_of.values()))
        assert started == admitted
        assert {r.status for r in (await store.list_runs("s")).items} == {"completed"}
    finally:
        for process in children:
            await process.close()
        await store.close()


async def test_a_wait_is_woken_by_an_append_of_another_process(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    appender = None
    try:
        await store.create_session(SessionRecord(id="s"))
        waiting = asyncio.create_task(store.wait_events("s", after=0, timeout=WAIT * 2))
        appender = await Child.start("append-one", url)
        lines, _ = await appender.finish()
        assert lines == ["1"]
        assert await asyncio.wait_for(waiting, WAIT) == 1
    finally:
        if appender is not None:
            await appender.close()
        await store.close()


async def test_a_killed_process_leaves_its_runs_interrupted(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    holder = None
    try:
        await store.create_session(SessionRecord(id="s"))
        holder = await Child.start("hold", url)
        assert await holder.line() == "ready"
        assert not await store.claim_session("s", "next", wait=False)
        await holder.kill()
        assert await store.claim_session("s", "next", wait=False)  # recovered at once
        pid = f"pid {holder.process.pid}, this host"
        running, in_line = await store.get_run("run-1"), await store.get_run("run-2")
        assert running.error == f"the process running it ({pid}) stopped before the run finished"
        assert in_line.error == (
            f"the process that admitted it ({pid}) stopped before the run started"
        )
        assert await events_of(store, "run-1") == [
            RunQueued(run_id="run-1"), RunStarted(run_id="run-1"), delta("half"),
            *interrupted(running),
        ]
        assert await events_of(store, "run-2") == [RunQueued(run_id="run-2"), *interrupted(in_line)]
        for run in (running, in_line):
            assert run.status == "interrupted" and run.finished_at is not None
        assert in_line.last_seq == (await store.get_session("s")).last_seq == 8
    finally:
        if holder is not None:
            await holder.close()
        await store.close()


# --- the schema ----------------------------------------------------------------------------


async def test_a_database_of_the_previous_version_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path, MIGRATIONS[:3])
    session = SessionRecord(id="s", title="old")
    finished = RunRecord(id="run-old", session_id="s", status="completed",
                         finished_at=utc_now() - timedelta(days=1))
    # Bodies as the previous version wrote them: without the fields added since.
    session_body = wire.unstructure(session)
    del session_body["last_seq"]
    run_body = wire.unstructure(finished)
    for field in ("idempotency_key", "request_hash", "first_seq", "last_seq", "abort_requested"):
        del run_body[field]
    db.execute("INSERT INTO sessions (id, body) VALUES ('s', ?)", (json.dumps(session_body),))
    db.execute("INSERT INTO messages (session_pk, seq, body) VALUES (1, 0, ?)",
               (wire.dumps(Message(role="user", content=(TextBlock(text="kept"),))),))
    db.execute("INSERT INTO runs VALUES ('run-old', 1, 'completed', ?)", (json.dumps(run_body),))
    db.close()
    store = await open_sqlite(f"sqlite://{path}")
    try:
        got = await store.get_session("s")
        assert (got.title, got.message_count, got.last_seq) == ("old", 1, 0)
        assert [m.text for m in await store.load_messages("s")] == ["kept"]
        assert await store.get_run("run-old") == finished
        admission = await store.admit_run(queued("run-new", idempotency_key="k"))
        assert admission.run.first_seq == 1
        assert [r.id for r in (await store.list_runs("s")).items] == ["run-old", "run-new"]
        assert await store.prune_events(before=utc_now()) == 0
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:]))
