"""Model providers: the protocol, their specs, and the one accumulator of stream events.

A provider translates an :class:`~wingspan.InferenceRequest` into a model API call and that
API's stream back into kernel events. Whatever the API, the events form one shape: every
step starts with ``message_start``, every ``content_block_start`` has its
``content_block_stop``, a ``message_delta`` carries the stop reason and usage, and
``message_stop`` ends the call.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from .errors import ConfigError, ProviderError
from .types import (
    ContentBlock,
    ContentBlockStart,
    ContentBlockStop,
    InferenceRequest,
    InferenceResponse,
    InputJsonDelta,
    MessageDelta,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextStart,
    ToolUseBlock,
    ToolUseStart,
    Usage,
)

__all__ = [
    "Accumulator",
    "ModelInfo",
    "Provider",
    "ProviderSpec",
    "complete",
    "origin",
    "same_origin",
]


@runtime_checkable
class Provider(Protocol):
    """A model API, seen through kernel types."""

    def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        """Send ``request`` and yield the answer's events as they arrive.

        :raises ProviderError: when the call fails; saying which provider, what happened and
            what to do.
        """
        ...


@attrs.frozen(kw_only=True)
class ModelInfo:
    """One model of a provider's catalog."""

    id: str
    name: str
    context_window: int | None = None
    max_output_tokens: int | None = None


@attrs.frozen(kw_only=True)
class ProviderSpec:
    """What a plugin registers for a provider.

    :ivar name: registry name (``"anthropic"``), unique across plugins.
    :ivar display_name: the name shown to people (``"Anthropic"``).
    :ivar factory: builds a provider from JSON-like options; raises
        :class:`~wingspan.ConfigError` naming a bad option.
    :ivar auth_types: how it authenticates (``("api_key",)``, or ``()`` for none).
    :ivar models: the embedded model catalog, usable offline.
    :ivar env_key: the environment variable that holds the key of the provider's official
        endpoint (:attr:`base_url`): read when no key is given, and only for that endpoint
        (or, on a server, an endpoint its operator bound the key to). The SDK, the CLI and
        the server all decide with :meth:`resolve_api_key`.
    :ivar list_models: the catalog merged with the provider's own list endpoint, given the
        provider options (``base_url``, key); never fails (the embedded catalog when the
        endpoint cannot be reached). ``None``: the embedded catalog is all there is.
    :ivar base_url: the provider's official endpoint, the one its key belongs to. A provider
        that sets it takes the options ``base_url``, ``api_key`` and ``env_fallback`` (as the
        built-in HTTP providers do), so that a server can decide where a stored or
        environment key may be sent: to this endpoint, or one its operator bound the key to.
    :ivar operator_options: options that choose where credentials come from (``api_key``,
        ``api_key_env``...): settings for whoever runs the provider, never for the clients
        of a server, which refuses them in the agents it is sent.
    :ivar secret_options: options whose values (or, for an object of header names, the values
        of headers that carry credentials) a server never shows back.
    :ivar check_options: checks an agent's options without building the provider or looking
        for a key; raises :class:`~wingspan.ConfigError` naming the unknown or ill-typed
        option. ``None``: the options are checked when the provider is built.
    """

    name: str
    display_name: str
    factory: Callable[[Mapping[str, Any]], Provider]
    auth_types: tuple[str, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    env_key: str | None = None
    list_models: Callable[[Mapping[str, Any]], Awaitable[tuple[ModelInfo, ...]]] | None = None
    base_url: str | None = None
    operator_options: tuple[str, ...] = ()
    secret_options: tuple[str, ...] = ()
    check_options: Callable[[Mapping[str, Any]], object] | None = None

    def resolve_api_key(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        env_fallback: bool = True,
        key_urls: Iterable[str] = (),
    ) -> str | None:
        """The API key a provider built with ``options`` uses, or ``None`` for none: the
        ``api_key`` option; else the variable the ``api_key_env`` option names; else, unless
        ``env_fallback`` (this argument, or the option of that name) is false, the variable
        :attr:`env_key` names — but only when the endpoint (the ``base_url`` option, else
        :attr:`base_url`) has the origin of :attr:`base_url` or of one of ``key_urls``, so
        that pointing a provider elsewhere never sends that key there.

        The one place the key is found: the HTTP providers call it when they are built (so
        the SDK and the CLI), the server when it adds a key to an agent's options.

        :param environ: the environment (default ``os.environ``, read now).
        :param env_fallback: whether :attr:`env_key` may be read at all (a server's
            ``env_fallback`` setting).
        :param key_urls: other endpoints the :attr:`env_key` key belongs to (on a server, the
            base URLs its operator bound to the provider).
        :raises ConfigError: when ``api_key_env`` names a variable that is not set.
        """
        options = options or {}
        environ = os.environ if environ is None else environ
        key = options.get("api_key")
        if isinstance(key, str) and key:
            return key
        variable = options.get("api_key_env")
        if isinstance(variable, str) and variable:
            value = environ.get(variable) or None
            if value is None:
                raise ConfigError(
                    f"{self.name}: option 'api_key_env' names {variable}, which is not set — "
                    "set it, or pass the api_key option", option="api_key_env",
                )
            return value
        if not env_fallback or options.get("env_fallback") is False or not self.env_key:
            return None
        target = options.get("base_url") or self.base_url
        if self.base_url is not None and not (
            isinstance(target, str)
            and any(same_origin(target, home) for home in (self.base_url, *key_urls))
        ):
            return None
        return environ.get(self.env_key) or None

    async def catalog(self, options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
        """The models to show: :attr:`list_models` when there is one, else :attr:`models`."""
        if self.list_models is None:
            return self.models
        return await self.list_models(options or {})


def origin(url: str) -> tuple[str, str, int] | None:
    """The origin of an http(s) URL: scheme, host (lower case) and port (the scheme's default
    when none is given); ``None`` for anything else. Keys belong to origins."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    first = origin(a)
    return first is not None and first == origin(b)


class Accumulator:
    """Builds an :class:`~wingspan.InferenceResponse` from a call's stream events.

    Feed every event to :meth:`add`; :meth:`response` gives the result. Tool input whose
    JSON is broken becomes ``{}`` in the response and its error is kept in
    :attr:`invalid_inputs`, so the loop can answer the call with an error the model can fix
    instead of storing a broken call.
    """

    __slots__ = (
        "_blocks", "_parts", "invalid_inputs", "stop_reason", "text", "tool_uses", "usage"
    )

    def __init__(self) -> None:
        self._blocks: dict[int, TextStart | ToolUseStart] = {}
        self._parts: dict[int, list[str]] = {}
        self.stop_reason: str | None = None
        self.usage = Usage()
        #: tool-use id -> why its input could not be read.
        self.invalid_inputs: dict[str, str] = {}
        #: Set by :meth:`response`: the tool calls asked for, and the text, of the answer.
        self.tool_uses: tuple[ToolUseBlock, ...] = ()
        self.text = ""

    def add(self, event: StreamEvent) -> None:
        kind = type(event)
        if kind is TextDelta or kind is InputJsonDelta:
            parts = self._parts.get(event.index)  # type: ignore[union-attr]
            if parts is None:
                raise ProviderError(
                    f"malformed stream: delta for block {event.index} before its "  # type: ignore[union-attr]
                    "content_block_start"
                )
            parts.append(event.text if kind is TextDelta else event.partial_json)  # type: ignore[union-attr]
        elif kind is ContentBlockStart:
            self._blocks[event.index] = event.content_block  # type: ignore[union-attr]
            self._parts[event.index] = []  # type: ignore[union-attr]
        elif kind is MessageDelta:
            self.stop_reason = event.stop_reason  # type: ignore[union-attr]
            self.usage = event.usage  # type: ignore[union-attr]
        elif kind is ContentBlockStop and event.index not in self._blocks:  # type: ignore[union-attr]
            raise ProviderError(
                f"malformed stream: content_block_stop for unknown block {event.index}"  # type: ignore[union-attr]
            )

    def response(self) -> InferenceResponse:
        """The response so far. ``stop_reason`` defaults from the content when the stream
        gave none."""
        content: list[ContentBlock] = []
        uses: list[ToolUseBlock] = []
        texts: list[str] = []
        blocks = self._blocks
        # Blocks arrive in index order from every provider; sort only when they did not.
        indexes = list(blocks)
        if indexes != sorted(indexes):
            indexes.sort()
        for index in indexes:
            head = blocks[index]
            text = "".join(self._parts[index])
            if type(head) is TextStart:
                if text:
                    content.append(TextBlock(text=text))
                    texts.append(text)
                continue
            assert isinstance(head, ToolUseStart)
            use = ToolUseBlock(id=head.id, name=head.name, input=self._parse(head, text))
            content.append(use)
            uses.append(use)
        self.tool_uses = tuple(uses)
        self.text = "".join(texts)
        stop_reason = self.stop_reason or ("tool_use" if uses else "end_turn")
        return InferenceResponse(content=tuple(content), stop_reason=stop_reason, usage=self.usage)

    def _parse(self, head: ToolUseStart, text: str) -> dict[str, Any]:
        if not text.strip():
            return {}
        try:
            value = json.loads(text)
        except ValueError as exc:
            self.invalid_inputs[head.id] = (
                f"the input of this {head.name!r} call was not valid JSON ({exc}); "
                "call the tool again with a JSON object"
            )
            return {}
        if not isinstance(value, dict):
            self.invalid_inputs[head.id] = (
                f"the input of this {head.name!r} call was JSON but not an object; "
                "call the tool again with a JSON object"
            )
            return {}
        return value


async def complete(provider: Provider, request: InferenceRequest) -> InferenceResponse:
    """A non-streaming call: the stream drained into a response."""
    accumulator = Accumulator()
    async for event in provider.stream(request):
        accumulator.add(event)
    return accumulator.response()
