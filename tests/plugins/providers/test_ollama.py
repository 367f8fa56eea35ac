"""The ollama provider against a fake /api/chat (NDJSON)."""

from __future__ import annotations

import pytest

import wingspan
from wingspan import ConfigError, InferenceRequest, Message, ProviderError, TextBlock
from wingspan.plugins import ollama
from wingspan.testing import FakeServer, Reply, ScriptedToolCall, ScriptedTurn

from .fakes import OllamaAPI, line, ollama_chunk
from .helpers import FAST, add, echo, run

API = OllamaAPI()


def provider(runtime: wingspan.Runtime, server: FakeServer, **options: object
             ) -> wingspan.Provider:
    return runtime.get_provider("ollama", {"base_url": server.base_url, "model": "llama3.2",
                                           **FAST, **options})


def tool_function(tool: wingspan.Tool) -> dict[str, object]:
    return {"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.input_schema}}


async def test_requests_carry_system_tools_options_history(runtime: wingspan.Runtime) -> None:
    calls = (ScriptedToolCall.of("-", "add", {"a": 2, "b": 40}),
             ScriptedToolCall.of("-", "echo", {"wrong": True}))
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}}
    replies = [API.reply(ScriptedTurn(text="Adding.", tool_calls=calls)),
               API.reply(ScriptedTurn(text='{"sum": 42}'))]
    async with FakeServer(replies) as server:
        _, result, _ = await run(
            runtime, provider(runtime, server, max_tokens=256, temperature=0, num_ctx=8192,
                              keep_alive="10m"),
            output_schema=schema)
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/api/chat")
    assert "authorization" not in first.headers
    assert first.json == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is 2 + 40?"}],
        "stream": True,
        "tools": [tool_function(add), tool_function(echo)],
        "format": schema,
        "options": {"num_predict": 256, "temperature": 0.0, "num_ctx": 8192},
        "keep_alive": "10m",
    }
    add_id, echo_id = (c.id for c in result.tool_calls)
    error = result.tool_calls[1].output
    assert second.json["messages"][2:] == [
        {"role": "assistant", "content": "Adding.", "tool_calls": [
            {"id": add_id, "function": {"name": "add", "arguments": {"a": 2, "b": 40}}},
            {"id": echo_id, "function": {"name": "echo", "arguments": {"wrong": True}}}]},
        {"role": "tool", "content": "42", "tool_call_id": add_id, "tool_name": "add"},
        {"role": "tool", "content": f"Error: {error}", "tool_call_id": echo_id,
         "tool_name": "echo"},
    ]


async def test_tool_call_ids_are_unique_in_a_session_and_deterministic(
        runtime: wingspan.Runtime) -> None:
    call = ScriptedToolCall.of("-", "echo", {"text": "again"})
    turn = ScriptedTurn(tool_calls=(call, call))
    replies = [API.reply(turn), API.reply(turn), API.reply(ScriptedTurn(text="done"))]
    async with FakeServer(replies) as server:
        _, result, _ = await run(runtime, provider(runtime, server))
        ids = [c.id for c in result.tool_calls]
        assert len(ids) == 4 and len(set(ids)) == 4

        request = InferenceRequest(messages=(Message(role="user",
                                                     content=(TextBlock(text="x"),)),))
        built = provider(runtime, server)
        twice = []
        for _ in range(2):
            server.add(API.reply(ScriptedTurn(tool_calls=(call,))))
            response = await wingspan.complete(built, request)
            twice.append(response.content[0].id)  # type: ignore[union-attr]
    assert twice[0] == twice[1]


async def test_every_chunk_counts_and_tool_calls_in_separate_chunks(
        runtime: wingspan.Runtime) -> None:
    lines = [
        line(ollama_chunk({"content": "First"})),
        line(ollama_chunk({"content": " chunk.", "tool_calls": [
            {"function": {"name": "echo", "arguments": {"text": "a"}}}]})),
        line(ollama_chunk({"tool_calls": [
            {"function": {"index": 1, "name": "echo", "arguments": {"text": "b"}}}]})),
        line(ollama_chunk({}, done=True, done_reason="stop", prompt_eval_count=9,
                          eval_count=4)).rstrip(b"\n"),  # the last line without its newline
    ]
    replies = [Reply.stream(lines, content_type="application/x-ndjson"),
               API.reply(ScriptedTurn(text="ok"))]
    async with FakeServer(replies) as server:
        _, result, session = await run(runtime, provider(runtime, server))
    assert session.history[1].text == "First chunk."
    assert [c.output for c in result.tool_calls] == ["a", "b"]
    assert result.usage.input_tokens == 9 + 21


async def test_model_not_found(runtime: wingspan.Runtime) -> None:
    reply = API.error_reply(404, 'model "llama9" not found, try pulling it first')
    async with FakeServer([reply]) as server:
        base_url = server.base_url
        with pytest.raises(ProviderError) as caught:
            await run(runtime, provider(runtime, server))
    assert str(caught.value) == (
        f'ollama: POST {base_url}/api/chat answered 404 (not found): model "llama9" not found, '
        f"try pulling it first — check the model name and base_url ({base_url})")


def test_options_are_checked(runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="the model option is required"):
        runtime.get_provider("ollama", {})
    with pytest.raises(ConfigError, match="'num_ctx' must be an integer"):
        runtime.get_provider("ollama", {"model": "m", "num_ctx": 1.5})
    with pytest.raises(ConfigError, match="'keep_alive' must be a duration"):
        runtime.get_provider("ollama", {"model": "m", "keep_alive": ""})
    built = runtime.get_provider("ollama", {"model": "m"})
    assert built.settings.base_url == "http://localhost:11434"  # type: ignore[attr-defined]
    monkeypatch.setenv("OLLAMA_API_KEY", "cloud-key")
    keyed = runtime.get_provider("ollama", {"model": "m"})
    assert keyed.settings.api_key == "cloud-key"  # type: ignore[attr-defined]


async def test_catalog_merges_the_pulled_models() -> None:
    tags = {"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189,
         "digest": "a80c4f17acd5", "modified_at": "2026-05-01T10:00:00Z",
         "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B",
                     "quantization_level": "Q4_K_M"}},
        {"name": "my-finetune:7b", "model": "my-finetune:7b", "details": {}},
    ]}
    async with FakeServer([Reply.json(tags)]) as server:
        models = await ollama.list_models({"base_url": server.base_url})
    assert server.requests[0].path == "/api/tags"
    by_id = {m.id: m for m in models}
    assert by_id["llama3.2"].name == "llama3.2:latest (3.2B, Q4_K_M)"
    assert by_id["llama3.2"].context_window == 131_072
    assert by_id["my-finetune:7b"].context_window is None
    assert len(models) == len(ollama.MODELS) + 1


async def test_catalog_when_ollama_is_not_running() -> None:
    async with FakeServer() as server:
        base_url = server.base_url
    assert await ollama.list_models({"base_url": base_url}) == ollama.MODELS
