"""The ``anthropic`` provider: Anthropic's Messages API, streaming (server-sent events).

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``; instructions go
to ``system``, tools to ``tools`` with their ``input_schema``, the history block for block
(``tool_use`` / ``tool_result``), the output schema to ``output_config.format``. The SSE
events map one to one onto the kernel's (``ping`` included); an ``error`` event becomes a
:class:`~wingspan.ProviderError` with the API's message. See ``docs/providers.md``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import attrs

import wingspan
from wingspan import (
    ConfigError,
    ContentBlockStart,
    ContentBlockStop,
    InferenceRequest,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    ModelInfo,
    Ping,
    ProviderSpec,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextStart,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseStart,
    Usage,
)

from . import _http

NAME = "anthropic"
ENV_KEY = "ANTHROPIC_API_KEY"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-4-6"
API_VERSION = "2023-06-01"

#: Current models (2026-05); the list endpoint adds what this misses.
MODELS = (
    ModelInfo(id="claude-opus-4-7", name="Claude Opus 4.7", context_window=1_000_000,
              max_output_tokens=128_000),
    ModelInfo(id="claude-opus-4-6", name="Claude Opus 4.6", context_window=1_000_000,
              max_output_tokens=128_000),
    ModelInfo(id="claude-sonnet-4-6", name="Claude Sonnet 4.6", context_window=1_000_000,
              max_output_tokens=64_000),
    ModelInfo(id="claude-haiku-4-5", name="Claude Haiku 4.5", context_window=200_000,
              max_output_tokens=64_000),
    ModelInfo(id="claude-opus-4-5", name="Claude Opus 4.5", context_window=200_000,
              max_output_tokens=64_000),
    ModelInfo(id="claude-sonnet-4-5", name="Claude Sonnet 4.5", context_window=200_000,
              max_output_tokens=64_000),
)

EXTRAS: dict[str, _http.Check] = {
    "anthropic_version": _http.check_str,
    "beta": _http.check_str_list,
    "top_p": _http.check_number(0.0, 1.0),
    "top_k": _http.check_int(1),
    "stop_sequences": _http.check_str_list,
    "headers": _http.check_headers,
}


def api_root(base_url: str) -> str:
    """The API root of a base URL: ``http://host:8080`` and ``http://host:8080/v1`` are the
    same server (the requests go to ``{root}/v1/messages``)."""
    return _http.api_root(base_url, strip="/v1")


def parse_options(options: Mapping[str, Any]) -> _http.Settings:
    return _http.parse_options(
        options, spec=SPEC, extras=EXTRAS, normalize_base_url=api_root,
        defaults={"model": DEFAULT_MODEL, "max_tokens": _http.DEFAULT_MAX_TOKENS},
    )


def _headers(settings: _http.Settings) -> dict[str, str]:
    headers = {
        "anthropic-version": settings.extras.get("anthropic_version", API_VERSION),
        "accept": "text/event-stream",
        **settings.extras.get("headers", {}),
    }
    if settings.api_key:
        headers["x-api-key"] = settings.api_key
    if settings.extras.get("beta"):
        headers["anthropic-beta"] = ",".join(settings.extras["beta"])
    return headers


class AnthropicProvider:
    """Streams the Messages API."""

    def __init__(self, settings: _http.Settings) -> None:
        self.settings = settings
        self._http = _http.HttpClient(settings, _headers(settings))

    def __repr__(self) -> str:
        return f"<AnthropicProvider model={self.settings.model!r} {self.settings.base_url}>"

    async def aclose(self) -> None:
        """Close the provider's connections (later calls open new ones)."""
        await self._http.aclose()

    def body(self, request: InferenceRequest, settings: _http.Settings | None = None
             ) -> dict[str, Any]:
        """The JSON body for ``request`` (exactly what is sent)."""
        settings = settings or self.settings.for_call(request.options)
        body: dict[str, Any] = {
            "model": settings.model,
            "max_tokens": settings.max_tokens,
            "messages": encode_messages(request.messages),
            "stream": True,
        }
        if request.instructions:
            body["system"] = request.instructions
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in request.tools
            ]
        if request.output_schema is not None:
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": request.output_schema}
            }
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        for name in ("top_p", "top_k"):
            if name in settings.extras:
                body[name] = settings.extras[name]
        if settings.extras.get("stop_sequences"):
            body["stop_sequences"] = list(settings.extras["stop_sequences"])
        return _http.merge_body(body, settings.extra_body)

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        settings = self.settings.for_call(request.options)
        translator = _Translator(self._http)
        chunks = self._http.stream("/v1/messages", self.body(request, settings),
                                   settings=settings, finished=lambda: translator.done)
        decoder = _http.SSEDecoder()
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for sse in decoder.feed(chunk):
                    if translator.done:
                        break
                    for event in translator.feed(sse):
                        yield event
        if not translator.done:
            raise self._http.cut_off("the stream ended without message_stop")


class _Translator:
    """Anthropic's SSE events to kernel events; blocks the kernel has no type for
    (``thinking``, server tools...) are skipped and the others renumbered from 0."""

    def __init__(self, client: _http.HttpClient) -> None:
        self._client = client
        self._indexes: dict[int, int] = {}  # API index -> kernel index
        self._open: set[int] = set()
        self._input_tokens = 0
        self._output_tokens = 0
        self._started = False
        self.done = False

    def feed(self, sse: _http.ServerSentEvent) -> Iterable[StreamEvent]:
        data = _http.load_json(self._client, sse.data)
        kind = data.get("type", sse.event) if isinstance(data, dict) else sse.event
        return _http.translate(
            self._client, data, lambda item: self._event(kind, item),
            what="an event", label=f"{kind} event", shown=repr(sse.data[:120]),
        )

    def _event(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "message_start":
            self._started = True
            usage = data["message"].get("usage") or {}
            self._input_tokens = _input_tokens(usage)
            self._output_tokens = int(usage.get("output_tokens") or 0)
            return [MessageStart()]
        if kind == "ping":
            return [Ping()]
        if kind == "error":
            raise self._client.stream_error(data)
        if not self._started:
            raise self._client.malformed(f"{kind} before message_start")
        if kind == "content_block_start":
            return self._block_start(int(data["index"]), data["content_block"])
        if kind == "content_block_delta":
            index = self._indexes.get(int(data["index"]))
            if index is None:
                return []
            delta = data["delta"]
            if delta["type"] == "text_delta":
                return [TextDelta(text=delta["text"], index=index)] if delta["text"] else []
            if delta["type"] == "input_json_delta":
                fragment = delta["partial_json"]
                return [InputJsonDelta(partial_json=fragment, index=index)] if fragment else []
            return []  # citations and the like: nothing the kernel keeps
        if kind == "content_block_stop":
            index = self._indexes.get(int(data["index"]))
            if index is None or index not in self._open:
                return []
            self._open.discard(index)
            return [ContentBlockStop(index=index)]
        if kind == "message_delta":
            usage = data.get("usage") or {}
            if usage.get("input_tokens") is not None:
                self._input_tokens = _input_tokens(usage)
            if usage.get("output_tokens") is not None:
                self._output_tokens = int(usage["output_tokens"])
            stop_reason = (data.get("delta") or {}).get("stop_reason") or "end_turn"
            events: list[StreamEvent] = [ContentBlockStop(index=i) for i in sorted(self._open)]
            self._open.clear()
            events.append(MessageDelta(
                stop_reason=stop_reason,
                usage=Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens),
            ))
            return events
        if kind == "message_stop":
            self.done = True
            return [MessageStop()]
        return []  # event types added after this was written

    def _block_start(self, api_index: int, block: Mapping[str, Any]) -> list[StreamEvent]:
        head: TextStart | ToolUseStart
        if block["type"] == "text":
            head = TextStart()
        elif block["type"] == "tool_use":
            head = ToolUseStart(id=block["id"], name=block["name"])
        else:
            return []
        index = len(self._indexes)
        self._indexes[api_index] = index
        self._open.add(index)
        events: list[StreamEvent] = [ContentBlockStart(index=index, content_block=head)]
        if type(head) is TextStart and block.get("text"):
            events.append(TextDelta(text=block["text"], index=index))
        elif type(head) is ToolUseStart and block.get("input"):
            events.append(InputJsonDelta(partial_json=json.dumps(block["input"]), index=index))
        return events


def _input_tokens(usage: Mapping[str, Any]) -> int:
    """Every input token the call consumed, cache reads and writes included."""
    return sum(int(usage.get(k) or 0) for k in
               ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def encode_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Kernel history to Messages API ``messages``, block for block. Empty text blocks
    are left out (the API refuses them) and a message left empty is dropped."""
    encoded: list[dict[str, Any]] = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for block in message.content:
            if type(block) is TextBlock:
                if block.text:
                    content.append({"type": "text", "text": block.text})
            elif type(block) is ToolUseBlock:
                content.append({"type": "tool_use", "id": block.id, "name": block.name,
                                "input": dict(block.input)})
            elif type(block) is ToolResultBlock:
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id,
                                          "content": block.content}
                if block.is_error:
                    result["is_error"] = True
                content.append(result)
        if content:
            encoded.append({"role": message.role, "content": content})
    return encoded


def make_anthropic_provider(options: Mapping[str, Any]) -> AnthropicProvider:
    """Build the provider. :raises ConfigError: for bad options or a missing key (on
    Anthropic's own API; another base URL, a proxy or a local server speaking the Messages
    API, gets no key unless one is given)."""
    settings = parse_options(options)
    if not settings.api_key and settings.official:
        raise ConfigError(
            f"{NAME}: no API key — set {ENV_KEY}, or pass the api_key option"
        )
    return AnthropicProvider(settings)


# --- model catalog ---------------------------------------------------------------------------


async def _fetch_models(settings: _http.Settings) -> list[ModelInfo]:
    client = _http.HttpClient(settings, _headers(settings))
    models: list[ModelInfo] = []
    params: dict[str, Any] = {"limit": 1000}
    try:
        for _ in range(10):  # pages
            page = await client.get_json("/v1/models", params=params)
            for item in page["data"]:
                models.append(ModelInfo(
                    id=item["id"],
                    name=item.get("display_name") or item["id"],
                    context_window=_positive(item.get("max_input_tokens")),
                    max_output_tokens=_positive(item.get("max_tokens")),
                ))
            if not page.get("has_more") or not page.get("last_id"):
                break
            params = {"limit": 1000, "after_id": page["last_id"]}
    finally:
        await client.aclose()
    return models


def _positive(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _catalog_settings(options: Mapping[str, Any]) -> _http.Settings | None:
    settings = parse_options(options)
    # Anthropic's own list needs a key; a local server or a proxy may not.
    return None if settings.official and not settings.api_key else settings


def model_catalog() -> _http.ModelCatalog:
    """A catalog for one runtime: :data:`MODELS` merged with ``GET /v1/models`` (cached 1 h).
    ``await model_catalog()(options)`` gives the models."""
    return _http.ModelCatalog(MODELS, _fetch_models, _catalog_settings)


async def list_models(options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
    """The catalog merged with the list endpoint, uncached (see :func:`model_catalog`)."""
    return await model_catalog()(options)


#: The provider, as registered (each runtime's gets its own :func:`model_catalog`).
SPEC = ProviderSpec(
    name=NAME,
    display_name="Anthropic",
    factory=make_anthropic_provider,
    auth_types=("api_key",),
    models=MODELS,
    env_key=ENV_KEY,
    **_http.spec_fields(DEFAULT_BASE_URL, parse_options),
)


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [attrs.evolve(SPEC, list_models=model_catalog())]
