"""Wire types: the values that travel between sessions, providers, stores and clients.

All are frozen attrs classes. Their JSON shapes are defined in one place only, the
converter in :mod:`wingspan.wire`; these classes have no ``to_dict``/``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeAlias

import attrs

__all__ = [
    "FINISHED_STATUSES",
    "UNKNOWN_USAGE",
    "ContentBlock",
    "ContentBlockStart",
    "ContentBlockStop",
    "Done",
    "ErrorEvent",
    "ErrorInfo",
    "InferenceRequest",
    "InferenceResponse",
    "InputJsonDelta",
    "LogEvent",
    "LoggedEvent",
    "Message",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "PermissionAction",
    "PermissionDecision",
    "PermissionRequest",
    "PermissionRequested",
    "PermissionResolved",
    "Ping",
    "ResolvedBy",
    "Result",
    "Resync",
    "Role",
    "Rule",
    "RunFinished",
    "RunQueued",
    "RunStarted",
    "RunStatus",
    "StopReason",
    "StreamEvent",
    "TextBlock",
    "TextDelta",
    "TextStart",
    "ToolCall",
    "ToolDefinition",
    "ToolResultBlock",
    "ToolResultEvent",
    "ToolUseBlock",
    "ToolUseStart",
    "Usage",
]

Role: TypeAlias = Literal["user", "assistant"]
#: ``end_turn``, ``tool_use``, ``max_tokens``, ``stop_sequence`` come from providers;
#: ``max_steps`` is the loop's own. Providers may pass through others.
StopReason: TypeAlias = str

JSONObject: TypeAlias = Mapping[str, Any]


# --- content blocks ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TextBlock:
    """Text written by the user or the model."""

    type: ClassVar[str] = "text"

    text: str


@attrs.frozen(kw_only=True)
class ToolUseBlock:
    """The model asks for a tool call. ``input`` is a JSON object."""

    type: ClassVar[str] = "tool_use"

    id: str
    name: str
    input: JSONObject


@attrs.frozen(kw_only=True)
class ToolResultBlock:
    """The answer to the :class:`ToolUseBlock` whose id is ``tool_use_id``."""

    type: ClassVar[str] = "tool_result"

    tool_use_id: str
    content: str
    is_error: bool = False


ContentBlock: TypeAlias = TextBlock | ToolUseBlock | ToolResultBlock


def _to_blocks(value: Any) -> tuple[ContentBlock, ...]:
    """``content`` as a tuple of blocks: a string is one text block, a list becomes a tuple."""
    if type(value) is tuple:
        return value
    if isinstance(value, str):
        return (TextBlock(text=value),)
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"Message content must be a tuple of blocks or a string, got {value!r}")


@attrs.frozen(kw_only=True)
class Message:
    """One turn of a conversation.

    Tool results are user-role messages holding :class:`ToolResultBlock` s, paired with the
    :class:`ToolUseBlock` ids of the assistant turn before them.
    """

    role: Role
    content: tuple[ContentBlock, ...] = attrs.field(converter=_to_blocks)

    @property
    def text(self) -> str:
        """The concatenated text blocks of this message."""
        return "".join(b.text for b in self.content if type(b) is TextBlock)

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The tool calls this message asks for, in order."""
        return tuple(b for b in self.content if type(b) is ToolUseBlock)


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts; ``None`` where the server did not report one (unknown, which is not
    zero). Adding two gives their sum: an unknown count adds nothing, and a sum is unknown
    only when every part of it is."""

    input_tokens: int | None = 0
    output_tokens: int | None = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=_plus(self.input_tokens, other.input_tokens),
            output_tokens=_plus(self.output_tokens, other.output_tokens),
        )


#: The usage of a call the server reported none for.
UNKNOWN_USAGE = Usage(input_tokens=None, output_tokens=None)


def _plus(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


@attrs.frozen(kw_only=True)
class ToolDefinition:
    """What a provider tells the model about one tool."""

    name: str
    description: str
    input_schema: JSONObject


@attrs.frozen(kw_only=True)
class InferenceRequest:
    """One model call: the history so far and what the model may use."""

    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...] = ()
    instructions: str | None = None
    output_schema: JSONObject | None = None
    options: JSONObject = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class InferenceResponse:
    """One model call's answer, assembled from its stream events."""

    content: tuple[ContentBlock, ...]
    stop_reason: StopReason
    usage: Usage = Usage()

    @property
    def message(self) -> Message:
        """The assistant message this response appends to history."""
        return Message(role="assistant", content=self.content)


# --- results ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ToolCall:
    """One tool call of a run, with its outcome."""

    id: str
    tool_name: str
    input: JSONObject
    output: str
    is_error: bool = False


@attrs.frozen(kw_only=True)
class Result:
    """What a run gives back.

    :ivar response: the final assistant text.
    :ivar tool_calls: every tool call of the run, in order.
    :ivar usage: token usage summed over every model call.
    :ivar steps: the number of model calls.
    :ivar stop_reason: why the run ended (``end_turn``, ``max_steps``, ``max_tokens``...).
    :ivar run_id: the run's ULID.
    """

    response: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    steps: int = 0
    stop_reason: StopReason = "end_turn"
    run_id: str | None = None


# --- stream events --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TextStart:
    """The head of a text block, as announced by ``content_block_start``."""

    type: ClassVar[str] = "text"


@attrs.frozen(kw_only=True)
class ToolUseStart:
    """The head of a tool-use block, as announced by ``content_block_start``."""

    type: ClassVar[str] = "tool_use"

    id: str
    name: str


@attrs.frozen(kw_only=True)
class MessageStart:
    """A model call begins. ``step`` counts model calls within the run, from 1."""

    type: ClassVar[str] = "message_start"

    step: int = 0


@attrs.frozen(kw_only=True)
class ContentBlockStart:
    type: ClassVar[str] = "content_block_start"
    index: int
    content_block: TextStart | ToolUseStart


@attrs.frozen(kw_only=True)
class TextDelta:
    type: ClassVar[str] = "text_delta"
    text: str
    index: int


@attrs.frozen(kw_only=True)
class InputJsonDelta:
    """A fragment of a tool call's input JSON; the fragments of a block concatenate."""

    type: ClassVar[str] = "input_json_delta"

    partial_json: str
    index: int


@attrs.frozen(kw_only=True)
class ContentBlockStop:
    type: ClassVar[str] = "content_block_stop"
    index: int


@attrs.frozen(kw_only=True)
class MessageDelta:
    """End-of-call facts: the stop reason and the call's total token usage."""

    type: ClassVar[str] = "message_delta"

    stop_reason: StopReason
    usage: Usage = Usage()


@attrs.frozen(kw_only=True)
class MessageStop:
    """A model call is complete."""

    type: ClassVar[str] = "message_stop"


@attrs.frozen(kw_only=True)
class Ping:
    """Keep-alive; carries nothing."""

    type: ClassVar[str] = "ping"


@attrs.frozen(kw_only=True)
class ErrorInfo:
    code: str
    message: str


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """Terminal: the run failed."""

    type: ClassVar[str] = "error"

    error: ErrorInfo


@attrs.frozen(kw_only=True)
class ToolResultEvent:
    """A tool finished (wingspan's addition to the seed's vocabulary)."""

    type: ClassVar[str] = "tool_result"

    tool_use_id: str
    tool_name: str
    content: str
    is_error: bool = False


@attrs.frozen(kw_only=True)
class Done:
    """Terminal: the run completed. Carries the same facts as :class:`Result`."""

    type: ClassVar[str] = "done"

    usage: Usage
    steps: int
    response: str
    tool_calls: tuple[ToolCall, ...]
    stop_reason: StopReason
    run_id: str | None = None

    @property
    def result(self) -> Result:
        return Result(
            response=self.response,
            tool_calls=self.tool_calls,
            usage=self.usage,
            steps=self.steps,
            stop_reason=self.stop_reason,
            run_id=self.run_id,
        )


# --- run lifecycle and the event log ---------------------------------------------------------

#: Where a run is: admitted and waiting its turn (``queued``), executing (``running``), paused
#: on a permission request (``waiting``), or finished one of four ways. ``interrupted``: the
#: process running it died, set by whoever noticed first.
RunStatus: TypeAlias = Literal[
    "queued", "running", "waiting", "completed", "failed", "aborted", "interrupted"
]
#: The statuses of a run that has ended.
FINISHED_STATUSES: frozenset[str] = frozenset({"completed", "failed", "aborted", "interrupted"})


@attrs.frozen(kw_only=True)
class RunQueued:
    """A run was admitted to its session's queue (event log only, not a run's stream)."""

    type: ClassVar[str] = "run_queued"

    run_id: str
    status: RunStatus = "queued"


@attrs.frozen(kw_only=True)
class RunStarted:
    """A run got its turn and began (event log only)."""

    type: ClassVar[str] = "run_started"

    run_id: str
    status: RunStatus = "running"


@attrs.frozen(kw_only=True)
class RunFinished:
    """A run ended; ``status`` says how (event log only). Always its run's last event."""

    type: ClassVar[str] = "run_finished"

    run_id: str
    status: RunStatus


@attrs.frozen(kw_only=True)
class Resync:
    """The start of a replay whose cursor fell in a pruned range: the events before
    ``next_seq`` that were kept are gone (the session's history holds the messages)."""

    type: ClassVar[str] = "resync"

    next_seq: int
    reason: str = "pruned"


# --- permissions -----------------------------------------------------------------------------

#: What a rule does with a tool call it matches: run it, ask a person first, or refuse it.
PermissionAction: TypeAlias = Literal["allow", "ask", "deny"]
#: A person's answer to a permission request; ``allow_always`` also grants the session every
#: later call of that tool with a subject the grant's pattern matches.
PermissionDecision: TypeAlias = Literal["allow", "allow_always", "deny"]
#: Who resolved a request: a person (or an approval callback), a rule (a grant made meanwhile),
#: its timeout, or the end of its run.
ResolvedBy: TypeAlias = Literal["user", "rule", "timeout", "abort"]


def _glob(instance: Any, attribute: attrs.Attribute[str], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty glob, got {value!r}")


@attrs.frozen(kw_only=True)
class Rule:
    """A permission rule: calls of the tools named by ``tool`` whose subject ``match``
    matches get ``action``. Both are globs (:func:`fnmatch.fnmatchcase`: ``*`` matches any
    characters, ``/`` and spaces included; ``?``, ``[seq]``); the last rule matching a call
    decides (:func:`wingspan.permissions.decide`)."""

    tool: str = attrs.field(default="*", validator=_glob)
    match: str = attrs.field(default="*", validator=_glob)
    action: PermissionAction


@attrs.frozen(kw_only=True)
class PermissionRequest:
    """A tool call waiting for a person: stored before its event is sent, answered once.

    :ivar subject: what the person judges: the bash command, the path, the URL...
    :ivar status: ``pending`` until answered, then ``allowed`` or ``denied``.
    :ivar decision: the answer (``None`` while pending).
    :ivar message: with a ``deny``, what the model is told.
    :ivar by: who resolved it.
    """

    id: str
    session_id: str
    run_id: str
    tool_use_id: str
    tool_name: str
    input: JSONObject
    subject: str
    status: Literal["pending", "allowed", "denied"] = "pending"
    decision: PermissionDecision | None = None
    message: str | None = None
    by: ResolvedBy | None = None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None = None


@attrs.frozen(kw_only=True)
class PermissionRequested:
    """A tool call of the run waits for a person's answer (:class:`PermissionRequest`)."""

    type: ClassVar[str] = "permission_request"

    request: PermissionRequest


@attrs.frozen(kw_only=True)
class PermissionResolved:
    """A permission request of the run was answered, and by whom."""

    type: ClassVar[str] = "permission_resolved"

    request_id: str
    decision: PermissionDecision
    by: ResolvedBy


StreamEvent: TypeAlias = (
    MessageStart
    | ContentBlockStart
    | TextDelta
    | InputJsonDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | ErrorEvent
    | ToolResultEvent
    | PermissionRequested
    | PermissionResolved
    | Done
)
#: What a session's event log holds: every event of its runs' streams, and each run's
#: lifecycle around them.
LogEvent: TypeAlias = StreamEvent | RunQueued | RunStarted | RunFinished


@attrs.frozen(kw_only=True)
class LoggedEvent:
    """One entry of a session's event log.

    :ivar seq: its number, strictly increasing within the session, from 1 (the SSE ``id``).
    :ivar run_id: the run it belongs to.
    :ivar event: the event (a :class:`Resync` only at the start of a replay, never stored).
    """

    seq: int
    run_id: str
    event: LogEvent | Resync
