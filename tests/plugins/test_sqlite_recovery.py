"""Recovery of the SQLite store: a holder killed on this host, and a full disk.

A claim records the process behind it (``wingspan.procs``): a claimant on the same host that
finds that process gone recovers the claim at once, not when it lapses (30 s by default, the
lease TTL every test here keeps unless it says otherwise). A release that a full disk keeps
from being written is written as soon as the disk has room again.

The children are this module run as a script (``python -m tests.plugins.test_sqlite_recovery
ROLE URL ...`` from the repository root): real processes, killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

import wingspan
from wingspan import (
    Agent,
    Message,
    RunRecord,
    Session,
    SessionRecord,
    StoreError,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    check_history,
)
from wingspan.plugins.sqlite import MIGRATIONS, migrate
from wingspan.procs import ProcessIdentity, is_gone
from wingspan.testing import make_runtime, scripted

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20  # seconds: every wait on a child is bounded
HOLDER = "run-s"  # a holder's run is named after its session
USE = ToolUseBlock(id="toolu_dead", name="bash", input={"command": "sleep 60"})
RUNTIME = make_runtime()
AGENT = Agent(name="after", provider=scripted(["all good"]))
PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
linux_only = pytest.mark.skipif(not PROC, reason="start times and pid namespaces need /proc")


def text(role: Any, value: str) -> Message:
    return Message(role=role, content=(TextBlock(text=value),))


async def open_store(url: str) -> wingspan.Store:
    return await RUNTIME.open_store(url)


# --- the children ----------------------------------------------------------------------------


async def child(role: str, *args: str) -> None:
    if role == "identity":  # who this process is (named ``args[0]``), then wait to be killed
        if args:
            import ctypes

            ctypes.CDLL(None).prctl(15, args[0].encode(), 0, 0, 0)  # PR_SET_NAME
        print(json.dumps(attrs.asdict(ProcessIdentity.current())), flush=True)
        await asyncio.sleep(WAIT * 3)
        return
    if role == "foreign-holder":  # a holder whose identity says it runs on another machine
        from wingspan import procs

        here = ProcessIdentity.current()
        elsewhere = attrs.evolve(here, host="linux:another-machine:" + here.host)
        procs._identity = lambda pid: elsewhere  # type: ignore[assignment]
        role = "holder"
    url, *rest = args
    store = await open_store(url)
    try:
        if role == "holder":  # a run in the middle of a tool call, waiting to be killed
            (session_id,) = rest
            await store.create_session(SessionRecord(id=session_id))
            await store.append_messages(
                session_id,
                [text("user", "run a command"), Message(role="assistant", content=(USE,))],
            )
            run_id = f"run-{session_id}"
            assert await store.claim_session(session_id, run_id, wait=False)
            await store.save_run(RunRecord(id=run_id, session_id=session_id, status="running"))
            print("ready", flush=True)
            await asyncio.sleep(WAIT * 3)
        elif role == "waiter":  # queue behind the holder, waiting to be killed
            session_id, holder = rest
            await store.claim_session(session_id, holder, timeout=WAIT * 3)
        elif role == "claim-now":
            (session_id,) = rest
            granted = await store.claim_session(session_id, "from-elsewhere", wait=False)
            identity = attrs.asdict(ProcessIdentity.current())
            print(json.dumps({"granted": granted, "identity": identity}), flush=True)
    finally:
        await store.close()


# --- the parent's side -----------------------------------------------------------------------


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str, prefix: Sequence[str] = ()) -> Child:
        process = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "tests.plugins.test_sqlite_recovery",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None and self.process.stderr is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        if not line:
            err = await asyncio.wait_for(self.process.stderr.read(), WAIT)
            raise AssertionError(f"the child ended without a word:\n{err.decode()}")
        return line.decode().strip()

    async def kill(self) -> float:
        """SIGKILL it; :returns: when (``time.monotonic()``)."""
        self.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert await asyncio.wait_for(self.process.wait(), WAIT) == -signal.SIGKILL
        return killed_at

    async def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.process.returncode is None:
                self.process.kill()
        await asyncio.wait_for(self.process.wait(), WAIT)


async def start_holder(url: str, session_id: str = "s", role: str = "holder") -> Child:
    holder = await Child.start(role, url, session_id)
    try:
        assert await holder.line() == "ready"
    except BaseException:
        await holder.close()
        raise
    return holder


def db_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://").partition("?")[0])


def rows(url: str, query: str, *args: Any) -> list[Any]:
    db = sqlite3.connect(db_path(url))
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def execute(url: str, statement: str, *args: Any) -> None:
    db = sqlite3.connect(db_path(url), timeout=WAIT)
    try:
        with db:
            db.execute(statement, args)
    finally:
        db.close()


async def wait_for_ticket(url: str, holder: str) -> None:
    """Until ``holder`` has joined the queue of waiters (read from the database itself)."""
    deadline = time.monotonic() + WAIT
    while not rows(url, "SELECT 1 FROM lease_waiters WHERE holder = ?", holder):
        assert time.monotonic() < deadline, f"{holder} never queued"
        await asyncio.sleep(0.01)


def assert_recovered(run: RunRecord, history: list[Message]) -> None:
    """The killed holder's run is interrupted and its tool call has an error result."""
    assert run.status == "interrupted" and run.finished_at is not None
    assert "stopped before the run finished" in (run.error or "")
    assert check_history(history) == []
    assert [m.role for m in history] == ["user", "assistant", "user"]
    (result,) = history[-1].content
    assert isinstance(result, ToolResultBlock)
    assert result.tool_use_id == USE.id and result.is_error and "interrupted" in result.content


# --- a holder killed on this host --------------------------------------------------------------


async def test_a_claim_recovers_the_session_of_a_killed_holder_at_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    holder = await start_holder(url)
    store = await open_store(url)  # while the holder lives: nothing to recover at open
    try:
        assert not await store.claim_session("s", "next", wait=False)  # a live holder keeps it
        assert (await store.get_run(HOLDER)).status == "running"
        await holder.kill()
        assert await store.claim_session("s", "next", wait=False)
        history = await store.load_messages("s")
        assert_recovered(await store.get_run(HOLDER), history)
        assert f"pid {holder.process.pid}, this host" in ((await store.get_run(HOLDER)).error or "")
        await store.release_session("s", "next")
        assert await store.claim_session("s", "again", wait=False)
        assert await store.load_messages("s") == history  # repaired once
    finally:
        await holder.close()
        await store.close()


async def test_resume_repairs_the_history_of_a_killed_holder_at_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    holder = await start_holder(url)
    store = await open_store(url)
    try:
        await holder.kill()
        session = await Session.resume(store, "s", agent=AGENT, runtime=RUNTIME)
        assert check_history(session.history) == []
        assert list(session.history) == await store.load_messages("s")
        assert_recovered(await store.get_run(HOLDER), list(session.history))
        result = await asyncio.wait_for(session.run("and now?"), WAIT)
        assert result.response == "all good"
        assert check_history(await store.load_messages("s")) == []
    finally:
        await holder.close()
        await store.close()


async def test_opening_the_store_recovers_what_killed_processes_of_this_host_left(
    tmp_path: Path,
) -> None:
    """What ``wingspan serve`` finds when it starts where a crashed server of this host ran."""
    url = f"sqlite://{tmp_path}/x.db"
    children = [await start_holder(url, "s"), await start_holder(url, "t")]
    try:
        dead = children[0]
        children.append(await Child.start("waiter", url, "t", "dead-waiter"))
        await wait_for_ticket(url, "dead-waiter")
        await dead.kill()
        await children[2].kill()
        store = await open_store(url)
        try:
            # Read only: opening recovered the dead holder's claim and dropped the dead
            # waiter's ticket; the live holder keeps its claim.
            assert_recovered(await store.get_run(HOLDER), await store.load_messages("s"))
            assert rows(url, "SELECT holder FROM lease_waiters") == []
            assert rows(
                url, "SELECT s.id, l.holder FROM leases l JOIN sessions s ON s.pk = l.session_pk"
            ) == [("t", "run-t")]
            assert await store.claim_session("s", "next", wait=False)
            assert not await store.claim_session("t", "next", wait=False)
        finally:
            await store.close()
    finally:
        for process in children:
            await process.close()


async def test_a_waiting_claim_is_granted_as_soon_as_its_holder_is_killed(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/x.db"  # lease_ttl 30 s: a lapse cannot be what grants it
    holder = await start_holder(url)
    store = await open_store(url)
    try:
        waiting = asyncio.create_task(store.claim_session("s", "next"))
        await wait_for_ticket(url, "next")
        assert not waiting.done()
        killed_at = await holder.kill()
        async with asyncio.timeout(10):
            assert await waiting
        print(f"claim granted {time.monotonic() - killed_at:.3f} s after SIGKILL")
        assert_recovered(await store.get_run(HOLDER), await store.load_messages("s"))
    finally:
        await holder.close()
        await store.close()


async def test_a_claim_of_another_host_is_recovered_only_once_it_lapses(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    holder = await start_holder(url, role="foreign-holder")
    try:
        await holder.kill()
        ((host,),) = rows(url, "SELECT host FROM leases")
        assert host.startswith("linux:another-machine:")
        store = await open_store(url)  # no sweep of another host's claims
        try:
            assert (await store.get_run(HOLDER)).status == "running"
            assert not await store.claim_session("s", "next", wait=False)
            assert not await store.claim_session("s", "next", timeout=0.5)
            assert (await store.get_run(HOLDER)).status == "running"
            # Its 30 s pass: then it is recovered, as before.
            execute(url, "UPDATE leases SET expires_at = ?", time.time() - 1)
            assert await store.claim_session("s", "next", wait=False)
            run = await store.get_run(HOLDER)
            assert_recovered(run, await store.load_messages("s"))
            assert "claim expired" in (run.error or "")
        finally:
            await store.close()
    finally:
        await holder.close()


async def test_a_claim_recorded_before_processes_were_keeps_the_ttl_rule(tmp_path: Path) -> None:
    """A database of schema version 2, with a claim held when it was last used."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(db, path, MIGRATIONS[:2])
        db.execute(
            "INSERT INTO sessions (id, body) VALUES ('s', ?)",
            (wingspan.wire.dumps(SessionRecord(id="s")),),
        )
        for seq, message in enumerate(
            [text("user", "go"), Message(role="assistant", content=(USE,))]
        ):
            db.execute(
                "INSERT INTO messages (session_pk, seq, body) VALUES (1, ?, ?)",
                (seq, wingspan.wire.dumps(message)),
            )
        db.execute(
            "INSERT INTO runs (id, session_pk, status, body) VALUES (?, 1, 'running', ?)",
            (HOLDER, wingspan.wire.dumps(RunRecord(id=HOLDER, session_id="s"))),
        )
        db.execute(
            "INSERT INTO leases (session_pk, holder, owner, expires_at) "
            "VALUES (1, ?, 'old-store', ?)",
            (HOLDER, time.time() + 30),
        )
    finally:
        db.close()
    url = f"sqlite://{path}"
    store = await open_store(url)
    try:
        assert rows(url, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        assert rows(url, "SELECT host, pid, started FROM leases") == [(None, None, None)]
        assert not await store.claim_session("s", "next", wait=False)
        assert (await store.get_run(HOLDER)).status == "running"
        execute(url, "UPDATE leases SET expires_at = ?", time.time() - 1)
        assert await store.claim_session("s", "next", wait=False)
        assert_recovered(await store.get_run(HOLDER), await store.load_messages("s"))
    finally:
        await store.close()


@linux_only
async def test_a_claim_whose_pid_now_runs_another_process_is_recovered_at_once(
    tmp_path: Path,
) -> None:
    """The pid still runs, but not the process that claimed: it started at another time."""
    url = f"sqlite://{tmp_path}/x.db"
    holder = await start_holder(url)
    store = await open_store(url)
    try:
        assert not await store.claim_session("s", "next", wait=False)
        execute(url, "UPDATE leases SET started = started - 1")
        assert await store.claim_session("s", "next", wait=False)
        assert_recovered(await store.get_run(HOLDER), await store.load_messages("s"))
    finally:
        await holder.close()
        await store.close()


@linux_only
async def test_a_process_in_another_pid_namespace_never_judges_our_claims(
    tmp_path: Path,
) -> None:
    """Two containers sharing a database on one machine: our pid means nothing in theirs."""
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to start a process in a new pid namespace")
    probe = await asyncio.create_subprocess_exec(*unshare, "true", stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(probe.communicate(), WAIT)
    if probe.returncode:
        pytest.skip(f"cannot make a pid namespace here: {err.decode().strip()}")
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_store(url)
    try:
        await store.create_session(SessionRecord(id="s"))
        assert await store.claim_session("s", "ours")
        other = await Child.start("claim-now", url, "s", prefix=unshare)
        try:
            answer = json.loads(await other.line())
            assert await asyncio.wait_for(other.process.wait(), WAIT) == 0
        finally:
            await other.close()
        theirs = ProcessIdentity(**answer["identity"])
        assert theirs.host != ProcessIdentity.current().host  # same machine and boot, other pids
        assert not answer["granted"]  # our pid is unknown there, and yet our claim stands
        assert not await store.claim_session("s", "next", wait=False)
    finally:
        await store.close()


# --- process identity ------------------------------------------------------------------------


async def identity_child(name: str = "") -> tuple[Child, ProcessIdentity]:
    process = await Child.start("identity", *([name] if name else []))
    try:
        return process, ProcessIdentity(**json.loads(await process.line()))
    except BaseException:
        await process.close()
        raise


def proc_stat(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text()


def test_this_process_is_known_and_not_gone() -> None:
    here = ProcessIdentity.current()
    assert here is ProcessIdentity.current()  # computed once
    assert here.pid == os.getpid() and not is_gone(here)
    if PROC:
        assert here.host.startswith("linux:") and isinstance(here.started, int)


@linux_only
def test_a_forked_child_knows_itself() -> None:
    ProcessIdentity.current()  # cached in the parent before the fork
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, json.dumps(attrs.asdict(ProcessIdentity.current())).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        forked = ProcessIdentity(**json.loads(pipe.read()))
    os.waitpid(pid, 0)
    here = ProcessIdentity.current()
    assert forked.pid == pid and forked.host == here.host and forked.started != here.started
    assert is_gone(forked)


@linux_only
async def test_a_killed_process_is_gone_and_a_reused_pid_does_not_bring_it_back() -> None:
    process, identity = await identity_child()
    try:
        assert identity.pid == process.process.pid and not is_gone(identity)
        assert is_gone(attrs.evolve(identity, started=(identity.started or 0) + 1))  # pid reuse
        here = ProcessIdentity.current()
        assert is_gone(attrs.evolve(here, started=(here.started or 0) - 1))
        await process.kill()
        assert is_gone(identity)
        assert not is_gone(attrs.evolve(identity, host="linux:another-machine"))
        assert not is_gone(attrs.evolve(identity, host=""))  # cannot be judged
    finally:
        await process.close()


@linux_only
def test_a_killed_process_not_yet_reaped_is_gone() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as zombie:
        try:
            identity = attrs.evolve(ProcessIdentity.current(), pid=zombie.pid, started=None)
            assert not is_gone(identity)
            os.kill(zombie.pid, signal.SIGKILL)
            deadline = time.monotonic() + WAIT
            while proc_stat(zombie.pid).rsplit(") ", 1)[-1][:1] != "Z":
                assert time.monotonic() < deadline, "the child never became a zombie"
                time.sleep(0.01)
            assert is_gone(identity)  # exited, waiting for its parent (us) to reap it
        finally:
            zombie.kill()


@linux_only
async def test_a_process_named_with_spaces_and_parentheses_is_read_right() -> None:
    process, identity = await identity_child("x) (y z")
    try:
        assert "(x) (y z)" in proc_stat(identity.pid)
        assert identity.started is not None
        assert identity.started >= (ProcessIdentity.current().started or 0)  # started later
        assert not is_gone(identity)
        await process.kill()
        assert is_gone(identity)
    finally:
        await process.close()


# --- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs needs mount(8) and root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"mounting a 2 MiB tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk holding ``disk`` is full. :returns: the file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:
        for size in (1 << 16, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    file.write(b"\0" * size)
    probe = disk / "probe"
    with (
        pytest.raises(OSError, match=os.strerror(errno.ENOSPC)),
        open(probe, "wb", buffering=0) as file,
    ):
        file.write(b"\0" * 4096)
    probe.unlink(missing_ok=True)
    return filler


def assert_full(error: BaseException) -> None:
    assert isinstance(error, StoreError), error
    assert "the disk holding" in str(error) and "is full" in str(error)


async def append_until_full(store: wingspan.Store, session_ids: Sequence[str]) -> None:
    """Append pairs of messages to each session at once (the writer commits them together)
    until the disk is full."""
    for round_ in range(200):
        batch = [text("user", f"{round_} " + "x" * 2000), text("assistant", "y" * 2000)]
        outcomes = await asyncio.gather(
            *(store.append_messages(s, batch) for s in session_ids), return_exceptions=True
        )
        if any(isinstance(outcome, BaseException) for outcome in outcomes):
            for outcome in outcomes:
                assert_full(outcome) if isinstance(outcome, BaseException) else None
            return
    raise AssertionError("the disk never filled up")


@pytest.mark.parametrize("queued", [False, True], ids=["claim-after", "waiting-before"])
async def test_a_full_disk_does_not_keep_the_session_claimed(
    small_disk: Path, queued: bool
) -> None:
    """The next claim is granted once the disk has room again: one made then, or one that
    queued before the disk filled up."""
    url = f"sqlite://{small_disk}/x.db"
    store = await open_store(url)
    waiting = None
    try:
        for session_id in ("s", "other", "third"):
            await store.create_session(SessionRecord(id=session_id))
        assert await store.claim_session("s", "run-1")
        run = RunRecord(id="run-1", session_id="s")
        await store.save_run(run)
        kept = [text("user", "run a command"), Message(role="assistant", content=(USE,))]
        await store.append_messages("s", kept)
        if queued:
            waiting = asyncio.create_task(store.claim_session("s", "run-2"))
            await wait_for_ticket(url, "run-2")
        filler = fill(small_disk)
        await append_until_full(store, ["other", "third"])
        # The tool's result cannot be stored; nor, it may be, the run's end and the release.
        result = ToolResultBlock(tool_use_id=USE.id, content="done")
        with pytest.raises(StoreError) as refused:
            await store.append_messages("s", [Message(role="user", content=(result,))])
        assert_full(refused.value)
        with contextlib.suppress(StoreError):
            await store.save_run(attrs.evolve(run, status="failed", error="disk full"))
        await store.release_session("s", "run-1")  # written later if it cannot be now
        filler.unlink()

        async with asyncio.timeout(10):
            assert await (waiting or store.claim_session("s", "run-2"))
        finished = await store.get_run("run-1")
        assert finished.status in ("failed", "interrupted") and finished.finished_at is not None
        history = await store.load_messages("s")
        assert history[: len(kept)] == kept  # every append that returned, and nothing else
        assert check_history(history) == []  # the tool call got its error result
        assert len(history) == len(kept) + 1
        assert await store.append_messages("s", [text("user", "after")]) == len(kept) + 2
        await store.release_session("s", "run-2")
        assert await store.claim_session("s", "run-3", wait=False)
        history = await store.load_messages("s")
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
        await store.close()
    assert rows(url, "PRAGMA integrity_check") == [("ok",)]
    store = await open_store(url)  # all of it on disk, whole
    try:
        assert await store.load_messages("s") == history
        for session_id in ("other", "third"):  # appends are all or nothing
            assert len(await store.load_messages(session_id)) % 2 == 0
    finally:
        await store.close()


async def test_a_release_the_full_disk_refused_reaches_other_processes(small_disk: Path) -> None:
    """Nothing more is written here after the disk has room again: the idle renewer, which
    used to keep such a claim alive for ever, releases it."""
    url = f"sqlite://{small_disk}/x.db?lease_ttl=3"
    store = await open_store(url)
    try:
        await store.create_session(SessionRecord(id="s"))
        assert await store.claim_session("s", "run-1")
        await store.save_run(RunRecord(id="run-1", session_id="s"))
        filler = fill(small_disk)
        await append_until_full(store, ["s"])
        await store.release_session("s", "run-1")
        filler.unlink()
        other = await open_store(url)
        try:
            async with asyncio.timeout(10):
                assert await other.claim_session("s", "run-2")
            assert (await other.get_run("run-1")).status == "interrupted"
            assert await other.append_messages("s", [text("user", "after")]) >= 1
        finally:
            await other.close()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:]))
