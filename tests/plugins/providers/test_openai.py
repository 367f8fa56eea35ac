"""The openai provider against a fake Chat Completions API, and the quirks of compatible
servers (vLLM, llama.cpp, LM Studio, OpenRouter, Ollama's /v1)."""

from __future__ import annotations

import pytest

import wingspan
from wingspan import ConfigError, InferenceRequest, Message, ProviderError, TextBlock
from wingspan.plugins import openai
from wingspan.testing import FakeServer, Reply, ScriptedToolCall, ScriptedTurn

from .fakes import OpenAIAPI, data, openai_chunk
from .helpers import FAST, add, echo, run

API = OpenAIAPI()


def provider(runtime: wingspan.Runtime, server: FakeServer, **options: object
             ) -> wingspan.Provider:
    return runtime.get_provider("openai", {"base_url": server.base_url, "model": "gpt-5-mini",
                                           "api_key": "sk-test", **FAST, **options})


def tool_function(tool: wingspan.Tool) -> dict[str, object]:
    return {"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.input_schema}}


async def test_requests_carry_system_tools_history_and_headers(
        runtime: wingspan.Runtime) -> None:
    call = ScriptedToolCall.of("call_abc123", "add", {"a": 2, "b": 40})
    failing = ScriptedToolCall.of("call_def456", "echo", {"wrong": 1})
    replies = [API.reply(ScriptedTurn(text="Adding.", tool_calls=(call, failing))),
               API.reply(ScriptedTurn(text="42."))]
    async with FakeServer(replies) as server:
        _, result, _ = await run(runtime, provider(runtime, server, max_tokens=300,
                                                   temperature=0.5))
    assert result.response == "42."
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")  # a bare origin
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.json == {
        "model": "gpt-5-mini",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is 2 + 40?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [tool_function(add), tool_function(echo)],
        "max_tokens": 300,  # a compatible server: not OpenAI's max_completion_tokens
        "temperature": 0.5,
    }
    error = result.tool_calls[1].output
    assert second.json["messages"][2:] == [
        {"role": "assistant", "content": "Adding.", "tool_calls": [
            {"id": "call_abc123", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 2, "b": 40}'}},
            {"id": "call_def456", "type": "function",
             "function": {"name": "echo", "arguments": '{"wrong": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "42"},
        {"role": "tool", "tool_call_id": "call_def456", "content": f"Error: {error}"},
    ]


def test_openai_itself_gets_max_completion_tokens_and_response_format(
        runtime: wingspan.Runtime) -> None:
    built = runtime.get_provider("openai", {"api_key": "sk-test", "max_tokens": 99,
                                            "strict_output": True})
    assert isinstance(built, openai.OpenAIProvider)
    assert built.settings.model == "gpt-5-mini"
    schema = {"title": "Final answer!", "type": "object"}
    body = built.body(InferenceRequest(
        messages=(Message(role="user", content=(TextBlock(text="hi"),)),),
        output_schema=schema))
    assert body["max_completion_tokens"] == 99 and "max_tokens" not in body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Final_answer_", "schema": schema, "strict": True}}


def test_the_environment_key_goes_to_openai_only(
        runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no API key — set OPENAI_API_KEY"):
        runtime.get_provider("openai", {})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or")
    assert runtime.get_provider("openai", {}).settings.api_key == "sk-openai"  # type: ignore[attr-defined]
    local = {"base_url": "http://127.0.0.1:8000/v1", "model": "qwen"}
    assert runtime.get_provider("openai", local).settings.api_key is None  # type: ignore[attr-defined]
    routed = runtime.get_provider("openai", {**local, "api_key_env": "OPENROUTER_API_KEY"})
    assert routed.settings.api_key == "sk-or"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="names NOPE_KEY, which is not set"):
        runtime.get_provider("openai", {**local, "api_key_env": "NOPE_KEY"})
    with pytest.raises(ConfigError, match="the model option is required"):
        runtime.get_provider("openai", {"base_url": "http://127.0.0.1:8000/v1"})


async def test_a_compatible_server_without_a_key_gets_no_authorization(
        runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    async with FakeServer([API.reply(ScriptedTurn(text="local"))]) as server:
        built = runtime.get_provider("openai", {"base_url": server.base_url, "model": "m"})
        _, result, _ = await run(runtime, built)
    assert result.response == "local"
    assert "authorization" not in server.requests[0].headers


async def test_compatible_server_quirks(runtime: wingspan.Runtime) -> None:
    """No tool-call index or id, the whole arguments object at once, finish_reason "stop"
    after tool calls, usage inside the finishing chunk with null choices, SSE comments,
    no [DONE]."""
    chunks = [
        b": OPENROUTER PROCESSING\n\n",
        data(openai_chunk({"role": "assistant", "content": None})),
        data(openai_chunk({"tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 1}}},
            {"type": "function", "function": {"name": "echo", "arguments": '{"text": "x"}'}},
        ]})),
        data({**openai_chunk({}, "stop"), "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        data({**openai_chunk(None), "choices": None}),
    ]
    replies = [Reply.stream(chunks), API.reply(ScriptedTurn(text="done"))]
    async with FakeServer(replies) as server:
        _, result, session = await run(runtime, provider(runtime, server))
    assert [(c.tool_name, c.output) for c in result.tool_calls] == [("add", "2"), ("echo", "x")]
    ids = [c.id for c in result.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert session.history[1].content[0].id == ids[0]  # type: ignore[union-attr]
    assert result.usage.input_tokens == 3 + 21


async def test_text_after_tool_calls_opens_a_new_block(runtime: wingspan.Runtime) -> None:
    chunks = [
        data(openai_chunk({"content": "Before. "})),
        data(openai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                           "function": {"name": "echo", "arguments": ""}}]})),
        data(openai_chunk({"tool_calls": [{"index": 0,
                                           "function": {"arguments": '{"text": "y"}'}}]})),
        data(openai_chunk({"content": "After."})),
        data(openai_chunk({}, "tool_calls")),
        b"data: [DONE]\n\n",
    ]
    async with FakeServer([Reply.stream(chunks), API.reply(ScriptedTurn(text="ok"))]) as server:
        _, result, session = await run(runtime, provider(runtime, server))
    assert session.history[1].text == "Before. After."
    assert result.tool_calls[0].output == "y"


async def test_interleaved_tool_call_fragments_are_refused(runtime: wingspan.Runtime) -> None:
    def start(index: int) -> bytes:
        return data(openai_chunk({"tool_calls": [{"index": index, "id": f"c{index}",
                    "function": {"name": "echo", "arguments": ""}}]}))

    chunks = [start(0), start(1), data(openai_chunk({"tool_calls": [
        {"index": 0, "function": {"arguments": "{}"}}]}))]
    async with FakeServer([Reply.stream(chunks)]) as server:
        with pytest.raises(ProviderError, match="malformed chunk"):
            await run(runtime, provider(runtime, server))


async def test_errors_name_the_server_and_what_to_do(runtime: wingspan.Runtime) -> None:
    async with FakeServer([API.error_reply(404, "The model `gpt-9` does not exist")]) as server:
        base_url = server.base_url
        with pytest.raises(ProviderError) as caught:
            await run(runtime, provider(runtime, server))
    assert str(caught.value) == (
        f"openai: POST {base_url}/v1/chat/completions answered 404 (not found): "
        "invalid_request_error: The model `gpt-9` does not exist — check the model name and "
        f"base_url ({base_url}/v1)")
    unreachable = runtime.get_provider("openai", {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 1, **FAST})
    with pytest.raises(ProviderError, match=r"openai: cannot reach http://127.0.0.1:9/v1 .*"
                                            r"check base_url .*\(after 1 retry\)"):
        await run(runtime, unreachable)


async def test_a_stalled_stream_times_out(runtime: wingspan.Runtime) -> None:
    from wingspan.testing import Pause

    reply = API.reply(ScriptedTurn(text="slow")).cut(2, then=(Pause(5),))
    async with FakeServer([reply]) as server:
        with pytest.raises(ProviderError, match=r"stalled: no data for 0\.2 s"):
            await run(runtime, provider(runtime, server, timeout=0.2))


async def test_catalog_for_a_compatible_server_is_what_it_lists() -> None:
    page = {"object": "list", "data": [
        {"id": "Qwen/Qwen3-8B", "object": "model", "created": 1, "owned_by": "vllm",
         "max_model_len": 32768},
        {"id": "openrouter/model", "name": "Routed", "context_length": 200000,
         "top_provider": {"max_completion_tokens": 8000}},
    ]}
    async with FakeServer([Reply.json(page)]) as server:
        models = await openai.list_models({"base_url": server.base_url + "/v1"})
    assert server.requests[0].path == "/v1/models"
    assert models == (
        wingspan.ModelInfo(id="Qwen/Qwen3-8B", name="Qwen/Qwen3-8B", context_window=32768),
        wingspan.ModelInfo(id="openrouter/model", name="Routed", context_window=200000,
                           max_output_tokens=8000),
    )
    assert await openai.list_models({}) == openai.MODELS  # OpenAI without a key: offline
