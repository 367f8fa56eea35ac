"""Failure paths of the loop: none leaves a session stuck (invariant 7), every request
alternates turns (invariant 6), and a stream dropped mid-run closes cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import Agent, Message, ProviderError, Session, TextBlock, check_history
from wingspan.testing import FakeServer, Pause, ScriptedTurn, make_runtime, scripted

from ..plugins.providers.fakes import OpenAIAPI

RUNTIME = make_runtime()


def roles_problem(messages: tuple[Message, ...]) -> str | None:
    """What a strict chat template (Gemma's) rejects in a request, or ``None``."""
    expected = "user"
    for position, message in enumerate(messages):
        if message.role != expected:
            return f"Conversation roles must alternate user/assistant/user/assistant/... " \
                   f"(message {position} is {message.role})"
        if not message.content:
            return f"message {position} is empty"
        expected = "assistant" if expected == "user" else "user"
    return None


class Alternating:
    """A provider wrapper that refuses, as llama.cpp with a strict template does, any
    request whose turns do not alternate; every refusal is kept in ``refused``."""

    def __init__(self, inner: wingspan.Provider) -> None:
        self.inner = inner
        self.refused: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str | None:
        return self.inner.model

    def stream(self, request: wingspan.InferenceRequest) -> Any:
        problem = roles_problem(request.messages)
        if problem is not None:
            self.refused.append(problem)
            raise ProviderError(problem)
        return self.inner.stream(request)


@wingspan.tool
def undecodable() -> str:
    """Lists a file whose name is not UTF-8, as os.listdir gives it."""
    return "caf\udce9.txt"


async def test_a_result_the_store_refuses_does_not_leave_the_session_stuck(
        tmp_path: Path) -> None:
    """A tool result the store cannot encode made the repair fail too, so the claim was
    never released: every later run on the session waited forever."""
    store = await RUNTIME.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        agent = Agent(name="a", provider=scripted([[{"name": "undecodable", "input": {}}],
                                                   "done"]), tools=[undecodable])
        session = Session(agent=agent, store=store, runtime=RUNTIME)
        first = session.stream("go")
        async with asyncio.timeout(10):
            try:
                async for _ in first:
                    pass
            except Exception:
                pass  # the result could not be stored: this run may fail, cleanly
        run = await store.get_run(first.run_id)
        assert run.status in ("completed", "failed") and run.finished_at is not None
        assert check_history(session.history) == []
        # the session is free, and the next run stores a history valid in the store too
        session.agent = Agent(name="a", provider=scripted(["fine"]))
        async with asyncio.timeout(10):
            assert (await session.run("again")).response == "fine"
        assert check_history(await store.load_messages(session.id)) == []
        assert await store.load_messages(session.id) == list(session.history)
        assert await store.claim_session(session.id, "someone", wait=False)
    finally:
        await store.close()


# --- invariant 6 ---------------------------------------------------------------------------


async def test_a_run_that_failed_before_the_model_answered_does_not_break_alternation(
        ) -> None:
    """A run failing before the model answers (context overflow) leaves a dangling user
    message; every later request then sent user, user, ... and a strict server rejected
    them all."""
    script: list[Any] = [{"error": "the request exceeds the context window"}]
    provider = Alternating(scripted(lambda request: script[0]))
    session = Session(agent=Agent(name="a", provider=provider), runtime=RUNTIME)
    with pytest.raises(ProviderError, match="context window"):
        await session.run("a long question")
    script[0] = "an answer"
    assert (await session.run("a shorter one")).response == "an answer"
    assert (await session.run("and another")).response == "an answer"
    assert provider.refused == []
    # the history is kept as it happened; only requests are merged
    assert [m.role for m in session.history] == ["user", "user", "assistant", "user",
                                                 "assistant"]


async def test_requests_alternate_whatever_the_history_holds() -> None:
    seen: list[tuple[Message, ...]] = []

    def answer(request: wingspan.InferenceRequest) -> str:
        seen.append(request.messages)
        return "ok"

    history = [
        Message(role="assistant", content=(TextBlock(text="Hello, I am your agent."),)),
        Message(role="user", content=(TextBlock(text="first"),)),
        Message(role="user", content=()),
        Message(role="user", content=(TextBlock(text="second"),)),
        Message(role="assistant", content=()),
    ]
    provider = Alternating(scripted(answer))
    session = Session(agent=Agent(name="a", provider=provider), history=history,
                      runtime=RUNTIME)
    assert (await session.run("third")).response == "ok"
    assert provider.refused == []
    (request,) = seen
    assert [m.role for m in request] == ["user", "assistant", "user"]
    assert request[2].content == (TextBlock(text="first\n\nsecond\n\nthird"),)
    assert request[1].text == "Hello, I am your agent."
    assert list(session.history[:5]) == history  # the history itself is never rewritten


# --- abandoning a stream ---------------------------------------------------------------------


def test_breaking_out_of_a_stream_closes_it_at_once_and_quietly() -> None:
    """``break`` out of ``async for event in session.stream(...)`` without ``async with``:
    the provider's HTTP stream is closed at once (the model stops generating), nothing is
    printed, and the history stays valid for the next run."""
    api = OpenAIAPI()
    problems: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context)))
        slow = api.reply(ScriptedTurn(text="one two three four five six", pieces=6))
        slow = slow.insert(Pause(30), at=3)
        async with FakeServer([slow, api.reply(ScriptedTurn(text="Fine."))]) as server:
            provider = RUNTIME.get_provider("openai", {
                "base_url": server.base_url, "api_key": "sk-test", "model": "m",
                "max_retries": 0})
            session = Session(agent=Agent(name="a", provider=provider), runtime=RUNTIME)
            async with asyncio.timeout(5):
                async for event in session.stream("talk"):
                    if type(event) is wingspan.TextDelta:
                        break
            async with asyncio.timeout(5):
                await server.disconnected.wait()
            async with asyncio.timeout(5):
                result = await session.run("again")
            assert result.response == "Fine."
            assert check_history(session.history) == []
            # the abandoned run stored no half-written answer: its message joins the next
            assert server.requests[1].json["messages"] == [
                {"role": "user", "content": "talk\n\nagain"}]
        gc.collect()
        await asyncio.sleep(0)

    logging.getLogger("asyncio").addHandler(handler := _Recorder(problems))
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert problems == []


class _Recorder(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())
