"""A test plugin for the HTTP transport's tests: a slow tool, a provider that needs a key,
and a memory store that writes every history to a file when it is closed (so a test can
check what a server process saved after it exited)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import wingspan
from wingspan import (
    ConfigError,
    ContentBlockStart,
    ContentBlockStop,
    InferenceRequest,
    MessageDelta,
    MessageStart,
    MessageStop,
    ModelInfo,
    ProviderSpec,
    StoreSpec,
    StreamEvent,
    TextDelta,
    TextStart,
    Usage,
    wire,
)
from wingspan.plugins.memory import MemoryStore

KEY_ENV = "WINGSPAN_HTTP_TEST_KEY"


#: session id -> an event the ``slow`` tool sets when it starts on that session; tests put
#: one here to learn, without polling, that a run is in the middle of its tool call.
SLOW_STARTED: dict[str, asyncio.Event] = {}


@wingspan.tool
async def slow(seconds: float, context: wingspan.ToolContext) -> str:
    """Wait, then answer.

    :param seconds: how long to wait.
    """
    started = SLOW_STARTED.get(context.session_id or "")
    if started is not None:
        started.set()
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyedProvider:
    def __init__(self, key: str) -> None:
        self._key = key

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamEvent]:
        yield MessageStart()
        yield ContentBlockStart(index=0, content_block=TextStart())
        yield TextDelta(text=f"key {key_digest(self._key)}", index=0)
        yield ContentBlockStop(index=0)
        yield MessageDelta(stop_reason="end_turn", usage=Usage(input_tokens=1, output_tokens=1))
        yield MessageStop()


def make_keyed(options: Mapping[str, Any]) -> KeyedProvider:
    key = options.get("api_key") or os.environ.get(KEY_ENV)
    if not key:
        raise ConfigError(f"keyed: no API key — set {KEY_ENV}, or pass the api_key option")
    return KeyedProvider(str(key))


class DumpingStore(MemoryStore):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    async def close(self) -> None:
        histories = {}
        page = await self.list_sessions(limit=500)
        for record in page.items:
            histories[record.id] = wire.unstructure(await self.load_messages(record.id))
        Path(self._path).write_text(json.dumps(histories), encoding="utf-8")  # noqa: ASYNC240
        await super().close()


async def open_dumping_store(url: str, settings: Mapping[str, Any]) -> DumpingStore:
    return DumpingStore(url.removeprefix("dumpmem://"))


@wingspan.hookimpl
def wingspan_tools() -> list[wingspan.Tool]:
    return [slow]


KEYED_MODELS = (ModelInfo(id="k-1", name="K one", context_window=1000),
                ModelInfo(id="org/k-2", name="K two"))


async def list_keyed_models(options: Mapping[str, Any]) -> tuple[ModelInfo, ...]:
    """Like a real list endpoint: it answers only with a key (and says what it was asked)."""
    if "api_key" not in options:
        return KEYED_MODELS
    asked = ",".join(f"{k}={v}" for k, v in sorted(options.items()) if k != "api_key")
    return (*KEYED_MODELS, ModelInfo(id="k-listed", name=asked))


@wingspan.hookimpl
def wingspan_providers() -> list[ProviderSpec]:
    return [ProviderSpec(name="keyed", display_name="Keyed (tests)", factory=make_keyed,
                         auth_types=("api_key",), env_key=KEY_ENV, models=KEYED_MODELS,
                         list_models=list_keyed_models)]


@wingspan.hookimpl
def wingspan_stores() -> list[StoreSpec]:
    return [StoreSpec(scheme="dumpmem", open=open_dumping_store)]
