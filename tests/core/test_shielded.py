"""``wingspan.runs.shielded``: a clean-up step finishes whatever cancels its caller, and one
that never waits (a store write committed on the event loop) runs without a task."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from wingspan.runs import shielded

WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


async def test_a_coroutine_that_never_waits_runs_in_the_callers_task() -> None:
    async def write() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    assert await shielded(write()) is asyncio.current_task()


async def test_an_error_before_any_wait_is_the_callers() -> None:
    async def write() -> None:
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        await shielded(write())


async def test_a_coroutine_that_waits_goes_on_in_a_task_of_its_own() -> None:
    steps: list[str] = []

    async def write() -> int:
        steps.append("first")
        await asyncio.sleep(0)
        steps.append("after a bare turn")
        await asyncio.sleep(0.01)
        steps.append("after a timer")
        return 7

    assert await shielded(write()) == 7
    assert steps == ["first", "after a bare turn", "after a timer"]


async def test_a_cancelled_caller_waits_for_the_write_then_is_cancelled() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def write() -> None:
        await release.wait()
        done.append("stored")

    caller = asyncio.ensure_future(shielded(write()))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    assert not caller.done()  # the write goes on
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["stored"]


async def test_the_writes_errors_reach_the_caller_after_it_waited() -> None:
    async def write() -> None:
        await asyncio.sleep(0)
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        await shielded(write())


async def test_a_failed_future_awaited_inside_raises_inside() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def write() -> str:
        try:
            await future
        except LookupError as exc:
            return f"handled {exc}"
        return "not raised"

    caller = asyncio.ensure_future(shielded(write()))
    await asyncio.sleep(0)
    future.set_exception(LookupError("missing"))
    assert await caller == "handled missing"


async def cancel_the_rest(*, first_wait: bool) -> list[str]:
    """Shield a write, then cancel the task that goes on with it once the write waits (as
    the loop shutting down cancels every task) — before that task's first step, or, with
    ``first_wait``, after it (the write waited once already): what the write saw."""
    seen: list[str] = []
    waiting = asyncio.Event()

    async def write() -> None:
        if first_wait:
            await asyncio.sleep(0)
        waiting.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    caller = asyncio.ensure_future(shielded(write()))
    await waiting.wait()
    (rest,) = [t for t in asyncio.all_tasks() if t is not caller and not t.done()
               and t is not asyncio.current_task()]
    assert "write" in repr(rest)
    rest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    return seen


async def test_cancelling_the_rest_of_the_write_reaches_the_coroutine() -> None:
    assert await cancel_the_rest(first_wait=False) == ["cancelled"]


async def test_cancelling_the_rest_once_it_runs_reaches_the_coroutine_too() -> None:
    assert await cancel_the_rest(first_wait=True) == ["cancelled"]


async def test_the_rest_can_be_awaited_as_a_coroutine() -> None:
    """What a task is handed is a whole coroutine: awaited directly, it goes on too."""
    from wingspan.runs import _Resumed

    async def write() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return "stored"

    coro = write()
    assert await _Resumed(coro, coro.send(None)) == "stored"


async def test_the_first_stretch_sees_the_callers_context() -> None:
    async def write() -> str:
        first = WHERE.get()
        await asyncio.sleep(0)
        return f"{first}, then {WHERE.get()}"

    WHERE.set("caller")
    assert await shielded(write()) == "caller, then caller"


async def test_a_future_is_shielded_as_before() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_result, "ok")
    assert await shielded(future) == "ok"
