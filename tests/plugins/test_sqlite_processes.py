"""The SQLite store across real processes: claims, dead holders, and SIGKILL at random points.

The children are this module run as a script (``python -m tests.plugins.test_sqlite_processes
ROLE URL ...`` from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wingspan
from tests.plugins.test_sqlite_store import (
    lease_of,
    open_sqlite,
    until,
    wait_for_waiter,
    watch_database,
)
from wingspan import (
    Admission,
    Agent,
    Message,
    RunRecord,
    Session,
    SessionRecord,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    check_history,
    wire,
)
from wingspan.testing import make_runtime, scripted

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20  # seconds: every wait on a child is bounded


def digest(message: Message) -> str:
    return hashlib.sha256(wire.dumps(message).encode()).hexdigest()[:16]


def text(role: Any, value: str) -> Message:
    return Message(role=role, content=(TextBlock(text=value),))


@wingspan.tool
async def slow(note: str = "") -> str:
    """Take a little while.

    :param note: anything
    """
    await asyncio.sleep(0.002)
    return "slept"


def crash_agent() -> Agent:
    return Agent(
        name="crash", provider=scripted([[{"name": "slow", "input": {}}], "done"]), tools=[slow]
    )


# --- the children ----------------------------------------------------------------------------


class Acking:
    """A store that prints an acknowledgement once each append has returned."""

    def __init__(self, store: wingspan.Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> int:
        count = await self._store.append_messages(session_id, messages)
        print("ack", session_id, count, digest(messages[-1]), flush=True)
        return count

    # A run's messages are stored as it starts (its user message) and with each step's last
    # events (its turns); the count they reached is read back (one writer per session here).

    async def start_run(self, run_id: str, messages: Sequence[Message] = ()) -> RunRecord:
        run = await self._store.start_run(run_id, messages)
        await self._ack(run.session_id, messages)
        return run

    async def finish_run(self, run: RunRecord, events: Sequence[Any] = (),
                         messages: Sequence[Message] = ()) -> RunRecord:
        finished = await self._store.finish_run(run, events, messages)
        if finished.status == run.status:  # ended here: its last turn is stored
            await self._ack(run.session_id, messages)
        return finished

    async def admit_run(self, run: RunRecord, **options: Any) -> Admission:
        admission = await self._store.admit_run(run, **options)
        if admission.started:  # it started with its admission: its messages are stored
            await self._ack(run.session_id, options.get("start") or ())
        return admission

    async def append_events(self, session_id: str, run_id: str, events: Sequence[Any],
                            messages: Sequence[Message] = ()) -> int:
        seq = await self._store.append_events(session_id, run_id, events, messages)
        await self._ack(session_id, messages)
        return seq

    async def _ack(self, session_id: str, messages: Sequence[Message]) -> None:
        if messages:
            count = (await self._store.get_session(session_id)).message_count
            print("ack", session_id, count, digest(messages[-1]), flush=True)


async def child(role: str, url: str, *args: str) -> None:
    store = await open_sqlite(url)
    try:
        if role == "worker":  # take turns: start and end of a turn must never interleave
            session_id, name, rounds = args[0], args[1], int(args[2])
            for i in range(rounds):
                assert await store.claim_session(session_id, f"{name}-{i}", timeout=WAIT)
                await store.append_messages(session_id, [text("user", f"start {name}")])
                await asyncio.sleep(0.005)
                await store.append_messages(session_id, [text("assistant", f"end {name}")])
                await store.release_session(session_id, f"{name}-{i}")
        elif role == "waiter":
            session_id, name = args
            assert await store.claim_session(session_id, name, timeout=WAIT)
            await store.append_messages(session_id, [text("user", name)])
            await store.release_session(session_id, name)
        elif role == "holder":  # claim, start a tool call, then wait to be killed
            (session_id,) = args
            assert await store.claim_session(session_id, "run-dead", wait=False)
            await store.save_run(RunRecord(id="run-dead", session_id=session_id))
            use = ToolUseBlock(id="toolu_dead", name="bash", input={"command": "sleep 60"})
            await store.append_messages(session_id, [Message(role="assistant", content=(use,))])
            print("held", flush=True)
            await asyncio.sleep(WAIT)
        elif role == "workload":  # runs with tool calls on three sessions, plus batches
            await workload(Acking(store))
    finally:
        await store.close()


async def workload(store: Any) -> None:
    runtime, agent = make_runtime(), crash_agent()
    # Not Session.resume: see test_resume_after_a_lapsed_claim_repairs_once. A session's
    # first run loads and repairs the stored history under its claim.
    sessions = [
        Session(agent=agent, store=store, id=f"crash-{n}", runtime=runtime) for n in range(3)
    ]
    with contextlib.suppress(wingspan.ConflictError):
        await store.create_session(SessionRecord(id="batches"))
    print("ready", flush=True)

    async def drive(session: Session) -> None:
        while True:
            await session.run("go")

    async def batches() -> None:  # three messages at a time: all or none
        while True:
            await store.append_messages(
                "batches", [text("user", "1"), text("assistant", "2" * 500), text("user", "3")]
            )

    await asyncio.gather(*(drive(s) for s in sessions), batches())


# --- the parent's side -----------------------------------------------------------------------


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, role: str, url: str, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.plugins.test_sqlite_processes",
            role,
            url,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return cls(process)

    async def expect(self, wanted: str) -> None:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
            if not line:
                _, err = await self.finish()
                raise AssertionError(f"the child ended before printing {wanted!r}:\n{err}")
            self.lines.append(line.decode())
            if line.decode().strip() == wanted:
                return

    async def finish(self, *, kill: bool = False) -> tuple[int, str]:
        if kill and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        out, err = await asyncio.wait_for(self.process.communicate(), WAIT)
        self.lines.extend(out.decode().splitlines(keepends=True))
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()

    async def kill_after_acks(self, count: int) -> tuple[int, str]:
        """Read the workload's output until it has acknowledged ``count`` writes, runs among
        them (they may first wait for the claims a killed workload left), then SIGKILL it in
        the middle of whatever it does next, and read the rest."""
        assert self.process.stdout is not None
        acks, runs = 0, 0
        while acks < count or not runs:
            line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
            if not line:
                _, err = await self.finish()
                raise AssertionError(f"the child ended after {acks} of {count} acks:\n{err}")
            self.lines.append(line.decode())
            acks += line.startswith(b"ack ")
            runs += line.startswith(b"ack crash-")
        return await self.finish(kill=True)

    async def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.process.returncode is None:
                self.process.kill()
        await asyncio.wait_for(self.process.wait(), WAIT)


async def wait_until_lapsed(path: Path, session_id: str) -> None:
    """Wait until the claim on ``session_id`` has expired (its holder is dead: nobody renews
    it), or is gone."""
    db = watch_database(path)
    try:

        def lapsed() -> bool:
            lease = lease_of(db, session_id)
            return lease is None or lease[1] < time.time()

        await until(lapsed, f"the claim on {session_id} never lapsed", WAIT)
    finally:
        db.close()


async def test_claims_are_exclusive_across_processes(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    try:
        await store.create_session(SessionRecord(id="s"))
        children = [await Child.start("worker", url, "s", name, "4") for name in "abc"]
        try:
            for worker in children:
                code, err = await worker.finish()
                assert code == 0, err
        finally:
            for worker in children:
                await worker.close()
        history = [m.text for m in await store.load_messages("s")]
        assert len(history) == 24
        for start, end in zip(history[::2], history[1::2], strict=True):
            assert start.startswith("start ") and end == "end " + start.removeprefix("start ")
    finally:
        await store.close()


async def test_waiters_in_other_processes_are_served_in_order(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db"
    store = await open_sqlite(url)
    children: list[Child] = []
    try:
        await store.create_session(SessionRecord(id="s"))
        assert await store.claim_session("s", "parent")
        for name in ("b", "c"):
            children.append(await Child.start("waiter", url, "s", name))
            await wait_for_waiter(tmp_path / "x.db", name, WAIT)
        assert not await store.claim_session("s", "late", wait=False)
        await store.release_session("s", "parent")
        for waiter in children:
            code, err = await waiter.finish()
            assert code == 0, err
        assert [m.text for m in await store.load_messages("s")] == ["b", "c"]
    finally:
        for waiter in children:
            await waiter.close()
        await store.close()


async def test_a_dead_holders_claim_is_recovered(tmp_path: Path) -> None:
    # After its expiry at the latest (sooner where the store can tell the holder is gone).
    url = f"sqlite://{tmp_path}/x.db?lease_ttl=0.5"
    store = await open_sqlite(url)
    holder = None
    try:
        await store.create_session(SessionRecord(id="s"))
        await store.append_messages("s", [text("user", "run a command")])
        holder = await Child.start("holder", url, "s")
        await holder.expect("held")
        await holder.finish(kill=True)
        assert await store.claim_session("s", "next", timeout=WAIT)
        run = await store.get_run("run-dead")
        assert run.status == "interrupted" and run.finished_at is not None
        assert "stopped" in (run.error or "")
        history = await store.load_messages("s")
        assert check_history(history) == []
        (result,) = history[-1].content
        assert isinstance(result, ToolResultBlock)
        assert result.tool_use_id == "toolu_dead" and result.is_error
        assert "interrupted" in result.content
    finally:
        if holder is not None:
            await holder.close()
        await store.close()


async def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    url = f"sqlite://{path}?lease_ttl=0.3"
    acknowledged: dict[tuple[str, int], str] = {}
    for _ in range(4):
        worker = await Child.start("workload", url)
        try:
            await worker.expect("ready")
            # Killed once it has acknowledged a random number of writes (never too few to test;
            # 600 is about what it acknowledges in its first quarter of a second).
            code, err = await worker.kill_after_acks(rng.randint(10, 600))
            assert code == -signal.SIGKILL, err
        finally:
            await worker.close()
        for line in worker.lines:
            if line.startswith("ack ") and line.endswith("\n"):  # whole lines only
                _, session_id, count, hashed = line.split()
                acknowledged[session_id, int(count)] = hashed

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()
    store = await open_sqlite(url)
    try:
        histories = {s: await store.load_messages(s) for s in {s for s, _ in acknowledged}}
        for (session_id, written), hashed in acknowledged.items():
            history = histories[session_id]
            assert len(history) >= written, (session_id, written, seed)
            assert digest(history[written - 1]) == hashed, (session_id, written, seed)
        assert len(histories["batches"]) % 3 == 0  # appends are all or nothing
        runtime, agent = make_runtime(), crash_agent()
        for n in range(3):
            session = Session(agent=agent, store=store, id=f"crash-{n}", runtime=runtime)
            result = await asyncio.wait_for(session.run("after the crash"), WAIT)
            assert check_history(session.history) == [], seed
            assert result.stop_reason == "end_turn"
            assert check_history(await store.load_messages(session.id)) == [], seed
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    finally:
        db.close()
    print(f"seed {seed}: {len(acknowledged)} acknowledged writes, runs {statuses}")
    assert "running" not in statuses, (statuses, seed)
    assert statuses.get("interrupted", 0) >= 1, (statuses, seed)


async def test_resume_after_a_lapsed_claim_repairs_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/x.db?lease_ttl=0.2"
    store = await open_sqlite(url)
    holder = None
    try:
        await store.create_session(SessionRecord(id="s"))
        await store.append_messages("s", [text("user", "run a command")])
        holder = await Child.start("holder", url, "s")
        await holder.expect("held")
        await holder.finish(kill=True)
        await wait_until_lapsed(tmp_path / "x.db", "s")
        session = await Session.resume(store, "s", agent=crash_agent(), runtime=make_runtime())
        assert check_history(await store.load_messages("s")) == []
        assert check_history(session.history) == []
    finally:
        if holder is not None:
            await holder.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:]))
