"""wingspan: a small, pluggable kernel for running LLM agents.

The public API is this module's ``__all__``, plus two public modules: :mod:`wingspan.wire`
(the JSON converter: ``dumps``, ``loads``, ``structure``, ``unstructure``) and
:mod:`wingspan.testing` (the kit for tests and plugin authors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .agent import Agent
from .errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    PluginError,
    PluginLoadError,
    ProviderError,
    StoreError,
    ToolError,
    ValidationError,
    WingspanError,
)
from .history import alternates, alternating, check_history, repair_history
from .hookspecs import hookimpl, hookspec
from .ids import new_id
from .loader import PluginInfo
from .procs import ProcessIdentity
from .providers import Accumulator, ModelInfo, Provider, ProviderSpec, complete
from .runtime import Runtime, Settings, default_runtime
from .session import RunStream, Session
from .store import (
    Admission,
    AgentRecord,
    Credential,
    IfBusy,
    Page,
    RunRecord,
    SessionRecord,
    Store,
    StoreSpec,
    utc_now,
)
from .storekit import ClaimQueue, KeyValueStore, paginate
from .tools import FunctionTool, Tool, ToolContext, ToolInvocation, ToolOutcome, encodable, tool
from .transports import TransportSpec
from .types import (
    FINISHED_STATUSES,
    UNKNOWN_USAGE,
    ContentBlock,
    ContentBlockStart,
    ContentBlockStop,
    Done,
    ErrorEvent,
    ErrorInfo,
    InferenceRequest,
    InferenceResponse,
    InputJsonDelta,
    LogEvent,
    LoggedEvent,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    PermissionAction,
    PermissionDecision,
    PermissionRequest,
    PermissionRequested,
    PermissionResolved,
    Ping,
    ResolvedBy,
    Result,
    Resync,
    Rule,
    RunFinished,
    RunQueued,
    RunStarted,
    RunStatus,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextStart,
    ToolCall,
    ToolDefinition,
    ToolResultBlock,
    ToolResultEvent,
    ToolUseBlock,
    ToolUseStart,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "FINISHED_STATUSES",
    "UNKNOWN_USAGE",
    "Accumulator",
    "Admission",
    "Agent",
    "AgentRecord",
    "ClaimQueue",
    "ConfigError",
    "ConflictError",
    "ContentBlock",
    "ContentBlockStart",
    "ContentBlockStop",
    "Credential",
    "Done",
    "ErrorEvent",
    "ErrorInfo",
    "FunctionTool",
    "IfBusy",
    "InferenceRequest",
    "InferenceResponse",
    "InputJsonDelta",
    "KeyValueStore",
    "LogEvent",
    "LoggedEvent",
    "Message",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "ModelInfo",
    "NotFoundError",
    "Page",
    "PermissionAction",
    "PermissionDecision",
    "PermissionRequest",
    "PermissionRequested",
    "PermissionResolved",
    "Ping",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "ProcessIdentity",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "ResolvedBy",
    "Result",
    "Resync",
    "Rule",
    "RunFinished",
    "RunQueued",
    "RunRecord",
    "RunStarted",
    "RunStatus",
    "RunStream",
    "Runtime",
    "Session",
    "SessionRecord",
    "Settings",
    "Store",
    "StoreError",
    "StoreSpec",
    "StreamEvent",
    "TextBlock",
    "TextDelta",
    "TextStart",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolDefinition",
    "ToolError",
    "ToolInvocation",
    "ToolOutcome",
    "ToolResultBlock",
    "ToolResultEvent",
    "ToolUseBlock",
    "ToolUseStart",
    "TransportSpec",
    "Usage",
    "ValidationError",
    "WingspanError",
    "__version__",
    "alternates",
    "alternating",
    "check_history",
    "complete",
    "default_runtime",
    "encodable",
    "get_provider",
    "get_tools",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "new_id",
    "open_store",
    "paginate",
    "repair_history",
    "tool",
    "utc_now",
]


def get_provider(name: str, options: Mapping[str, Any] | None = None) -> Provider:
    """Build a provider by name, e.g. ``get_provider("anthropic", {"model": ...})``.

    :raises NotFoundError: for an unknown name. :raises ConfigError: for bad options.
    """
    return default_runtime().get_provider(name, options)


def get_tools(names: Iterable[str] | None = None) -> list[Tool]:
    """Tools by name (all when ``None``): the same lookup the server uses.

    :raises NotFoundError: naming every unknown tool.
    """
    return default_runtime().get_tools(names)


async def open_store(url: str) -> Store:
    """Open a store from its URL (``sqlite:///path``, ``memory://``)."""
    return await default_runtime().open_store(url)


def list_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its distribution, version and hooks."""
    return default_runtime().list_plugins()
