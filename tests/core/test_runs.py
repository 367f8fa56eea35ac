"""Runs in the kernel: admission, the event log, handles, idempotency, ``if_busy`` and aborts
(on the memory store; the SQLite store's own tests cover several processes)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import wingspan
from wingspan import (
    Agent,
    ConfigError,
    ConflictError,
    Done,
    ErrorEvent,
    LoggedEvent,
    Message,
    MessageStop,
    Resync,
    RunFinished,
    RunQueued,
    RunStarted,
    Session,
    Store,
    StoreError,
    check_history,
    utc_now,
)
from wingspan.runs import ABORT_POLL, RunFailed, RunHandle, follow, one_by_one
from wingspan.testing import make_runtime, scripted

WAIT = 10  # seconds: every wait is bounded


@wingspan.tool
async def nap(seconds: float) -> str:
    """Sleep.

    :param seconds: how long
    """
    await asyncio.sleep(seconds)
    return "rested"


@pytest.fixture
def runtime() -> wingspan.Runtime:
    return make_runtime()


@pytest.fixture
async def store(runtime: wingspan.Runtime) -> Any:
    opened = await runtime.open_store("memory://")
    yield opened
    await opened.close()


def agent_for(runtime: wingspan.Runtime, script: Any) -> Agent:
    return Agent(name="a", provider=scripted(script, runtime=runtime), tools=[nap])


NAP = [[{"name": "nap", "input": {"seconds": 30}}], "done"]


async def log_of(store: Store, session_id: str) -> list[LoggedEvent]:
    return await store.read_events(session_id)


async def test_a_stored_run_logs_every_event_it_streams_numbered_from_one(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, ["hello there"]), store=store, runtime=runtime)
    async with session.stream("hi") as run:
        streamed = [event async for event in run]
    logged = await log_of(store, session.id)
    assert [entry.seq for entry in logged] == list(range(1, len(logged) + 1))
    assert {entry.run_id for entry in logged} == {run.run_id}
    events = [entry.event for entry in logged]
    assert events[:2] == [RunQueued(run_id=run.run_id), RunStarted(run_id=run.run_id)]
    assert events[2:-1] == streamed  # the terminal done included, in order
    assert events[-1] == RunFinished(run_id=run.run_id, status="completed")
    record = await store.get_run(run.run_id)
    assert (record.status, record.first_seq, record.last_seq) == ("completed", 1, len(logged))
    assert (await store.get_session(session.id)).last_seq == len(logged)


async def test_start_admits_at_once_and_the_handle_follows_and_awaits_the_run(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, ["one", "two"]), store=store, runtime=runtime)
    first = await session.start("a")
    second = await session.start("b")
    # the first starts with its admission (its turn is now: one write); the second waits
    assert (first.record.status, second.record.status) == ("running", "queued")
    results = await asyncio.wait_for(asyncio.gather(first.result(), second.result()), WAIT)
    assert [r.run_id for r in results] == [first.id, second.id]
    replayed = [entry.event async for entry in second.events()]
    assert type(replayed[-2]) is Done and replayed[-1] == RunFinished(
        run_id=second.id, status="completed")
    # runs in admission order, never interleaved, in one log
    order = [(e.run_id, type(e.event).__name__) for e in await log_of(store, session.id)
             if type(e.event) in (RunStarted, RunFinished)]
    assert order == [(first.id, "RunStarted"), (first.id, "RunFinished"),
                     (second.id, "RunStarted"), (second.id, "RunFinished")]
    page = await store.list_runs(session.id)
    assert [run.id for run in page.items] == [second.id, first.id]


async def test_a_repeated_idempotency_key_is_the_first_run_and_never_runs_twice(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, ["once"]), store=store, runtime=runtime)
    first = await session.start("hello", idempotency_key="k-1", request_hash="h")
    again = await session.start("hello", idempotency_key="k-1", request_hash="h")
    assert again is first  # still running here: the same handle
    await asyncio.wait_for(first.result(), WAIT)
    later = await session.start("hello", idempotency_key="k-1", request_hash="h")
    assert later.id == first.id and not later.local
    assert (await asyncio.wait_for(later.result(), WAIT)).response == "once"
    with pytest.raises(ConflictError, match="k-1"):
        await session.start("other", idempotency_key="k-1", request_hash="other")
    history = await store.load_messages(session.id)
    assert [m.text for m in history if m.role == "user"] == ["hello"]


async def test_if_busy_reject_refuses_and_interrupt_aborts_the_run_ahead(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, NAP), store=store, runtime=runtime)
    busy = await session.start("nap")
    await _in_tool(busy)
    with pytest.raises(ConflictError, match="busy"):
        await session.start("again", if_busy="reject")
    quick = Session.from_record(await store.get_session(session.id),
                                agent=agent_for(runtime, ["right away"]), store=store,
                                runtime=runtime)
    interrupting = await quick.start("now", if_busy="interrupt")
    assert (await asyncio.wait_for(interrupting.result(), WAIT)).response == "right away"
    with pytest.raises(RunFailed) as failed:
        await asyncio.wait_for(busy.result(), WAIT)
    assert failed.value.error.code == "aborted"
    assert (await store.get_run(busy.id)).status == "aborted"
    check_history(await store.load_messages(session.id))


async def test_an_abort_through_the_store_stops_a_run_of_this_process_within_a_poll(
        runtime: wingspan.Runtime, store: Store) -> None:
    """What another process sharing the store does: ``abort_run`` sets a flag that the
    process running the run notices."""
    session = Session(agent=agent_for(runtime, NAP), store=store, runtime=runtime)
    handle = await session.start("nap")
    await _in_tool(handle)
    started = asyncio.get_running_loop().time()
    await store.abort_run(handle.id)
    with pytest.raises(RunFailed):
        await asyncio.wait_for(handle.result(), WAIT)
    assert asyncio.get_running_loop().time() - started < 1.0 + ABORT_POLL
    run = await store.get_run(handle.id)
    assert run.status == "aborted"
    history = await store.load_messages(session.id)
    check_history(history)
    assert history[-1].content[0].is_error  # the nap's result says it was cancelled
    logged = await log_of(store, session.id)
    assert type(logged[-2].event) is ErrorEvent and logged[-2].event.error.code == "aborted"


async def test_runs_abort_by_id_stops_a_queued_run_before_it_starts(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, NAP), store=store, runtime=runtime)
    ahead = await session.start("nap")
    queued = await session.start("later")
    record = await runtime.runs.abort(store, queued.id)
    assert record.status == "aborted"
    with pytest.raises(RunFailed):
        await asyncio.wait_for(queued.result(), WAIT)
    await runtime.runs.abort(store, ahead.id)
    assert (await store.get_run(ahead.id)).status == "aborted"
    user_turns = [m for m in await store.load_messages(session.id) if m.role == "user"
                  and m.text]
    assert [m.text for m in user_turns] == ["nap"]  # the queued message never ran
    with pytest.raises(ConflictError):
        await runtime.runs.abort(store, queued.id)
    after = Session.from_record(await store.get_session(session.id),
                                agent=agent_for(runtime, ["next"]), store=store, runtime=runtime)
    assert (await asyncio.wait_for(after.run("go on"), WAIT)).response == "next"  # not stuck


async def test_session_events_replay_after_a_seq_then_follow_live(
        runtime: wingspan.Runtime, store: Store) -> None:
    session = Session(agent=agent_for(runtime, ["first", "second"]), store=store,
                      runtime=runtime)
    await session.run("one")
    middle = (await store.get_session(session.id)).last_seq
    seen: list[LoggedEvent] = []

    async def watch() -> None:
        async for entry in session.events(after=middle - 1):
            seen.append(entry)
            if type(entry.event) is RunFinished and len(seen) > 1:
                return

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.05)
    await session.run("two")
    await asyncio.wait_for(watcher, WAIT)
    assert seen[0].seq == middle  # the first run's last event, then the second run live
    assert [e.seq for e in seen] == list(range(middle, middle + len(seen)))


async def test_a_failing_event_log_fails_the_run_and_releases_the_session(
        runtime: wingspan.Runtime, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a tool step: its turn is written with its events; a run's last turn goes with its end)
    session = Session(agent=agent_for(runtime, [[{"name": "nap", "input": {"seconds": 0}}],
                                                "text"]), store=store, runtime=runtime)
    await session.run("warm")  # stored

    async def full_disk(*args: Any, **kwargs: Any) -> int:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "append_events", full_disk)
    with pytest.raises(StoreError, match="event log"):
        await session.run("again")
    monkeypatch.undo()
    assert (await session.run("after")).response == "text"  # not stuck


async def test_a_last_turn_that_cannot_be_stored_fails_the_run(
        runtime: wingspan.Runtime, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's last turn is stored with its end: when that write fails, the caller gets the
    store's error, not an answer the history does not hold; the run is recorded failed
    (the second try, without the turn, works here) and the session goes on."""
    session = Session(agent=agent_for(runtime, ["text"]), store=store, runtime=runtime)
    await session.run("warm")
    finish = store.finish_run
    tries: list[int] = []

    async def full_disk_once(run: Any, events: Any = (), messages: Any = ()) -> Any:
        tries.append(len(messages))
        if messages:
            raise StoreError("disk full")
        return await finish(run, events, messages)

    monkeypatch.setattr(store, "finish_run", full_disk_once)
    handle = await session.start("again")
    with pytest.raises(StoreError, match="last turn could not be stored"):
        await asyncio.wait_for(handle.result(), WAIT)
    assert tries == [1, 0]
    record = await store.get_run(handle.id)
    assert record.status == "failed" and "last turn" in (record.error or "")
    monkeypatch.undo()
    assert (await session.run("after")).response == "text"  # not stuck
    history = await store.load_messages(session.id)
    assert [m.text for m in history] == ["warm", "text", "again", "after", "text"]
    check_history(history)


async def test_start_and_events_need_a_store(runtime: wingspan.Runtime) -> None:
    session = Session(agent=agent_for(runtime, ["x"]), runtime=runtime)
    with pytest.raises(ConfigError, match="needs a store"):
        await session.start("hi")
    with pytest.raises(ConfigError, match="needs a store"):
        session.events()


async def test_a_run_without_a_store_streams_as_before(runtime: wingspan.Runtime) -> None:
    session = Session(agent=agent_for(runtime, ["plain"]), runtime=runtime)
    result = await session.run("hi")
    assert result.response == "plain"
    assert [m.role for m in session.history] == ["user", "assistant"]
    assert isinstance(session.history[0], Message)


async def _in_tool(handle: RunHandle) -> None:
    """Wait (bounded) until the run has called its tool: its log says so."""
    async with asyncio.timeout(WAIT):
        async for entry in handle.events():
            if type(entry.event) is MessageStop:
                return


async def test_a_run_replay_from_a_pruned_range_begins_with_resync(
        runtime: wingspan.Runtime, store: Store) -> None:
    provider = scripted(["a long answer, in pieces"], runtime=runtime, chunk_size=2)
    session = Session(agent=Agent(name="a", provider=provider), store=store, runtime=runtime)
    handle = await session.start("hi")
    await handle.result()
    whole = await store.read_events(session.id, run_id=handle.id)
    deltas = [entry.seq for entry in whole if entry.event.type == "text_delta"]
    assert len(deltas) > 3
    assert await store.prune_events(before=utc_now() + timedelta(seconds=1)) == len(deltas)
    # the client had the first delta, then dropped: the next ones are gone
    replay = [entry async for entry in one_by_one(
        follow(store, session.id, after=deltas[0], run_id=handle.id))]
    kept = [entry for entry in whole if entry.seq > deltas[0] and entry.seq not in deltas]
    assert replay[0].event == Resync(next_seq=kept[0].seq)
    assert replay[0].seq == kept[0].seq - 1
    assert replay[1:] == kept


async def test_a_run_replay_across_another_runs_admission_is_no_resync(
        runtime: wingspan.Runtime, store: Store) -> None:
    """Seqs of other runs between a run's events are normal: only a pruned one of its own
    makes a resync."""
    going, go_on = asyncio.Event(), asyncio.Event()

    @wingspan.tool
    async def hold() -> str:
        """Wait."""
        going.set()
        await asyncio.wait_for(go_on.wait(), WAIT)
        return "held"

    provider = scripted([[{"name": "hold", "input": {}}], "first done", "second done"],
                        runtime=runtime)
    session = Session(agent=Agent(name="a", provider=provider, tools=[hold]), store=store,
                      runtime=runtime)
    first = await session.start("one")
    await asyncio.wait_for(going.wait(), WAIT)
    second = await session.start("two")  # its run_queued lands among the first run's events
    go_on.set()
    await first.result()
    await second.result()
    queued = second.record.first_seq
    assert queued is not None
    before = [entry.seq for entry in await store.read_events(session.id, run_id=first.id)
              if entry.seq < queued][-1]
    replay = [entry async for entry in one_by_one(
        follow(store, session.id, after=before, run_id=first.id))]
    assert replay[0].seq > queued
    assert all(type(entry.event) is not Resync for entry in replay)
    assert replay == await store.read_events(session.id, after=before, run_id=first.id)


async def test_a_run_that_completed_is_never_taken_for_an_aborted_one(
        runtime: wingspan.Runtime, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The abort watcher reads the run's record while the run is ending: the ``completed``
    the run just stored is not an abort (a blocking request got 409 when a poll came then)."""
    monkeypatch.setattr(wingspan.runs, "ABORT_POLL", 0)  # a poll on every turn of the loop
    session = Session(agent=agent_for(runtime, ["done"]), store=store, runtime=runtime)
    for message in ("one", "two", "three"):
        handle = await session.start(message)
        assert (await asyncio.wait_for(handle.result(), WAIT)).response == "done"
        assert (await store.get_run(handle.id)).status == "completed"


class Counting:
    """A store seen through a wrapper counting the calls of its methods."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await value(*args, **kwargs)

        return counted


async def test_a_run_whose_turn_is_now_starts_with_its_admission(
        runtime: wingspan.Runtime, store: Store) -> None:
    """Admission and start are one write when the session is idle: the run is stored
    ``running`` with its user message, and no ``start_run`` follows."""
    counting = Counting(store)
    session = Session(agent=agent_for(runtime, ["one", "two"]), store=counting,  # type: ignore[arg-type]
                      runtime=runtime)
    assert (await session.run("hi")).response == "one"
    assert "start_run" not in counting.calls and counting.calls.count("admit_run") == 1
    fresh = Session.from_record(await store.get_session(session.id),
                                agent=agent_for(runtime, ["two"]), store=counting,  # type: ignore[arg-type]
                                runtime=runtime)
    counting.calls.clear()
    handle = await fresh.start("again")  # a stored session: its history is loaded first
    assert handle.record.status == "running"
    assert (await asyncio.wait_for(handle.result(), WAIT)).response == "two"
    assert "start_run" not in counting.calls
    history = await store.load_messages(session.id)
    assert [m.text for m in history] == ["hi", "one", "again", "two"]
    events = [type(e.event) for e in await log_of(store, session.id) if e.run_id == handle.id]
    assert events[:2] == [RunQueued, RunStarted] and events[-1] is RunFinished


async def test_a_history_grown_elsewhere_is_reloaded_before_the_run_starts(
        runtime: wingspan.Runtime, store: Store) -> None:
    """This copy of the history is behind the store's (another process ran on the session):
    the admission does not start the run on it; the run starts as its turn comes, on the
    store's history, and nothing is lost or doubled."""
    here = Session(agent=agent_for(runtime, ["first"]), store=store, runtime=runtime)
    await here.run("one")
    elsewhere = Session.from_record(await store.get_session(here.id),
                                    agent=agent_for(runtime, ["second"]), store=store,
                                    runtime=runtime)
    await elsewhere.run("two")
    counting = Counting(store)
    here.store = counting  # type: ignore[assignment]
    assert (await here.run("three")).response == "first"
    assert "start_run" in counting.calls  # the store refused to start it on a stale history
    history = await store.load_messages(here.id)
    assert [m.text for m in history] == ["one", "first", "two", "second", "three", "first"]
    check_history(history)


async def test_a_run_cancelled_before_its_first_step_ends_and_frees_the_session(
        runtime: wingspan.Runtime, store: Store) -> None:
    """Started with its admission, a run whose task is cancelled before it ever ran (its
    loop never began, so nothing in it could end the run) is ended all the same: aborted,
    its claim given up for the runs after it."""
    session = Session(agent=agent_for(runtime, ["done"]), store=store, runtime=runtime)
    cancelled = await session.start("never")
    assert cancelled.record.status == "running"
    assert cancelled.task is not None
    cancelled.task.cancel()  # before its first step
    aborted = await session.start("nor this")
    await aborted.abort()  # the same, through the handle
    for handle in (cancelled, aborted):
        for _ in range(100):
            if (await store.get_run(handle.id)).status != "running":
                break
            await asyncio.sleep(0.01)
        assert (await store.get_run(handle.id)).status == "aborted"
    after = await session.start("then this")
    assert (await asyncio.wait_for(after.result(), WAIT)).response == "done"
    check_history(await store.load_messages(session.id))


class SlowLoads(Counting):
    """A store whose first history loads take longer to answer (a long history decoded in
    a thread, say) than the next: they answer what they read, late."""

    def __init__(self, store: Store, delays: list[float]) -> None:
        super().__init__(store)
        self._delays = delays

    async def load_messages(self, session_id: str) -> list[Message]:
        loaded = await self._store.load_messages(session_id)
        await asyncio.sleep(self._delays.pop(0) if self._delays else 0)
        return loaded


def echo(request: wingspan.InferenceRequest) -> str:
    return f"saw {request.messages[-1].text}"


async def test_admissions_made_at_once_on_a_stored_session_run_each_message_once(
        runtime: wingspan.Runtime, store: Store) -> None:
    """Several starts at once on a session object made from its record, each loading the
    history before it admits, the first load answering last: a run starts with its
    admission, the others wait their turn, and every run answers its own message (a late
    load must not replace the history a run started on)."""
    agent = Agent(name="echo", provider=scripted(echo, runtime=runtime))
    first = Session(agent=agent, store=store, runtime=runtime)
    await first.run("zero")
    slow = SlowLoads(store, [0.05])
    session = Session.from_record(await store.get_session(first.id), agent=agent,
                                  store=slow, runtime=runtime)  # type: ignore[arg-type]
    handles = await asyncio.gather(*(session.start(f"m{i}") for i in range(4)))
    assert any(h.record.status == "running" for h in handles)  # started with its admission
    await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), WAIT)
    history = await store.load_messages(first.id)
    check_history(history)
    pairs = [(history[i].text, history[i + 1].text) for i in range(0, len(history), 2)]
    assert all(answer == f"saw {said}" for said, answer in pairs), pairs
    assert sorted(said for said, _ in pairs) == ["m0", "m1", "m2", "m3", "zero"]


async def test_following_a_run_from_its_start_reads_no_earlier_event(
        runtime: wingspan.Runtime, store: Store) -> None:
    """A run's follower starts at the run's first event, not at the session's: with a long
    log before it, the first read is the run's, whatever came before."""
    session = Session(agent=agent_for(runtime, ["ok"]), store=store, runtime=runtime)
    for i in range(5):
        await session.run(f"earlier {i}")
    reads: list[int] = []
    original = store.read_events

    async def read_events(session_id: str, **kwargs: Any) -> list[LoggedEvent]:
        reads.append(kwargs.get("after", 0))
        return await original(session_id, **kwargs)

    store.read_events = read_events  # type: ignore[method-assign]
    handle = await session.start("now")
    replay = [entry async for entry in handle.events()]
    assert reads[0] == handle.record.first_seq - 1  # type: ignore[operator]
    assert replay[0].event == RunQueued(run_id=handle.id)
    assert replay[-1].event == RunFinished(run_id=handle.id, status="completed")


async def test_a_follower_whose_read_began_before_the_runs_end_reads_its_last_events(
        runtime: wingspan.Runtime, store: Store) -> None:
    """A store whose commits are not on the event loop's thread (PostgreSQL's) can answer a
    read begun before the run's last commit after the run's task is done: the follower then
    reads once more, and gets the run's own last events, not a stand-in terminal event."""
    session = Session(agent=agent_for(runtime, ["the answer"]), store=store, runtime=runtime)
    handle = await session.start("go")
    assert handle.task is not None
    original = store.read_events
    stale = True

    async def read_events(session_id: str, **kwargs: Any) -> list[LoggedEvent]:
        nonlocal stale
        if stale:  # the first read saw none of the run's events yet, and answers late
            stale = False
            await asyncio.wait_for(asyncio.shield(handle.task), WAIT)  # type: ignore[arg-type]
            return []
        return await original(session_id, **kwargs)

    store.read_events = read_events  # type: ignore[method-assign]
    followed = [entry async for entry in one_by_one(follow(
        store, session.id, after=0, run_id=handle.id, task=handle.task))]
    logged = [entry for entry in await original(session.id) if entry.run_id == handle.id]
    assert followed == logged  # each with its seq, the run's own done and run_finished
    assert type(followed[-2].event) is Done
