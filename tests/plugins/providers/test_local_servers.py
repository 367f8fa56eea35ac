"""Providers that fit what people run locally (issue 11): llama.cpp's server and the other
OpenAI- and Anthropic-compatible servers, faked on loopback with their real wire formats.

Connection reuse (item 1) is a conformance scenario, run for every provider by
``test_conformance.py``: ``test_calls_reuse_one_connection`` and
``test_one_provider_serves_several_event_loops``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

import wingspan
from wingspan import ConfigError, InferenceRequest, Message, ProviderError, TextBlock
from wingspan.plugins import anthropic, openai
from wingspan.plugins.http.app import create_app
from wingspan.plugins.http.config import ServerConfig
from wingspan.plugins.http.routes.agents import credential_options
from wingspan.testing import FakeServer, Reply, ScriptedTurn, make_runtime

from .fakes import AnthropicAPI, OpenAIAPI
from .helpers import FAST, run

ANTHROPIC, OPENAI = AnthropicAPI(), OpenAIAPI()
ROOT = Path(__file__).resolve().parents[3]
ENV_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
            "ollama": "OLLAMA_API_KEY"}
HI = InferenceRequest(messages=(Message(role="user", content=(TextBlock(text="hi"),)),))


def body_of(runtime: wingspan.Runtime, name: str, options: dict[str, Any],
            request: InferenceRequest = HI) -> dict[str, Any]:
    """The JSON body the provider would send for ``request``."""
    built: Any = runtime.get_provider(name, options)
    return dict(built.body(request))


# --- 1. connections (the rest is in the conformance suite) ---------------------------------------


async def test_a_provider_dropped_while_its_loop_runs_closes_its_connection(
        runtime: wingspan.Runtime) -> None:
    """The server builds a provider per run and drops it: its kept-alive connection must
    not stay open (nor be left to a ResourceWarning) until the process ends."""
    async with FakeServer([OPENAI.reply(ScriptedTurn(text="once"))]) as server:
        built = runtime.get_provider("openai", {"base_url": server.base_url, "model": "m",
                                                **FAST})
        _, result, session = await run(runtime, built)
        assert result.response == "once" and server.open_connections == 1
        del built, session
        gc.collect()
        await server.wait_for_open_connections(0)


# --- 2. no key needed where the endpoint needs none --------------------------------------------


@pytest.mark.parametrize(("name", "api", "header"), [
    ("anthropic", ANTHROPIC, "x-api-key"), ("openai", OPENAI, "authorization"),
])
async def test_a_keyless_local_server_gets_no_key_and_a_401_says_what_to_set(
    runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch, name: str, api: Any,
    header: str,
) -> None:
    monkeypatch.setenv(ENV_KEYS[name], "sk-official-only")  # never sent to a local server
    replies = [api.reply(ScriptedTurn(text="no key needed")),
               api.error_reply(401, "this server wants a key")]
    async with FakeServer(replies) as server:
        built = runtime.get_provider(name, {"base_url": server.base_url, "model": "local",
                                            **FAST})
        _, result, _ = await run(runtime, built)
        assert result.response == "no key needed"
        with pytest.raises(ProviderError) as caught:
            await run(runtime, built)
    assert [header in r.headers for r in server.requests] == [False, False]
    message = str(caught.value)
    assert message.startswith(f"{name}: authentication failed (401) — {server.base_url}")
    assert "wants a key and none was sent: pass the api_key option, or api_key_env" in message
    assert f"{ENV_KEYS[name]} is read only for https://api." in message
    assert "this server wants a key" in message


def test_the_official_endpoint_still_needs_a_key(runtime: wingspan.Runtime) -> None:
    for name, official in (("anthropic", "https://api.anthropic.com/v1"),
                           ("openai", "https://api.openai.com")):
        for options in ({}, {"base_url": official}):
            with pytest.raises(ConfigError, match=f"{name}: no API key — set {ENV_KEYS[name]}"):
                runtime.get_provider(name, options)


async def test_a_keyless_anthropic_compatible_server_lists_its_models() -> None:
    page = {"data": [{"type": "model", "id": "local-gguf", "display_name": "Local GGUF"}],
            "has_more": False}
    async with FakeServer([Reply.json(page)]) as server:
        models = await anthropic.list_models({"base_url": server.base_url})
    assert "x-api-key" not in server.requests[0].headers
    assert models[-1] == wingspan.ModelInfo(id="local-gguf", name="Local GGUF")


# --- 3. extra_body: the server-specific fields -------------------------------------------------


LLAMA_CPP_FIELDS = {"top_k": 40, "min_p": 0.05, "cache_prompt": True,
                    "chat_template_kwargs": {"enable_thinking": False},
                    "tool_choice": "required"}


async def test_extra_body_reaches_a_llama_cpp_server_merged_last(
        runtime: wingspan.Runtime) -> None:
    async with FakeServer([OPENAI.reply(ScriptedTurn(text="ok"))] * 2) as server:
        built = runtime.get_provider("openai", {
            "base_url": server.base_url, "model": "qwen", "temperature": 0.7,
            "extra_body": {**LLAMA_CPP_FIELDS, "temperature": 0.1,
                           "stream_options": {"extra": 1}}, **FAST})
        await run(runtime, built)
        # per call (an agent's options): merged into the provider's, key by key
        await run(runtime, built, options={"extra_body": {
            "chat_template_kwargs": {"reasoning_effort": "low"}, "top_k": 5}})
    first, second = (r.json for r in server.requests)
    assert {k: first[k] for k in LLAMA_CPP_FIELDS} == LLAMA_CPP_FIELDS
    assert first["temperature"] == 0.1  # last: it wins over the option
    assert first["stream_options"] == {"include_usage": True, "extra": 1}  # objects merge
    assert first["stream"] is True and first["model"] == "qwen"
    assert second["top_k"] == 5 and second["min_p"] == 0.05
    assert second["chat_template_kwargs"] == {"enable_thinking": False,
                                              "reasoning_effort": "low"}


def test_extra_body_for_anthropic_and_ollama(runtime: wingspan.Runtime) -> None:
    sent = body_of(runtime, "anthropic", {"api_key": "k", "extra_body": {
        "tool_choice": {"type": "any"}, "metadata": {"user_id": "u1"}}})
    assert sent["tool_choice"] == {"type": "any"} and sent["metadata"] == {"user_id": "u1"}
    sent = body_of(runtime, "ollama", {"model": "m", "temperature": 0.2, "extra_body": {
        "options": {"min_p": 0.05}, "keep_alive": -1}})
    assert sent["options"] == {"num_predict": 4096, "temperature": 0.2, "min_p": 0.05}
    assert sent["keep_alive"] == -1


@pytest.mark.parametrize("name", ["anthropic", "openai", "ollama"])
@pytest.mark.parametrize(("value", "reason"), [
    ([1, 2], "must be a JSON object"),
    ("top_k=40", "must be a JSON object"),
    ({"top_k": float("nan")}, "top_k is not a finite number"),
    ({"nested": {"when": object()}}, "nested.when is not JSON (object)"),
    ({"stream": False}, "cannot set 'stream'"),
])
def test_extra_body_must_be_a_json_object(runtime: wingspan.Runtime, name: str, value: Any,
                                          reason: str) -> None:
    options = {"api_key": "k", "model": "m", "base_url": "http://127.0.0.1:8080"}
    with pytest.raises(ConfigError, match=f"{name}: option 'extra_body' ") as caught:
        runtime.get_provider(name, {**options, "extra_body": value})
    assert reason in str(caught.value) and caught.value.option == "extra_body"
    built = runtime.get_provider(name, options)
    with pytest.raises(ConfigError, match="option 'extra_body'"):
        built.body(InferenceRequest(messages=HI.messages,  # type: ignore[attr-defined]
                                    options={"extra_body": value}))


# --- 4. a default max_tokens ---------------------------------------------------------------------


def test_a_default_max_tokens_is_sent_to_compatible_and_local_servers(
        runtime: wingspan.Runtime) -> None:
    local = {"base_url": "http://127.0.0.1:8080", "model": "m"}
    assert body_of(runtime, "openai", local)["max_tokens"] == 4096
    assert body_of(runtime, "ollama", local)["options"] == {"num_predict": 4096}
    assert body_of(runtime, "anthropic", local)["max_tokens"] == 4096
    assert body_of(runtime, "openai", {**local, "max_tokens": 64000})["max_tokens"] == 64000
    per_call = InferenceRequest(messages=HI.messages, options={"max_tokens": 10})
    assert body_of(runtime, "openai", local, per_call)["max_tokens"] == 10
    # OpenAI's own API: its own limit (reasoning tokens count against a cap there)
    official = body_of(runtime, "openai", {"api_key": "k"})
    assert "max_tokens" not in official and "max_completion_tokens" not in official


# --- 6. base URLs with or without /v1 ------------------------------------------------------------


@pytest.mark.parametrize(("name", "api", "path"), [
    ("anthropic", ANTHROPIC, "/v1/messages"), ("openai", OPENAI, "/v1/chat/completions"),
])
async def test_base_url_with_or_without_v1_reaches_the_same_endpoint(
    runtime: wingspan.Runtime, name: str, api: Any, path: str,
) -> None:
    async with FakeServer([api.reply(ScriptedTurn(text="ok"))] * 3) as server:
        for base_url in (server.base_url, server.base_url + "/v1", server.base_url + "/v1/"):
            built = runtime.get_provider(name, {"base_url": base_url, "model": "m", **FAST})
            _, result, _ = await run(runtime, built)
            assert result.response == "ok"
    assert [r.path for r in server.requests] == [path] * 3


def test_a_base_url_with_another_path_is_kept(runtime: wingspan.Runtime) -> None:
    def base_url(name: str, url: str) -> str:
        built: Any = runtime.get_provider(name, {"base_url": url, "model": "m"})
        return str(built.settings.base_url)

    assert base_url("openai", "https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"
    gemini = "https://generativelanguage.googleapis.com/v1beta/openai"
    assert base_url("openai", gemini) == gemini
    assert base_url("anthropic", "https://proxy.example/anthropic/v1") == (
        "https://proxy.example/anthropic")


async def test_a_404_names_the_url_requested(runtime: wingspan.Runtime) -> None:
    async with FakeServer([ANTHROPIC.error_reply(404, "Not Found")]) as server:
        base_url = server.base_url
        built = runtime.get_provider("anthropic", {"base_url": base_url + "/api", **FAST})
        with pytest.raises(ProviderError) as caught:
            await run(runtime, built)
    assert str(caught.value) == (
        f"anthropic: POST {base_url}/api/v1/messages answered 404 (not found): "
        f"not_found_error: Not Found — check the model name and base_url ({base_url}/api)")
    assert caught.value.status == 404


# --- 7. GET /provider/{id}/models?base_url= ------------------------------------------------------


STORED = "sk-stored-0123456789"


async def app_with(**config: Any) -> Quart:
    values: dict[str, Any] = {"store": "memory://", "ping_interval": 15.0,
                              "shutdown_grace": 5.0, **config}
    return create_app(make_runtime(), ServerConfig(**values))


def models_page(*ids: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "llamacpp",
                                        "meta": {"n_ctx_train": 8192}} for i in ids]}


async def test_the_models_of_a_compatible_server_are_listed_from_its_base_url() -> None:
    tags = {"models": [{"name": "qwen3:8b", "model": "qwen3:8b", "details": {}}]}
    anthropic_page = {"data": [{"type": "model", "id": "claude-local"}], "has_more": False}

    def answer(request: Any) -> Reply:
        if request.path == "/api/tags":
            return Reply.json(tags)
        if request.path == "/v1/models" and "x-api-key" not in request.headers and (
                "anthropic-version" in request.headers):
            return Reply.json(anthropic_page)
        return Reply.json(models_page("Qwen3-8B-Q4_K_M.gguf"))

    app = await app_with()
    async with FakeServer(handler=answer) as server, app.test_app():
        client = app.test_client()
        for base_url in (server.base_url, server.base_url + "/v1"):
            listed = await client.get("/provider/openai/models",
                                      query_string={"base_url": base_url})
            assert listed.status_code == 200, await listed.get_json()
            assert await listed.get_json() == [{"id": "Qwen3-8B-Q4_K_M.gguf",
                                                "name": "Qwen3-8B-Q4_K_M.gguf"}]
        one = await client.get("/provider/openai/models/Qwen3-8B-Q4_K_M.gguf",
                               query_string={"base_url": server.base_url})
        assert (await one.get_json())["id"] == "Qwen3-8B-Q4_K_M.gguf"
        pulled = await (await client.get("/provider/ollama/models",
                                         query_string={"base_url": server.base_url})).get_json()
        assert "qwen3:8b" in [m["id"] for m in pulled]
        local = await (await client.get("/provider/anthropic/models",
                                        query_string={"base_url": server.base_url})).get_json()
        assert local[-1] == {"id": "claude-local", "name": "claude-local"}
        # without base_url: the embedded catalog, offline (OpenAI's, with no key)
        default = await (await client.get("/provider/openai/models")).get_json()
        assert [m["id"] for m in default] == [m.id for m in openai.MODELS]
    assert {r.path for r in server.requests} == {"/v1/models", "/api/tags"}


async def test_a_stored_key_is_sent_only_to_the_base_url_it_is_bound_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-never-elsewhere")
    app = await app_with()
    async with FakeServer(handler=lambda _: Reply.json(models_page("m"))) as server, \
            app.test_app():
        client = app.test_client()
        bound = server.base_url + "/v1"
        other = server.base_url.replace("127.0.0.1", "localhost")  # another origin
        put = await client.put("/provider/auth", json={"providers": {"openai": {
            "type": "api_key", "key": STORED, "base_url": bound}}})
        assert put.status_code == 200
        for base_url in (bound, other, server.base_url + "/elsewhere/v1"):
            answer = await client.get("/provider/openai/models",
                                      query_string={"base_url": base_url})
            assert answer.status_code == 200
    sent = [r.headers.get("authorization") for r in server.requests]
    assert sent == [f"Bearer {STORED}", None, f"Bearer {STORED}"]


async def test_a_listing_base_url_is_checked_like_an_agents() -> None:
    app = await app_with(allowed_base_urls=("http://127.0.0.1:9",))
    async with app.test_app():
        client = app.test_client()
        for provider, base_url, reason in (
            ("openai", "ftp://x", "must be an http:// or https:// URL"),
            ("openai", "http://10.0.0.1:8080", "is not among the base URLs this server allows"),
            ("test", "http://127.0.0.1:9", "provider 'test' takes no base_url"),
        ):
            answer = await client.get(f"/provider/{provider}/models",
                                      query_string={"base_url": base_url})
            body = await answer.get_json()
            assert answer.status_code == 400, body
            assert body["code"] == "invalid_request" and reason in body["error"]
            assert body["details"][0]["field"] == "base_url"


# --- 8. ProviderSpec.env_key means the same in the SDK, the CLI and the server ----------------


def sdk_key(spec: wingspan.ProviderSpec, options: dict[str, Any]) -> str | None:
    """The key the provider's factory finds (the SDK's and the CLI's path), without
    building it (which refuses the official endpoint without a key)."""
    assert spec.check_options is not None
    settings: Any = spec.check_options({"model": "m", **options})
    return settings.api_key  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["anthropic", "openai", "ollama"])
async def test_one_rule_finds_the_key_in_the_sdk_and_the_server(
    runtime: wingspan.Runtime, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    variable = ENV_KEYS[name]
    spec = runtime.providers[name]
    assert spec.env_key == variable
    monkeypatch.setenv(variable, "sk-env")
    monkeypatch.setenv("MY_KEY", "sk-mine")
    assert spec.base_url is not None
    cases: list[dict[str, Any]] = [
        {}, {"base_url": spec.base_url}, {"base_url": "http://127.0.0.1:8080"},
        {"env_fallback": False}, {"api_key": "sk-given"},
        {"base_url": "http://127.0.0.1:8080", "api_key_env": "MY_KEY"},
    ]
    for options in cases:
        expected = spec.resolve_api_key(options)
        assert sdk_key(spec, options) == expected, options
    assert [spec.resolve_api_key(c) for c in cases] == [
        "sk-env", "sk-env", None, None, "sk-given", "sk-mine"]
    assert spec.resolve_api_key({}, env_fallback=False) is None  # the server's setting
    assert spec.resolve_api_key({"base_url": "http://127.0.0.1:8080"},
                                key_urls=("http://127.0.0.1:8080/v1",)) == "sk-env"
    with pytest.raises(ConfigError, match=f"{name}: option 'api_key_env' names NOPE"):
        spec.resolve_api_key({"api_key_env": "NOPE"})
    with pytest.raises(ConfigError, match="names NOPE"):
        runtime.get_provider(name, {"model": "m", "api_key_env": "NOPE"})

    # the server: what it adds to an agent's options, for each setting of env_fallback
    for env_fallback in (True, False):
        app = await app_with(env_fallback=env_fallback)
        async with app.test_app():
            server = app.extensions["wingspan"]
            for options in ({}, {"base_url": "http://127.0.0.1:8080"}):
                added = await credential_options(server, spec, options)
                assert added.get("api_key") == spec.resolve_api_key(
                    options, env_fallback=env_fallback), (env_fallback, options)
            if spec.auth_types:
                status = await (await app.test_client().get("/provider/auth")).get_json()
                assert status["providers"][name]["configured"] is env_fallback


def test_the_cli_finds_the_key_by_the_same_rule(tmp_path: Path) -> None:
    """``wingspan run`` against a fake OpenAI-compatible server: the environment's
    OPENAI_API_KEY is not sent there, a key named by ``api_key_env`` is."""
    async def scenario() -> list[str | None]:
        replies = [OPENAI.reply(ScriptedTurn(text="from the cli"))] * 2
        async with FakeServer(replies) as server:
            for extra in ([], ["-o", "api_key_env=MY_LOCAL_KEY"]):
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "wingspan.cli", "run", "hi", "--provider", "openai",
                    "--model", "m", "-o", f"base_url={server.base_url}", *extra,
                    "--store", "memory://", cwd=ROOT, env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = await asyncio.wait_for(process.communicate(), 60)
                assert process.returncode == 0, err.decode()
                assert "from the cli" in out.decode()
        return [r.headers.get("authorization") for r in server.requests]

    env = {**os.environ, "OPENAI_API_KEY": "sk-env-openai-only", "MY_LOCAL_KEY": "sk-local",
           "XDG_DATA_HOME": str(tmp_path), "HOME": str(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("WINGSPAN_")}
    assert asyncio.run(scenario()) == [None, "Bearer sk-local"]
    spec = make_runtime().providers["openai"]
    assert spec.resolve_api_key({"base_url": "http://127.0.0.1:1"},
                                environ=env) is None  # the rule the CLI followed



async def test_a_server_that_reports_no_usage_leaves_it_unknown(
        runtime: wingspan.Runtime, tmp_path: Path) -> None:
    """llama.cpp without ``stream_options`` support sends no usage: that is unknown (null),
    not "0 input + 0 output tokens"; a run's sum is unknown only while every part is."""
    from .fakes import data, openai_chunk

    silent = Reply.stream([data(openai_chunk({"role": "assistant", "content": "Hi."})),
                           data(openai_chunk({}, "stop")), b"data: [DONE]\n\n"])
    async with FakeServer([silent, silent]) as server:
        provider = runtime.get_provider("openai", {"base_url": server.base_url, "model": "m",
                                                   **FAST})
        _, result, session = await run(runtime, provider, tools=[])
        assert result.usage == wingspan.UNKNOWN_USAGE
        assert result.usage.input_tokens is None and result.usage.output_tokens is None
        store = await runtime.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        try:
            stored = wingspan.Session(agent=session.agent, store=store, runtime=runtime)
            stream = stored.stream("again")
            async with asyncio.timeout(20):
                async for _ in stream:
                    pass
            run_record = await store.get_run(stream.run_id)
            assert run_record.usage == wingspan.UNKNOWN_USAGE
            assert wingspan.wire.unstructure(run_record)["usage"] == {
                "input_tokens": None, "output_tokens": None}
        finally:
            await store.close()
    assert wingspan.UNKNOWN_USAGE + wingspan.Usage(input_tokens=3, output_tokens=1) == \
        wingspan.Usage(input_tokens=3, output_tokens=1)
