"""The provider conformance suite, run against a scriptable fake HTTP server.

A provider plugin proves it behaves like every other provider by running the shared
scenarios against a fake of its API: plain text; text then a tool call whose input arrives
in many pieces; several tool calls in one turn; a 429 with ``Retry-After``, then success;
an overloaded answer, then success; retries running out; a 401; a 400 with the API's own
message; an error reported mid-stream; the connection dropped mid-stream; a malformed
chunk; broken tool-input JSON; a ``max_tokens`` stop; the output schema sent; closing a run
early closes the connection; the calls of a session reuse one connection (kept alive), and
``aclose()`` closes it; one provider serves several event loops in turn (``run_sync``), each
loop's connection closed when the loop ends. Each runs a real :class:`~wingspan.Session` and
checks the events, the :class:`~wingspan.Result`, the history and what reached the server.

To run it, subclass :class:`ProviderConformance` in a test module and say how your API
encodes a scripted turn (:meth:`~ProviderConformance.reply`) and an error
(:meth:`~ProviderConformance.error_reply`, :meth:`~ProviderConformance.error_mid_stream`),
and how to build your provider for a base URL::

    class TestMyProviderConformance(ProviderConformance):
        provider_name = "mine"
        malformed_chunk = b"data: {not json\\n\\n"

        def make_provider(self, base_url, *, max_retries):
            return my_plugin.make_provider({"base_url": base_url, "max_retries": max_retries,
                                            "retry_base_delay": 0.01, "api_key": "k"})

        def reply(self, turn):
            return Reply.stream([encode(event) for event in my_events(turn)])
        ...

The tests are plain synchronous methods (each runs its own event loop), so they need no
pytest plugin; the server binds 127.0.0.1 on a free port and every wait is bounded.
The server (:class:`FakeServer`, :class:`Reply`, :class:`Pause`, :data:`DROP`,
:class:`RecordedRequest`, :func:`serve_in_thread`) is its neighbour in the kit; both are
reached as :mod:`wingspan.testing`.
This module needs only the standard library and wingspan; pytest is imported when a
scenario is skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..agent import Agent
from ..errors import ProviderError
from ..history import check_history
from ..providers import Provider
from ..runtime import Runtime, Settings
from ..session import Session
from ..tools import tool
from ..types import (
    ContentBlockStart,
    ContentBlockStop,
    Done,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    Result,
    StreamEvent,
    TextDelta,
    ToolResultBlock,
    ToolResultEvent,
    ToolUseBlock,
    ToolUseStart,
    Usage,
)
from ._fake_server import (
    FakeServer,
    Pause,
    RecordedRequest,
    Reply,
    serve_in_thread,
)

__all__ = ["ProviderConformance", "ScriptedToolCall", "ScriptedTurn", "assert_stream_shape"]

T = TypeVar("T")
#: The longest any scenario may take, and the longest wait on any one thing.
SCENARIO_TIMEOUT = 30.0


# --- scripted turns ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScriptedToolCall:
    """A tool call the fake model makes. ``arguments`` is the input JSON exactly as the
    model writes it (possibly broken)."""

    id: str
    name: str
    arguments: str

    @classmethod
    def of(cls, id: str, name: str, input: dict[str, Any]) -> ScriptedToolCall:
        return cls(id=id, name=name, arguments=json.dumps(input))

    @property
    def input(self) -> Any:
        """The arguments decoded (for APIs that send objects, not text)."""
        return json.loads(self.arguments)


@dataclasses.dataclass(frozen=True)
class ScriptedTurn:
    """One assistant turn the fake API streams: text, then tool calls.

    :ivar pieces: how many deltas each text and each tool's arguments are split into.
    :ivar stop_reason: the kernel's stop reason; encode it in your API's terms.
    """

    text: str = ""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    stop_reason: str = ""
    usage: Usage = dataclasses.field(
        default_factory=lambda: Usage(input_tokens=21, output_tokens=13))
    pieces: int = 4

    def __post_init__(self) -> None:
        if not self.stop_reason:
            object.__setattr__(self, "stop_reason",
                               "tool_use" if self.tool_calls else "end_turn")

    def text_pieces(self) -> list[str]:
        return split(self.text, self.pieces)

    def argument_pieces(self, call: ScriptedToolCall) -> list[str]:
        return split(call.arguments, self.pieces)


def split(text: str, pieces: int) -> list[str]:
    """``text`` in about ``pieces`` consecutive parts (none empty)."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(pieces, 1)))
    return [text[i:i + size] for i in range(0, len(text), size)]


# --- checks -------------------------------------------------------------------------------------


def assert_stream_shape(events: Sequence[StreamEvent]) -> None:
    """Check one run's events have the shape every provider must give: per model call
    ``message_start``, blocks numbered from 0 each with start, deltas of its own kind and
    stop, then ``message_delta`` and ``message_stop``; tool results between calls; ``done``
    last. ``ping`` may come anywhere. :raises AssertionError: saying where it breaks."""
    in_call = False
    open_block: int | None = None
    open_kind: type | None = None
    next_index = 0
    saw_delta = False
    for position, event in enumerate(events):
        where = f"event {position} ({type(event).__name__})"
        if type(event) is Ping:
            continue
        if type(event) is MessageStart:
            assert not in_call, f"{where}: a model call started inside another"
            in_call, next_index, saw_delta = True, 0, False
        elif type(event) is ContentBlockStart:
            assert in_call and not saw_delta, f"{where}: a block outside a model call"
            assert open_block is None, f"{where}: block {open_block} is still open"
            assert event.index == next_index, f"{where}: index {event.index}, not {next_index}"
            open_block, next_index = event.index, next_index + 1
            open_kind = TextDelta if type(event.content_block) is not ToolUseStart else (
                InputJsonDelta)
        elif type(event) in (TextDelta, InputJsonDelta):
            assert open_block == event.index, (  # type: ignore[union-attr]
                f"{where}: a delta for block {event.index} while "  # type: ignore[union-attr]
                f"{open_block} is open"
            )
            assert type(event) is open_kind, f"{where}: the wrong kind of delta for its block"
        elif type(event) is ContentBlockStop:
            assert open_block == event.index, f"{where}: stops {event.index}, open {open_block}"
            open_block = None
        elif type(event) is MessageDelta:
            assert in_call and open_block is None, f"{where}: message_delta with a block open"
            saw_delta = True
        elif type(event) is MessageStop:
            assert in_call and saw_delta, f"{where}: message_stop without its message_delta"
            in_call = False
        elif type(event) is ToolResultEvent:
            assert not in_call, f"{where}: a tool result inside a model call"
        elif type(event) is Done:
            assert not in_call and position == len(events) - 1, f"{where}: done is not last"
        else:
            raise AssertionError(f"{where}: an event no provider should yield")
    assert not in_call, "the last model call never stopped"


@tool
def add(a: int, b: int) -> str:
    """Add two integers.

    :param a: the first number.
    :param b: the second number.
    """
    return str(a + b)


@tool
def echo(text: str) -> str:
    """Repeat the text.

    :param text: what to repeat.
    """
    return text


INSTRUCTIONS = "You are the conformance model. Answer briefly."
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"conformance_answer": {"type": "string"}},
    "required": ["conformance_answer"],
    "additionalProperties": False,
}


# --- the suite ----------------------------------------------------------------------------------


class ProviderConformance:
    """The shared provider scenarios. Subclass it (the subclass's name must start with
    ``Test`` for pytest) and fill in the attributes and methods below."""

    #: the provider's registered name: every error message must contain it.
    provider_name: str = ""
    #: the status the API answers when overloaded (Anthropic: 529).
    overloaded_status: int = 503
    #: whether tool-call ids come from the API (else the provider makes them up).
    server_assigns_tool_ids: bool = True
    #: whether the API carries tool input as JSON text (so it can arrive broken).
    tool_arguments_are_text: bool = True
    #: whether tool input streams in several deltas (some APIs send it whole).
    streams_tool_arguments: bool = True
    #: a chunk of the wire format that does not parse, inserted mid-stream.
    malformed_chunk: bytes = b""
    #: whether the provider keeps a connection alive between calls (a new TCP connection,
    #: and TLS handshake, per call costs every call that much before its first event).
    reuses_connections: bool = True
    #: the runtime sessions use (default: an isolated one without ambient plugins).
    runtime: Runtime | None = None

    # --- what a subclass provides ---------------------------------------------------------------

    def make_provider(self, base_url: str, *, max_retries: int) -> Provider:
        """The provider under test, talking to ``base_url``, retrying at most
        ``max_retries`` times with delays short enough for tests (a few ms)."""
        raise NotImplementedError

    def reply(self, turn: ScriptedTurn) -> Reply:
        """The API's streamed answer for ``turn``, one event per chunk."""
        raise NotImplementedError

    def error_reply(self, status: int, message: str,
                    headers: Iterable[tuple[str, str]] = ()) -> Reply:
        """The API's error response: ``status``, its error body with ``message``."""
        raise NotImplementedError

    def error_mid_stream(self, turn: ScriptedTurn, message: str) -> Reply:
        """A stream that starts answering ``turn``, then reports an error with ``message``
        the way the API does inside a stream."""
        raise NotImplementedError

    # --- helpers ----------------------------------------------------------------------------------

    def run_async(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT)

        return asyncio.run(bounded())

    def agent(self, provider: Provider, **fields: Any) -> Agent:
        return Agent(name="conformance", provider=provider, instructions=INSTRUCTIONS,
                     tools=[add, echo], **fields)

    def session(self, agent: Agent) -> Session:
        runtime = self.runtime or Runtime.from_settings(Settings(autoload=False))
        return Session(agent=agent, runtime=runtime)

    async def collect(self, session: Session, message: str) -> tuple[list[StreamEvent], Result]:
        events: list[StreamEvent] = []
        async with session.stream(message) as run:
            async for event in run:
                events.append(event)
        assert_stream_shape(events)
        return events, run.result

    async def failing(self, session: Session, message: str) -> tuple[list[StreamEvent],
                                                                        ProviderError]:
        events: list[StreamEvent] = []
        try:
            async with session.stream(message) as run:
                async for event in run:
                    events.append(event)
        except ProviderError as exc:
            error = exc
        else:
            raise AssertionError(f"the run should fail with a ProviderError; got {run.result}")
        assert self.provider_name in str(error), f"{error!s} does not name the provider"
        assert not check_history(session.history), check_history(session.history)
        return events, error

    def contains(self, request: RecordedRequest, *needles: str) -> None:
        body = request.body.decode()
        for needle in needles:
            assert json.dumps(needle)[1:-1] in body, f"{needle!r} is not in the request {body}"

    # --- scenarios --------------------------------------------------------------------------------

    def test_plain_text(self) -> None:
        turn = ScriptedTurn(text="Hello there, this is a plain answer.", pieces=5)

        async def scenario() -> None:
            async with FakeServer([self.reply(turn)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                events, result = await self.collect(session, "Say hello, please")
            assert result.response == turn.text
            assert result.stop_reason == "end_turn"
            assert result.steps == 1
            assert result.usage == turn.usage
            assert sum(type(e) is TextDelta for e in events) >= 2, "text was not streamed"
            assert len(server.requests) == 1
            self.contains(server.requests[0], "Say hello, please", INSTRUCTIONS, "add", "echo")
            assert [m.role for m in session.history] == ["user", "assistant"]

        self.run_async(scenario)

    def test_text_then_tool_call_with_input_in_many_deltas(self) -> None:
        call = ScriptedToolCall.of("toolu_conf_01", "add", {"a": 2, "b": 40})
        first = ScriptedTurn(text="Let me add those.", tool_calls=(call,), pieces=9)
        second = ScriptedTurn(text="The sum is 42.", usage=Usage(input_tokens=30,
                                                                  output_tokens=5))

        async def scenario() -> None:
            async with FakeServer([self.reply(first), self.reply(second)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                events, result = await self.collect(session, "What is 2 + 40?")
            assert result.response == "The sum is 42."
            assert result.steps == 2
            assert result.usage == first.usage + second.usage
            [done] = result.tool_calls
            assert (done.tool_name, dict(done.input), done.output, done.is_error) == (
                "add", {"a": 2, "b": 40}, "42", False)
            if self.server_assigns_tool_ids:
                assert done.id == call.id
            if self.streams_tool_arguments:
                assert sum(type(e) is InputJsonDelta for e in events) >= 2
            assert [m.role for m in session.history] == ["user", "assistant", "user",
                                                          "assistant"]
            assert session.history[1].text == "Let me add those."
            assert len(server.requests) == 2
            self.contains(server.requests[1], "What is 2 + 40?", "Let me add those.", done.id,
                          "42")

        self.run_async(scenario)

    def test_several_tool_calls_in_one_turn(self) -> None:
        calls = (
            ScriptedToolCall.of("toolu_conf_a", "add", {"a": 1, "b": 2}),
            ScriptedToolCall.of("toolu_conf_b", "echo", {"text": "hi there"}),
            ScriptedToolCall.of("toolu_conf_c", "add", {"a": 3, "b": 4}),
        )
        first = ScriptedTurn(tool_calls=calls)
        second = ScriptedTurn(text="3, hi there and 7.")

        async def scenario() -> None:
            async with FakeServer([self.reply(first), self.reply(second)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                _, result = await self.collect(session, "Do three things")
            outputs = [(c.tool_name, c.output, c.is_error) for c in result.tool_calls]
            assert outputs == [("add", "3", False), ("echo", "hi there", False),
                               ("add", "7", False)]
            ids = [c.id for c in result.tool_calls]
            assert len(set(ids)) == 3
            if self.server_assigns_tool_ids:
                assert ids == [c.id for c in calls]
            results = session.history[2].content
            assert [b.tool_use_id for b in results if type(b) is ToolResultBlock] == ids
            self.contains(server.requests[1], *ids, "hi there")

        self.run_async(scenario)

    def test_rate_limited_with_retry_after_then_success(self) -> None:
        turn = ScriptedTurn(text="Answered after a retry.")

        async def scenario() -> None:
            replies = [self.error_reply(429, "rate limit reached", [("retry-after", "0")]),
                       self.reply(turn)]
            async with FakeServer(replies) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                started = time.monotonic()
                _, result = await self.collect(session, "hi")
            assert result.response == turn.text
            assert len(server.requests) == 2
            assert server.requests[0].body == server.requests[1].body
            assert time.monotonic() - started < 5, "Retry-After: 0 was not honoured"

        self.run_async(scenario)

    def test_overloaded_then_success(self) -> None:
        turn = ScriptedTurn(text="Answered after the overload.")

        async def scenario() -> None:
            replies = [self.error_reply(self.overloaded_status, "overloaded"),
                       self.error_reply(503, "service unavailable"), self.reply(turn)]
            async with FakeServer(replies) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                _, result = await self.collect(session, "hi")
            assert result.response == turn.text
            assert len(server.requests) == 3

        self.run_async(scenario)

    def test_retries_run_out(self) -> None:
        async def scenario() -> None:
            replies = [self.error_reply(503, "service unavailable")] * 5
            async with FakeServer(replies) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=2)))
                _, error = await self.failing(session, "hi")
            assert len(server.requests) == 3
            assert error.status == 503 and error.retryable

        self.run_async(scenario)

    def test_authentication_failure_is_not_retried_and_history_stays_valid(self) -> None:
        turn = ScriptedTurn(text="Now it works.")

        async def scenario() -> None:
            replies = [self.error_reply(401, "invalid api key"), self.reply(turn)]
            async with FakeServer(replies) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                _, error = await self.failing(session, "first try")
                assert len(server.requests) == 1
                assert error.status == 401 and not error.retryable
                assert "401" in str(error)
                assert [m.role for m in session.history] == ["user"]
                _, result = await self.collect(session, "second try")
            assert result.response == turn.text
            self.contains(server.requests[1], "first try", "second try")

        self.run_async(scenario)

    def test_bad_request_carries_the_api_message(self) -> None:
        async def scenario() -> None:
            message = "messages.0.content: the conformance field is invalid"
            async with FakeServer([self.error_reply(400, message)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                _, error = await self.failing(session, "hi")
            assert message in str(error)
            assert error.status == 400 and not error.retryable
            assert len(server.requests) == 1

        self.run_async(scenario)

    def test_error_reported_mid_stream(self) -> None:
        turn = ScriptedTurn(text="This answer will not finish.")

        async def scenario() -> None:
            reply = self.error_mid_stream(turn, "the conformance server is overloaded")
            async with FakeServer([reply]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                events, error = await self.failing(session, "hi")
            assert "the conformance server is overloaded" in str(error)
            assert any(type(e) is MessageStart for e in events)
            assert len(server.requests) == 1, "a stream that began must not be retried"
            assert [m.role for m in session.history] == ["user"]

        self.run_async(scenario)

    def test_connection_dropped_mid_stream(self) -> None:
        turn = ScriptedTurn(text="This answer is cut off halfway through.", pieces=6)

        async def scenario() -> None:
            async with FakeServer([self.reply(turn).cut()]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                _, error = await self.failing(session, "hi")
            assert len(server.requests) == 1, "a stream that began must not be retried"
            assert [m.role for m in session.history] == ["user"]
            assert str(error)

        self.run_async(scenario)

    def test_stream_ending_early_without_a_protocol_error(self) -> None:
        turn = ScriptedTurn(text="This answer ends early, cleanly.", pieces=6)

        async def scenario() -> None:
            async with FakeServer([self.reply(turn).cut(then=())]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                await self.failing(session, "hi")
            assert len(server.requests) == 1

        self.run_async(scenario)

    def test_malformed_chunk(self) -> None:
        assert self.malformed_chunk, "set malformed_chunk to a chunk your API would not send"
        turn = ScriptedTurn(text="Something garbled follows.", pieces=4)

        async def scenario() -> None:
            reply = self.reply(turn).insert(self.malformed_chunk)
            async with FakeServer([reply]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=3)))
                _, error = await self.failing(session, "hi")
            assert len(server.requests) == 1
            assert not error.retryable or error.status is None

        self.run_async(scenario)

    def test_broken_tool_input_becomes_an_error_result(self) -> None:
        if not self.tool_arguments_are_text:
            _skip("the API sends tool input as JSON objects; it cannot arrive broken")
        call = ScriptedToolCall(id="toolu_conf_broken", name="add", arguments='{"a": 1, "b":')
        first = ScriptedTurn(tool_calls=(call,))
        second = ScriptedTurn(text="Sorry, I will fix that.")

        async def scenario() -> None:
            async with FakeServer([self.reply(first), self.reply(second)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                _, result = await self.collect(session, "Add something")
            [done] = result.tool_calls
            assert done.is_error and "JSON" in done.output
            use = session.history[1].content[0]
            assert type(use) is ToolUseBlock and use.input == {}
            assert result.response == second.text
            assert len(server.requests) == 2

        self.run_async(scenario)

    def test_max_tokens_stop_reason(self) -> None:
        turn = ScriptedTurn(text="This answer ran out of", stop_reason="max_tokens")

        async def scenario() -> None:
            async with FakeServer([self.reply(turn)]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                _, result = await self.collect(session, "Write a lot")
            assert result.stop_reason == "max_tokens"
            assert result.response == turn.text

        self.run_async(scenario)

    def test_output_schema_is_sent(self) -> None:
        turn = ScriptedTurn(text='{"conformance_answer": "yes"}')

        async def scenario() -> None:
            async with FakeServer([self.reply(turn)]) as server:
                agent = self.agent(self.make_provider(server.base_url, max_retries=0),
                                   output_schema=OUTPUT_SCHEMA)
                _, result = await self.collect(self.session(agent), "Answer in JSON")
            assert json.loads(result.response) == {"conformance_answer": "yes"}
            self.contains(server.requests[0], "conformance_answer")

        self.run_async(scenario)

    def test_closing_a_run_early_closes_the_connection(self) -> None:
        turn = ScriptedTurn(text="A long answer that the caller stops reading.", pieces=6)

        async def scenario() -> None:
            reply = self.reply(turn)
            reply = reply.cut(2, then=(Pause(SCENARIO_TIMEOUT),))
            async with FakeServer([reply]) as server:
                session = self.session(self.agent(self.make_provider(server.base_url,
                                                                     max_retries=0)))
                run = session.stream("hi")
                async for event in run:
                    if type(event) is MessageStart:
                        break
                await run.aclose()
                await asyncio.wait_for(server.disconnected.wait(), 5)
            assert not check_history(session.history)

        self.run_async(scenario)


    def test_calls_reuse_one_connection(self) -> None:
        if not self.reuses_connections:
            _skip("the provider opens a connection per call")
        call = ScriptedToolCall.of("toolu_conf_reuse", "add", {"a": 1, "b": 2})
        turns = [ScriptedTurn(text="Adding.", tool_calls=(call,)), ScriptedTurn(text="3."),
                 ScriptedTurn(text="Again: 3.")]

        async def scenario() -> None:
            async with FakeServer([self.reply(turn) for turn in turns]) as server:
                provider = self.make_provider(server.base_url, max_retries=0)
                session = self.session(self.agent(provider))
                _, first = await self.collect(session, "Add 1 and 2")
                _, second = await self.collect(session, "Once more")
                assert (first.response, second.response) == ("3.", "Again: 3.")
                assert len(server.requests) == 3
                assert server.connections == 1, (
                    f"{server.connections} TCP connections for 3 calls of one provider: keep "
                    "one client (connection pool) per provider instance")
                aclose = getattr(provider, "aclose", None)
                if aclose is not None:
                    await aclose()
                    await server.wait_for_open_connections(0, SCENARIO_TIMEOUT)

        self.run_async(scenario)

    def test_one_provider_serves_several_event_loops(self) -> None:
        if not self.reuses_connections:
            _skip("the provider opens a connection per call")
        turns = [ScriptedTurn(text="From the first loop."),
                 ScriptedTurn(text="From the second loop.")]
        with serve_in_thread([self.reply(turn) for turn in turns]) as thread:
            provider = self.make_provider(thread.server.base_url, max_retries=0)
            session = self.session(self.agent(provider))
            # run_sync: a new event loop each time, closed when the run ends
            assert session.run_sync("first").response == turns[0].text
            assert session.run_sync("second").response == turns[1].text
            # the first loop's client was replaced, not reused; each loop's connection was
            # closed with its loop (not left to the garbage collector)
            thread.run(lambda: thread.server.wait_for_open_connections(0, SCENARIO_TIMEOUT),
                       SCENARIO_TIMEOUT + 1)
            assert thread.server.connections == 2
            assert not check_history(session.history)


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)
