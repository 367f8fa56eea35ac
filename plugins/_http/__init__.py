"""What the HTTP providers (anthropic, openai, ollama) share, written once.

- :func:`parse_options` — the common options, checked, plus each provider's extras
  (:mod:`.options`);
- :class:`HttpClient` — one connection pool per provider (and event loop), the streaming
  POST with retries *before* the stream starts, and the mapping of every failure to a
  :class:`~wingspan.ProviderError` that says what to do (:mod:`.client`);
- :class:`SSEDecoder` and :class:`NDJSONDecoder` — the two stream framings (:mod:`.framing`);
- :class:`BlockWriter` — turns "some text, then a tool call, then..." into the kernel's
  ``content_block_start``/``delta``/``content_block_stop`` shape (:mod:`.blocks`);
- :class:`ModelCatalog` — the embedded catalog merged with the provider's list endpoint,
  cached for an hour (:mod:`.catalog`).

A private helper package, not a plugin: the providers use it as ``_http.X``, through the
names below. httpx is imported only when a request is made, so importing the provider
plugins stays cheap.
"""

from __future__ import annotations

from wingspan.providers import origin, same_origin

from .blocks import BlockWriter, call_id_prefix
from .catalog import ModelCatalog
from .client import HttpClient, api_message, retry_after, retry_delay
from .framing import (
    NDJSONDecoder,
    ServerSentEvent,
    SSEDecoder,
    load_json,
    token_count,
    translate,
)
from .options import (
    DEFAULT_MAX_TOKENS,
    Check,
    Settings,
    api_root,
    check_base_url,
    check_bool,
    check_choice,
    check_extra_body,
    check_headers,
    check_int,
    check_number,
    check_str,
    check_str_list,
    merge_body,
    parse_options,
    spec_fields,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "BlockWriter",
    "Check",
    "HttpClient",
    "ModelCatalog",
    "NDJSONDecoder",
    "SSEDecoder",
    "ServerSentEvent",
    "Settings",
    "api_message",
    "api_root",
    "call_id_prefix",
    "check_base_url",
    "check_bool",
    "check_choice",
    "check_extra_body",
    "check_headers",
    "check_int",
    "check_number",
    "check_str",
    "check_str_list",
    "load_json",
    "merge_body",
    "origin",
    "parse_options",
    "retry_after",
    "retry_delay",
    "same_origin",
    "spec_fields",
    "token_count",
    "translate",
]
