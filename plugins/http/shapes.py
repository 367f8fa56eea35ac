"""The HTTP API's request and response bodies, as attrs classes.

Their JSON comes from the runtime's converter (:mod:`wingspan.wire`), like every other wire
type: requests are structured strictly (unknown fields and wrong types are 400s naming the
field) and responses unstructured. Update requests have every field optional; which fields
were actually sent is read from the body's keys, so ``null`` can be told from "absent".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from wingspan import Message, PermissionDecision, Rule, Usage

JSONObject = Mapping[str, Any]


# --- requests ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CreateAgentRequest:
    name: str
    instructions: str = ""
    tools: tuple[str, ...] = ()
    provider: str = "test"
    model: str | None = None
    options: JSONObject = attrs.field(factory=dict)
    output_schema: JSONObject | None = None
    max_steps: int | None = None
    permissions: tuple[Rule, ...] = ()


@attrs.frozen(kw_only=True)
class UpdateAgentRequest:
    name: str | None = None
    instructions: str | None = None
    tools: tuple[str, ...] | None = None
    provider: str | None = None
    model: str | None = None
    options: JSONObject | None = None
    output_schema: JSONObject | None = None
    max_steps: int | None = None
    permissions: tuple[Rule, ...] | None = None


@attrs.frozen(kw_only=True)
class SessionRequest:
    """``POST /sessions`` and ``PUT /sessions/{id}``."""

    work_dir: str | None = None
    title: str | None = None


@attrs.frozen(kw_only=True)
class MessageRequest:
    """Both fields are required, but checked one by one after the shape, in the order the
    API promises (``message`` first, then ``agent_id``)."""

    agent_id: str | None = None
    message: str | None = None
    #: What to do when the session is busy: ``queue`` (default), ``reject``, ``interrupt``.
    if_busy: str | None = None


@attrs.frozen(kw_only=True)
class CredentialInput:
    type: str = "api_key"
    key: str
    #: The endpoint the key belongs to, when not the provider's official one.
    base_url: str | None = None


@attrs.frozen(kw_only=True)
class PutCredentialsRequest:
    providers: Mapping[str, CredentialInput]


# --- responses --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FieldError:
    field: str
    reason: str


@attrs.frozen(kw_only=True)
class ErrorBody:
    error: str
    code: str
    details: tuple[FieldError, ...] | None = None


@attrs.frozen(kw_only=True)
class Status:
    status: str


@attrs.frozen(kw_only=True)
class AbortAnswer:
    status: str
    run_id: str | None


@attrs.frozen(kw_only=True)
class SessionView:
    id: str
    title: str
    work_dir: str | None
    history: tuple[Message, ...]
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class SessionSummary:
    id: str
    title: str
    work_dir: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class ProviderView:
    id: str
    name: str
    auth_types: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ToolView:
    name: str
    description: str
    input_schema: JSONObject
    plugin: str | None


@attrs.frozen(kw_only=True)
class CredentialStatus:
    type: str
    configured: bool
    #: Where the stored key may be sent, when it is bound to a base URL.
    base_url: str | None = None


@attrs.frozen(kw_only=True)
class CredentialsView:
    providers: Mapping[str, CredentialStatus]
    updated_at: datetime | None


@attrs.frozen(kw_only=True)
class RunView:
    """A run, as ``/runs/{id}`` and the run listings show it."""

    id: str
    session_id: str
    agent_id: str | None
    status: str
    stop_reason: str | None
    steps: int
    usage: Usage
    error: str | None
    idempotency_key: str | None
    first_seq: int | None
    last_seq: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@attrs.frozen(kw_only=True)
class AnswerRequest:
    """The body of ``POST /sessions/{id}/permissions/{request_id}``."""

    decision: PermissionDecision
    #: With ``deny``, what the model is told.
    message: str | None = None
    #: With ``allow_always``, the glob on the subject the session's grant covers (default:
    #: exactly the request's subject).
    pattern: str | None = None
