"""The ``openai`` provider: OpenAI's Chat Completions API, streaming, and every server that
speaks it (vLLM, llama.cpp server, LM Studio, OpenRouter, Ollama's ``/v1``...) by ``base_url``.

``POST {base_url}/chat/completions`` with a bearer key (optional off OpenAI);
instructions become the system message, tools functions, tool results ``role: "tool"``
messages with their ``tool_call_id``; ``tool_calls`` stream by index and are assembled,
several per turn; usage comes from ``stream_options.include_usage``; the output schema goes
to ``response_format``. See ``docs/providers.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

import wingspan
from wingspan import (
    UNKNOWN_USAGE,
    ConfigError,
    InferenceRequest,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ModelInfo,
    ProviderSpec,
    StreamEvent,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)

from . import _http

NAME = "openai"
ENV_KEY = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-5-mini"
STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
}

#: Current models (2026-05); the list endpoint adds what this misses.
MODELS = (
    ModelInfo(id="gpt-5.5", name="GPT-5.5", context_window=400_000, max_output_tokens=128_000),
    ModelInfo(id="gpt-5.4", name="GPT-5.4", context_window=400_000, max_output_tokens=128_000),
    ModelInfo(id="gpt-5.2", name="GPT-5.2", context_window=400_000, max_output_tokens=128_000),
    ModelInfo(id="gpt-5", name="GPT-5", context_window=400_000, max_output_tokens=128_000),
    ModelInfo(id="gpt-5-mini", name="GPT-5 mini", context_window=400_000,
              max_output_tokens=128_000),
    ModelInfo(id="gpt-5-nano", name="GPT-5 nano", context_window=400_000,
              max_output_tokens=128_000),
    ModelInfo(id="gpt-4.1", name="GPT-4.1", context_window=1_047_576, max_output_tokens=32_768),
    ModelInfo(id="gpt-4.1-mini", name="GPT-4.1 mini", context_window=1_047_576,
              max_output_tokens=32_768),
    ModelInfo(id="gpt-4o", name="GPT-4o", context_window=128_000, max_output_tokens=16_384),
    ModelInfo(id="gpt-4o-mini", name="GPT-4o mini", context_window=128_000,
              max_output_tokens=16_384),
)

EXTRAS: dict[str, _http.Check] = {
    "organization": _http.check_str,
    "project": _http.check_str,
    "top_p": _http.check_number(0.0, 1.0),
    "stop": _http.check_str_list,
    "seed": _http.check_int(-(2**63)),
    "reasoning_effort": _http.check_str,
    "parallel_tool_calls": _http.check_bool,
    "strict_output": _http.check_bool,
    "include_usage": _http.check_bool,
    "max_tokens_field": _http.check_choice("max_completion_tokens", "max_tokens"),
    "headers": _http.check_headers,
}


@functools.lru_cache(maxsize=64)
def is_openai(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own API (not a compatible server)."""
    return urlsplit(base_url).hostname == "api.openai.com"


def api_root(base_url: str) -> str:
    """The API root of a base URL: a bare origin (``http://host:8080``) means its ``/v1``,
    as every compatible server serves there; a URL with a path is taken as it is
    (``https://openrouter.ai/api/v1``, Gemini's ``/v1beta/openai``)."""
    return _http.api_root(base_url, add="/v1")


def parse_options(options: Mapping[str, Any]) -> _http.Settings:
    # OPENAI_API_KEY goes to OpenAI only: another server gets a key only when asked for.
    return _http.parse_options(options, spec=SPEC, extras=EXTRAS, normalize_base_url=api_root)


def _headers(settings: _http.Settings) -> dict[str, str]:
    headers = {"accept": "text/event-stream", **settings.extras.get("headers", {})}
    if settings.api_key:
        headers["authorization"] = f"Bearer {settings.api_key}"
    if "organization" in settings.extras:
        headers["openai-organization"] = settings.extras["organization"]
    if "project" in settings.extras:
        headers["openai-project"] = settings.extras["project"]
    return headers


class OpenAIProvider:
    """Streams Chat Completions."""

    def __init__(self, settings: _http.Settings) -> None:
        self.settings = settings
        self._http = _http.HttpClient(settings, _headers(settings))

    def __repr__(self) -> str:
        return f"<OpenAIProvider model={self.settings.model!r} {self.settings.base_url}>"

    async def aclose(self) -> None:
        """Close the provider's connections (later calls open new ones)."""
        await self._http.aclose()

    def body(self, request: InferenceRequest, settings: _http.Settings | None = None
             ) -> dict[str, Any]:
        """The JSON body for ``request`` (exactly what is sent)."""
        settings = settings or self.settings.for_call(request.options)
        extras = settings.extras
        messages: list[dict[str, Any]] = []
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        messages += encode_messages(request.messages)
        body: dict[str, Any] = {"model": settings.model, "messages": messages, "stream": True}
        if extras.get("include_usage", True):
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema,
                }}
                for t in request.tools
            ]
            if "parallel_tool_calls" in extras:
                body["parallel_tool_calls"] = extras["parallel_tool_calls"]
        if settings.max_tokens is not None:
            # OpenAI's newer models take only max_completion_tokens; most compatible
            # servers know only max_tokens.
            default = "max_completion_tokens" if is_openai(settings.base_url) else "max_tokens"
            body[extras.get("max_tokens_field", default)] = settings.max_tokens
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if request.output_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": _schema_name(request.output_schema),
                "schema": request.output_schema,
                "strict": extras.get("strict_output", False),
            }}
        for name in ("top_p", "seed", "reasoning_effort"):
            if name in extras:
                body[name] = extras[name]
        if extras.get("stop"):
            body["stop"] = list(extras["stop"])
        return _http.merge_body(body, settings.extra_body)

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        settings = self.settings.for_call(request.options)
        body = self.body(request, settings)
        translator = _Translator(self._http, body)
        chunks = self._http.stream("/chat/completions", body, settings=settings,
                                   finished=lambda: translator.done)
        decoder = _http.SSEDecoder()
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for sse in decoder.feed(chunk):
                    if translator.done:
                        break
                    for event in translator.feed(sse.data):
                        yield event
        for event in translator.finish():
            yield event


def _schema_name(schema: Mapping[str, Any]) -> str:
    title = schema.get("title")
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", title)[:64] if isinstance(title, str) else ""
    return name or "output"


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "started")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []  # fragments that came before the name
        self.started = False


class _Translator:
    """``chat.completion.chunk`` s to kernel events. Text and tool calls become blocks
    in the order they arrive; a tool call starts once its name is known."""

    def __init__(self, client: _http.HttpClient, body: Mapping[str, Any]) -> None:
        self._client = client
        self._body = body  # ids for tool calls without one derive from it (call_id_prefix)
        self._id_prefix: str | None = None
        self._blocks = _http.BlockWriter()
        self._calls: dict[int, _ToolCall] = {}
        self._finish_reason: str | None = None
        self._usage = UNKNOWN_USAGE  # until the server reports it (not every one does)
        self._started = False
        self.done = False

    def id_prefix(self) -> str:
        """The prefix of made-up tool-call ids, worked out once it is needed."""
        if self._id_prefix is None:
            self._id_prefix = _http.call_id_prefix(self._body)
        return self._id_prefix

    def feed(self, data: str) -> list[StreamEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = _http.load_json(self._client, data)
        return _http.translate(
            self._client, chunk, self._chunk, what="a chunk", label="chunk",
            shown=repr(data[:120]),
        )

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error") is not None:
            raise self._client.stream_error(chunk)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(MessageStart())
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = Usage(input_tokens=_http.token_count(usage.get("prompt_tokens")),
                                output_tokens=_http.token_count(usage.get("completion_tokens")))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    events += self._blocks.text(text)
            for position, call in enumerate(delta.get("tool_calls") or ()):
                events += self._tool_delta(position, call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _tool_delta(self, position: int, delta: Mapping[str, Any]) -> list[StreamEvent]:
        index = delta.get("index", position)
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _ToolCall()
        elif call.started and not self._blocks.is_open(str(index)):
            raise self._client.malformed(f"more of tool call {index} after the next one began")
        if delta.get("id"):
            call.id = delta["id"]
        function = delta.get("function") or {}
        if function.get("name") and not call.started:
            call.name = function["name"]
        fragment = function.get("arguments") or ""
        if not isinstance(fragment, str):  # some servers send the object itself
            fragment = json.dumps(fragment)
        events: list[StreamEvent] = []
        if not call.started and call.name:
            call.started = True
            call_id = call.id or f"{self.id_prefix()}_{len(self._calls) - 1}"
            events += self._blocks.tool(str(index), call_id, call.name)
            fragment = "".join(call.arguments) + fragment
        if call.started:
            events += self._blocks.json(fragment)
        else:
            call.arguments.append(fragment)
        return events

    def finish(self) -> list[StreamEvent]:
        """The end of the stream: close the turn, or fail if it was cut short."""
        if self._finish_reason is None:
            raise self._client.cut_off(
                "the stream ended without a finish_reason" if self._started
                else "the stream ended before any chunk"
            )
        unnamed = [i for i, c in self._calls.items() if not c.started]
        if unnamed:
            raise self._client.malformed(f"tool call {unnamed[0]} never got a name")
        reason = STOP_REASONS.get(self._finish_reason, self._finish_reason)
        if self._calls and reason == "end_turn":
            reason = "tool_use"  # servers that answer tool calls with "stop"
        return [*self._blocks.close(), MessageDelta(stop_reason=reason, usage=self._usage),
                MessageStop()]


def encode_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Kernel history to Chat Completions messages: an assistant turn's ``tool_use``
    blocks become its ``tool_calls``; each ``tool_result`` a ``role: "tool"`` message
    (an error's content starts with ``Error:``, since the API has no error flag)."""
    encoded: list[dict[str, Any]] = []
    for message in messages:
        text = "".join(b.text for b in message.content if type(b) is TextBlock)
        if message.role == "assistant":
            calls = [
                {"id": b.id, "type": "function",
                 "function": {"name": b.name, "arguments": json.dumps(dict(b.input))}}
                for b in message.content if type(b) is ToolUseBlock
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            encoded.append(entry)
            continue
        for block in message.content:
            if type(block) is ToolResultBlock:
                content = f"Error: {block.content}" if block.is_error else block.content
                encoded.append({"role": "tool", "tool_call_id": block.tool_use_id,
                                "content": content})
        if text or not any(type(b) is ToolResultBlock for b in message.content):
            encoded.append({"role": "user", "content": text})
    return encoded


def make_openai_provider(options: Mapping[str, Any]) -> OpenAIProvider:
    """Build the provider. :raises ConfigError: for bad options, a missing key (on
    OpenAI's own API) or a missing model (on any other server)."""
    settings = parse_options(options)
    if is_openai(settings.base_url):
        if not settings.api_key:
            raise ConfigError(f"{NAME}: no API key — set {ENV_KEY}, or pass the api_key option")
        if settings.model is None:
            settings = attrs.evolve(settings, model=DEFAULT_MODEL)
    else:
        if settings.model is None:
            raise ConfigError(
                f"{NAME}: the model option is required with base_url {settings.base_url} — "
                f"name one the server serves (GET {settings.base_url}/models lists them)"
            )
        if settings.max_tokens is None:
            # A local model with no cap may generate until it is killed.
            settings = attrs.evolve(settings, max_tokens=_http.DEFAULT_MAX_TOKENS)
    return OpenAIProvider(settings)


# --- model catalog ---------------------------------------------------------------------------


async def _fetch_models(settings: _http.Settings) -> list[ModelInfo]:
    client = _http.HttpClient(settings, _headers(settings))
    try:
        page = await client.get_json("/models")
    finally:
        await client.aclose()
    models = []
    for item in page["data"]:
        top = item.get("top_provider") or {}
        models.append(ModelInfo(
            id=item["id"],
            name=item.get("name") or item["id"],
            # vLLM: max_model_len; OpenRouter: context_length and top_provider.
            context_window=_positive(item.get("context_window") or item.get("context_length")
                                     or item.get("max_model_len")),
            max_output_tokens=_positive(top.get("max_completion_tokens")),
        ))
    return models


def _positive(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _catalog_settings(options: Mapping[str, Any]) -> _http.Settings | None:
    settings = parse_options(options)
    return None if is_openai(settings.base_url) and not settings.api_key else settings


def _embedded(settings: _http.Settings | None) -> tuple[ModelInfo, ...]:
    # OpenAI's catalog says nothing about what a compatible server serves.
    return MODELS if settings is None or is_openai(settings.base_url) else ()


def model_catalog() -> _http.ModelCatalog:
    """A catalog for one runtime: :data:`MODELS` merged with ``GET {base_url}/models``
    (cached 1 h); for a compatible server, only what it lists.
    ``await model_catalog()(options)`` gives the models."""
    return _http.ModelCatalog(_embedded, _fetch_models, _catalog_settings)


async def list_models(options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
    """The catalog merged with the list endpoint, uncached (see :func:`model_catalog`)."""
    return await model_catalog()(options)


#: The provider, as registered (each runtime's gets its own :func:`model_catalog`).
SPEC = ProviderSpec(
    name=NAME,
    display_name="OpenAI (and compatible servers)",
    factory=make_openai_provider,
    auth_types=("api_key",),
    models=MODELS,
    env_key=ENV_KEY,
    **_http.spec_fields(DEFAULT_BASE_URL, parse_options),
)


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [attrs.evolve(SPEC, list_models=model_catalog())]
