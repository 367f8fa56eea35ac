"""The anthropic provider against a fake Messages API: exactly what is sent, and how the
stream's events come back."""

from __future__ import annotations

import pytest

import wingspan
from wingspan import ConfigError, Ping, ProviderError, TextDelta
from wingspan.plugins import anthropic
from wingspan.testing import FakeServer, Reply, ScriptedToolCall, ScriptedTurn

from .fakes import AnthropicAPI, sse
from .helpers import FAST, add, echo, run

API = AnthropicAPI()
KEY = "sk-ant-api03-test"


def provider(runtime: wingspan.Runtime, server: FakeServer, **options: object
             ) -> wingspan.Provider:
    return runtime.get_provider("anthropic", {"base_url": server.base_url, "api_key": KEY,
                                              **FAST, **options})


async def test_requests_carry_system_tools_history_and_headers(
        runtime: wingspan.Runtime) -> None:
    call = ScriptedToolCall.of("toolu_01A09q90qw90lq917835lq9", "add", {"a": 2, "b": 40})
    replies = [API.reply(ScriptedTurn(text="Adding.", tool_calls=(call,))),
               API.reply(ScriptedTurn(text="42."))]
    async with FakeServer(replies) as server:
        _, result, _ = await run(runtime, provider(runtime, server, temperature=0.2))
    assert result.response == "42."
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.headers["x-api-key"] == KEY
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.headers["content-type"] == "application/json"
    assert first.json == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 40?"}]}],
        "stream": True,
        "system": "Be brief.",
        "tools": [
            {"name": "add", "description": add.description, "input_schema": add.input_schema},
            {"name": "echo", "description": echo.description,
             "input_schema": echo.input_schema},
        ],
        "temperature": 0.2,
    }
    assert second.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 40?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": call.id, "name": "add", "input": {"a": 2, "b": 40}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "42"}]},
    ]


async def test_error_results_and_output_schema_are_mapped(runtime: wingspan.Runtime) -> None:
    call = ScriptedToolCall.of("toolu_02", "add", {"a": "not a number", "b": 1})
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}}
    replies = [API.reply(ScriptedTurn(tool_calls=(call,))),
               API.reply(ScriptedTurn(text='{"sum": 1}'))]
    async with FakeServer(replies) as server:
        _, result, _ = await run(runtime, provider(runtime, server), output_schema=schema)
    assert result.tool_calls[0].is_error
    assert server.requests[0].json["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}}
    [tool_result] = server.requests[1].json["messages"][2]["content"]
    assert tool_result["is_error"] is True
    assert tool_result["tool_use_id"] == "toolu_02"


async def test_ping_is_passed_through_and_usage_counts_cache_tokens(
        runtime: wingspan.Runtime) -> None:
    chunks = [
        sse("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-6", "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 100,
                      "cache_read_input_tokens": 1000, "output_tokens": 1}}}),
        sse("ping", {"type": "ping"}),
        # A thinking block: nothing the kernel keeps, so the text block becomes index 0.
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "thinking", "thinking": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "signature_delta", "signature": "x"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("content_block_start", {"type": "content_block_start", "index": 1,
                                    "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                    "delta": {"type": "text_delta", "text": "Hi"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        sse("some_future_event", {"type": "some_future_event"}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                              "stop_sequence": None}, "usage": {"output_tokens": 7}}),
        sse("message_stop", {"type": "message_stop"}),
    ]
    async with FakeServer([Reply.stream(chunks)]) as server:
        events, result, _ = await run(runtime, provider(runtime, server))
    assert any(type(e) is Ping for e in events)
    assert [e.index for e in events if type(e) is TextDelta] == [0]
    assert result.response == "Hi"
    assert result.usage == wingspan.Usage(input_tokens=1105, output_tokens=7)


async def test_crlf_framing_and_comments(runtime: wingspan.Runtime) -> None:
    reply = API.reply(ScriptedTurn(text="Line endings do not matter."))
    chunks = [b": keep-alive comment\r\n\r\n"] + [
        c.replace(b"\n", b"\r\n") for c in reply.chunks if isinstance(c, bytes)]
    async with FakeServer([Reply.stream(chunks)]) as server:
        _, result, _ = await run(runtime, provider(runtime, server))
    assert result.response == "Line endings do not matter."


async def test_authentication_error_says_what_to_do(runtime: wingspan.Runtime) -> None:
    async with FakeServer([API.error_reply(401, "invalid x-api-key")]) as server:
        with pytest.raises(ProviderError) as caught:
            await run(runtime, provider(runtime, server))
    message = str(caught.value)
    assert message.startswith("anthropic: authentication failed (401) — check the API key "
                              "(the api_key option)")  # not ANTHROPIC_API_KEY: not Anthropic's
    assert "invalid x-api-key" in message
    assert caught.value.provider == "anthropic"


async def test_overloaded_after_every_retry(runtime: wingspan.Runtime) -> None:
    replies = [API.error_reply(529, "Overloaded")] * 3
    async with FakeServer(replies) as server:
        with pytest.raises(ProviderError) as caught:
            await run(runtime, provider(runtime, server, max_retries=2))
    assert len(server.requests) == 3
    assert str(caught.value) == (
        "anthropic: overloaded (529): overloaded_error: Overloaded — try again later "
        "(after 2 retries)")
    assert caught.value.status == 529 and caught.value.retryable


async def test_should_retry_header_overrides_the_status(runtime: wingspan.Runtime) -> None:
    replies = [API.error_reply(500, "do not retry", [("x-should-retry", "false")])]
    async with FakeServer(replies) as server:
        with pytest.raises(ProviderError):
            await run(runtime, provider(runtime, server, max_retries=3))
    assert len(server.requests) == 1


async def test_request_options_override_per_call(runtime: wingspan.Runtime) -> None:
    async with FakeServer([API.reply(ScriptedTurn(text="ok"))]) as server:
        await run(runtime, provider(runtime, server, beta=["a-2025", "b-2026"]),
                  options={"model": "claude-haiku-4-5", "max_tokens": 100, "top_k": 5})
    request = server.requests[0]
    assert request.headers["anthropic-beta"] == "a-2025,b-2026"
    assert (request.json["model"], request.json["max_tokens"], request.json["top_k"]) == (
        "claude-haiku-4-5", 100, 5)


async def test_request_options_cannot_change_the_connection(runtime: wingspan.Runtime) -> None:
    async with FakeServer() as server:
        with pytest.raises(ConfigError, match="cannot set api_key"):
            await run(runtime, provider(runtime, server), options={"api_key": "other"})
    assert server.requests == []


def test_options_are_checked(runtime: wingspan.Runtime) -> None:
    with pytest.raises(ConfigError, match=r"unknown options 'colour', 'flavour'; it takes"):
        runtime.get_provider("anthropic", {"api_key": KEY, "colour": 1, "flavour": 2})
    with pytest.raises(ConfigError, match="'max_tokens' must be an integer"):
        runtime.get_provider("anthropic", {"api_key": KEY, "max_tokens": "4096"})
    with pytest.raises(ConfigError, match="'temperature' must be a number"):
        runtime.get_provider("anthropic", {"api_key": KEY, "temperature": True})
    with pytest.raises(ConfigError, match="'base_url' must be an http"):
        runtime.get_provider("anthropic", {"api_key": KEY, "base_url": "api.anthropic.com"})


def test_the_key_comes_from_the_option_or_the_environment(
        runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no API key — set ANTHROPIC_API_KEY"):
        runtime.get_provider("anthropic", {})
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    built = runtime.get_provider("anthropic", {})
    assert isinstance(built, anthropic.AnthropicProvider)
    assert built.settings.api_key == "from-env"
    assert "from-env" not in repr(built) + repr(built.settings)


def test_spec_and_catalog(runtime: wingspan.Runtime) -> None:
    spec = runtime.providers["anthropic"]
    assert (spec.display_name, spec.auth_types, spec.env_key) == (
        "Anthropic", ("api_key",), "ANTHROPIC_API_KEY")
    assert all(m.context_window and m.max_output_tokens for m in spec.models)
    assert "claude-sonnet-4-6" in {m.id for m in spec.models}


async def test_catalog_merges_the_list_endpoint_and_caches_it() -> None:
    page = {"data": [
        {"type": "model", "id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6",
         "created_at": "2026-02-17T00:00:00Z", "max_input_tokens": 1_000_000,
         "max_tokens": 64_000},
        {"type": "model", "id": "claude-future-5", "display_name": "Claude Future 5",
         "created_at": "2026-09-01T00:00:00Z"},
    ], "has_more": False, "first_id": "claude-sonnet-4-6", "last_id": "claude-future-5"}
    catalog = anthropic.model_catalog()
    async with FakeServer([Reply.json(page)]) as server:
        options = {"base_url": server.base_url, "api_key": KEY}
        models = await catalog(options)
        assert await catalog(options) == models  # from the cache
    assert len(server.requests) == 1
    assert server.requests[0].path == "/v1/models"
    assert server.requests[0].headers["x-api-key"] == KEY
    ids = [m.id for m in models]
    assert ids[: len(anthropic.MODELS)] == [m.id for m in anthropic.MODELS]
    assert ids[-1] == "claude-future-5"
    assert models[-1].name == "Claude Future 5"


async def test_catalog_works_offline_and_without_a_key() -> None:
    assert await anthropic.list_models({}) == anthropic.MODELS
    async with FakeServer([API.error_reply(500, "down")]) as server:
        models = await anthropic.list_models({"base_url": server.base_url, "api_key": KEY})
    assert models == anthropic.MODELS


async def test_a_gzipped_stream_is_decoded(runtime: wingspan.Runtime) -> None:
    import zlib

    compressor = zlib.compressobj(wbits=31)  # gzip, flushed per event as a proxy would
    reply = API.reply(ScriptedTurn(text="Compressed on the way."))
    chunks = [compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH)
              for c in reply.chunks if isinstance(c, bytes)] + [compressor.flush()]
    gzipped = Reply.stream(chunks, headers=[("content-encoding", "gzip")])
    async with FakeServer([gzipped]) as server:
        _, result, _ = await run(runtime, provider(runtime, server))
    assert result.response == "Compressed on the way."
