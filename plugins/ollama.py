"""The ``ollama`` provider: Ollama's native chat API, streaming newline-delimited JSON.

``POST {base_url}/api/chat`` (no key needed); instructions become the system message, tools
functions, tool results ``role: "tool"`` messages; ``max_tokens`` goes to
``options.num_predict`` and the output schema to ``format``. Every chunk counts, the first
one too, and every tool call of a chunk is kept. Ollama gives tool calls no ids that are
unique, so they are derived from the request (:func:`~wingspan.plugins._http.call_id_prefix`).
See ``docs/providers.md``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

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

NAME = "ollama"
ENV_KEY = "OLLAMA_API_KEY"
DEFAULT_BASE_URL = "http://localhost:11434"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}

#: Popular models of the Ollama library (2026-05), with their context windows; the
#: models pulled locally (``/api/tags``) are merged in.
MODELS = (
    ModelInfo(id="gpt-oss:20b", name="gpt-oss 20B", context_window=131_072),
    ModelInfo(id="gpt-oss:120b", name="gpt-oss 120B", context_window=131_072),
    ModelInfo(id="qwen3", name="Qwen3 8B", context_window=40_960),
    ModelInfo(id="qwen3-coder", name="Qwen3 Coder 30B", context_window=262_144),
    ModelInfo(id="llama3.2", name="Llama 3.2 3B", context_window=131_072),
    ModelInfo(id="llama3.1", name="Llama 3.1 8B", context_window=131_072),
    ModelInfo(id="gemma3", name="Gemma 3 4B", context_window=131_072),
    ModelInfo(id="mistral-small3.2", name="Mistral Small 3.2 24B", context_window=131_072),
    ModelInfo(id="deepseek-r1", name="DeepSeek-R1 8B", context_window=131_072),
)

EXTRAS: dict[str, _http.Check] = {
    "num_ctx": _http.check_int(1),
    "top_p": _http.check_number(0.0, 1.0),
    "top_k": _http.check_int(1),
    "seed": _http.check_int(-(2**63)),
    "stop": _http.check_str_list,
    "keep_alive": lambda v: v if type(v) is int or (isinstance(v, str) and v) else _bad(
        "must be a duration such as \"5m\" or a number of seconds"),
    "think": _http.check_bool,
    "headers": _http.check_headers,
}


def _bad(reason: str) -> Any:
    raise ValueError(reason)


def parse_options(options: Mapping[str, Any]) -> _http.Settings:
    return _http.parse_options(options, spec=SPEC, extras=EXTRAS,
                               defaults={"max_tokens": _http.DEFAULT_MAX_TOKENS})


def _headers(settings: _http.Settings) -> dict[str, str]:
    headers = {"accept": "application/x-ndjson", **settings.extras.get("headers", {})}
    if settings.api_key:  # Ollama's own cloud, or a proxy in front of a server
        headers["authorization"] = f"Bearer {settings.api_key}"
    return headers


class OllamaProvider:
    """Streams ``/api/chat``."""

    def __init__(self, settings: _http.Settings) -> None:
        self.settings = settings
        self._http = _http.HttpClient(settings, _headers(settings))

    def __repr__(self) -> str:
        return f"<OllamaProvider model={self.settings.model!r} {self.settings.base_url}>"

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
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema,
                }}
                for t in request.tools
            ]
        if request.output_schema is not None:
            body["format"] = request.output_schema
        options: dict[str, Any] = {}
        if settings.max_tokens is not None:
            options["num_predict"] = settings.max_tokens
        if settings.temperature is not None:
            options["temperature"] = settings.temperature
        for name in ("num_ctx", "top_p", "top_k", "seed"):
            if name in extras:
                options[name] = extras[name]
        if extras.get("stop"):
            options["stop"] = list(extras["stop"])
        if options:
            body["options"] = options
        for name in ("keep_alive", "think"):
            if name in extras:
                body[name] = extras[name]
        return _http.merge_body(body, settings.extra_body)

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        settings = self.settings.for_call(request.options)
        body = self.body(request, settings)
        translator = _Translator(self._http, body)
        chunks = self._http.stream("/api/chat", body, settings=settings,
                                   finished=lambda: translator.done)
        decoder = _http.NDJSONDecoder(self._http)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for value in decoder.feed(chunk):
                    for event in translator.feed(value):
                        yield event
            if not translator.done:
                for value in decoder.close():
                    for event in translator.feed(value):
                        yield event
        for event in translator.finish():
            yield event


class _Translator:
    """Ollama's chunks to kernel events."""

    def __init__(self, client: _http.HttpClient, body: Mapping[str, Any]) -> None:
        self._client = client
        self._body = body  # ids for tool calls without one derive from it (call_id_prefix)
        self._id_prefix: str | None = None
        self._blocks = _http.BlockWriter()
        self._calls = 0
        self._started = False
        self._stop_reason: str | None = None
        self._usage = UNKNOWN_USAGE  # until the last chunk reports it
        self.done = False

    def id_prefix(self) -> str:
        """The prefix of made-up tool-call ids, worked out once it is needed."""
        if self._id_prefix is None:
            self._id_prefix = _http.call_id_prefix(self._body)
        return self._id_prefix

    def feed(self, chunk: Any) -> list[StreamEvent]:
        if self.done:
            return []
        return _http.translate(
            self._client, chunk, self._chunk, what="a line", label="chunk",
            shown=f"{json.dumps(chunk)[:120]}",
        )

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error") is not None:
            raise self._client.stream_error(chunk)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(MessageStart())
        message = chunk.get("message") or {}
        content = message.get("content")
        if isinstance(content, str) and content:
            events += self._blocks.text(content)
        for call in message.get("tool_calls") or ():
            function = call["function"]
            arguments = function.get("arguments")
            if isinstance(arguments, str):  # some models' templates give a JSON string
                encoded = arguments
            else:
                encoded = json.dumps(arguments if arguments is not None else {},
                                     ensure_ascii=False)
            call_id = f"{self.id_prefix()}_{self._calls}"
            self._calls += 1
            events += self._blocks.tool(call_id, call_id, function["name"])
            events += self._blocks.json(encoded)
        if chunk.get("done"):
            self.done = True
            reason = chunk.get("done_reason") or "stop"
            self._stop_reason = STOP_REASONS.get(reason, reason)
            self._usage = Usage(input_tokens=_http.token_count(chunk.get("prompt_eval_count")),
                                output_tokens=_http.token_count(chunk.get("eval_count")))
        return events

    def finish(self) -> list[StreamEvent]:
        if self._stop_reason is None:
            raise self._client.cut_off(
                "the stream ended without its done chunk" if self._started
                else "the stream ended before any chunk"
            )
        reason = self._stop_reason
        if self._calls and reason == "end_turn":
            reason = "tool_use"  # Ollama says "stop" after tool calls
        return [*self._blocks.close(), MessageDelta(stop_reason=reason, usage=self._usage),
                MessageStop()]


def encode_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Kernel history to Ollama messages: ``tool_use`` blocks become the assistant's
    ``tool_calls`` (arguments as objects); each ``tool_result`` a ``role: "tool"`` message
    with the tool's name and call id (an error's content starts with ``Error:``)."""
    encoded: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        text = "".join(b.text for b in message.content if type(b) is TextBlock)
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": text}
            calls = []
            for block in message.content:
                if type(block) is ToolUseBlock:
                    names[block.id] = block.name
                    calls.append({"id": block.id, "function": {
                        "name": block.name, "arguments": dict(block.input)}})
            if calls:
                entry["tool_calls"] = calls
            encoded.append(entry)
            continue
        for block in message.content:
            if type(block) is ToolResultBlock:
                content = f"Error: {block.content}" if block.is_error else block.content
                result = {"role": "tool", "content": content, "tool_call_id": block.tool_use_id}
                if block.tool_use_id in names:
                    result["tool_name"] = names[block.tool_use_id]
                encoded.append(result)
        if text or not any(type(b) is ToolResultBlock for b in message.content):
            encoded.append({"role": "user", "content": text})
    return encoded


def make_ollama_provider(options: Mapping[str, Any]) -> OllamaProvider:
    """Build the provider. :raises ConfigError: for bad options or a missing model."""
    settings = parse_options(options)
    if settings.model is None:
        raise ConfigError(
            f"{NAME}: the model option is required, e.g. \"llama3.2\" — `ollama list` shows "
            "the models pulled"
        )
    return OllamaProvider(settings)


# --- model catalog ---------------------------------------------------------------------------


async def _fetch_models(settings: _http.Settings) -> list[ModelInfo]:
    client = _http.HttpClient(settings, _headers(settings))
    try:
        page = await client.get_json("/api/tags")
    finally:
        await client.aclose()
    models = []
    for item in page["models"]:
        name = item.get("model") or item["name"]
        details = item.get("details") or {}
        facts = ", ".join(str(details[k]) for k in ("parameter_size", "quantization_level")
                          if details.get(k))
        models.append(ModelInfo(
            # "llama3.2:latest" is what "llama3.2" names.
            id=name.removesuffix(":latest"),
            name=f"{name} ({facts})" if facts else name,
        ))
    return models


def _catalog_settings(options: Mapping[str, Any]) -> _http.Settings:
    return parse_options(options)


def model_catalog() -> _http.ModelCatalog:
    """A catalog for one runtime: :data:`MODELS` merged with ``GET /api/tags`` (the models
    pulled; cached 1 h). ``await model_catalog()(options)`` gives the models."""
    return _http.ModelCatalog(MODELS, _fetch_models, _catalog_settings)


async def list_models(options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
    """The catalog merged with the list endpoint, uncached (see :func:`model_catalog`)."""
    return await model_catalog()(options)


#: The provider, as registered (each runtime's gets its own :func:`model_catalog`).
SPEC = ProviderSpec(
    name=NAME,
    display_name="Ollama",
    factory=make_ollama_provider,
    auth_types=(),
    models=MODELS,
    env_key=ENV_KEY,
    **_http.spec_fields(DEFAULT_BASE_URL, parse_options),
)


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [attrs.evolve(SPEC, list_models=model_catalog())]
