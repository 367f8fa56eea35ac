"""``GET /openapi.json``: the API described route by route.

The description table below is checked against the app's routes by the tests (and
:func:`undocumented_routes`), so adding a route without describing it fails the build.

Bodies are not copied by hand: their JSON Schemas are derived from the attrs classes the
routes answer with and read (:mod:`.shapes` and wingspan's wire types), walking
``attrs.fields`` with their resolved types the way the runtime's converter shapes them
(timestamps as RFC 3339 strings, tagged unions on ``"type"``, every field present, objects
closed). What depends on the server — its tools, providers and token — comes from the app,
so the document describes exactly what this server accepts.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs
from quart import Quart

import wingspan
from wingspan import (
    AgentRecord,
    LogEvent,
    Message,
    ModelInfo,
    PermissionRequest,
    PluginInfo,
    Result,
    StreamEvent,
)

from .errors import CODES
from .shapes import (
    AbortAnswer,
    AnswerRequest,
    CreateAgentRequest,
    CredentialInput,
    CredentialStatus,
    CredentialsView,
    ErrorBody,
    MessageRequest,
    ProviderView,
    PutCredentialsRequest,
    RunView,
    SessionRequest,
    SessionSummary,
    SessionView,
    Status,
    ToolView,
    UpdateAgentRequest,
)

if TYPE_CHECKING:
    from .app import ServerState

__all__ = ["ROUTES", "Route", "app_routes", "build_openapi", "json_schema", "undocumented_routes"]

JSONSchema = dict[str, Any]

#: The ``limit`` of every paginated listing (``routes/sessions.py``).
PAGE_LIMIT = {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}

#: A string holding something other than whitespace (the routes strip, then reject "").
NOT_BLANK = r"\S"


# --- deriving schemas from attrs classes ------------------------------------------------------


@attrs.define
class SchemaBuilder:
    """Derives JSON Schemas from type annotations, collecting every attrs class it meets as
    a component (``#/components/schemas/<class name>``).

    :ivar omit_none: classes whose ``None`` fields are left out of the JSON instead of sent
        as ``null`` (the error body's ``details``, a model's optional facts).
    """

    components: dict[str, JSONSchema] = attrs.field(factory=dict)
    omit_none: frozenset[type] = frozenset()

    def of(self, tp: Any) -> JSONSchema:
        """The schema of values of ``tp`` as the converter unstructures them."""
        if tp is Any:
            return {}
        if tp is type(None) or tp is None:
            return {"type": "null"}
        if tp is str:
            return {"type": "string"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is datetime:
            return {"type": "string", "format": "date-time"}
        if attrs.has(tp):
            return self.ref(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Literal:
            return {"enum": list(args)}
        if origin in (types.UnionType, typing.Union):
            members = [self.of(arg) for arg in args]
            if all(set(m) == {"type"} and isinstance(m["type"], str) for m in members):
                return {"type": [m["type"] for m in members]}  # e.g. ["string", "null"]
            return {"anyOf": members}
        if origin in (tuple, list, Sequence):  # tuple[X, ...]: the converter writes a list
            return {"type": "array", "items": self.of(args[0]) if args else {}}
        if origin in (dict, Mapping):
            value = args[1] if len(args) == 2 else Any
            return {"type": "object"} if value is Any else {
                "type": "object", "additionalProperties": self.of(value)}
        raise TypeError(f"openapi: no JSON Schema for {tp!r}")

    def ref(self, cls: type) -> JSONSchema:
        """``$ref`` to the component of ``cls``, defined on first use."""
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # a placeholder, so a recursive type terminates
            self.components[name] = self.object(cls)
        return {"$ref": f"#/components/schemas/{name}"}

    def object(self, cls: type, *, request: bool = False) -> JSONSchema:
        """The closed object schema of an attrs class.

        :param request: describe what the server reads: fields with defaults are optional.
            Otherwise every field is present, as the converter writes them all.
        """
        hints = typing.get_type_hints(cls)
        properties: dict[str, JSONSchema] = {}
        required: list[str] = []
        tag = getattr(cls, "type", None)
        names = [field.name for field in attrs.fields(cls)]
        if isinstance(tag, str) and "type" not in names:  # a tagged class (wire.register_tagged)
            properties["type"] = {"const": tag}
            required.append("type")
        omit_none = cls in self.omit_none
        for field in attrs.fields(cls):
            tp = hints[field.name]
            optional = field.default is not attrs.NOTHING
            if omit_none and type(None) in typing.get_args(tp):
                tp = typing.Union[tuple(a for a in typing.get_args(tp) if a is not type(None))]  # noqa: UP007
                optional = True
            properties[field.name] = self.of(tp)
            if not (optional and (request or omit_none)):
                required.append(field.name)
        schema: JSONSchema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema


def json_schema(tp: Any) -> tuple[JSONSchema, dict[str, JSONSchema]]:
    """The JSON Schema of ``tp``'s wire form, and the components it refers to."""
    builder = SchemaBuilder()
    return builder.of(tp), builder.components


def _request(
    builder: SchemaBuilder, cls: type, *, required: tuple[str, ...] = (),
    not_null: tuple[str, ...] = (), refine: Mapping[str, JSONSchema] | None = None,
) -> JSONSchema:
    """A request class's schema, adjusted to what its route checks after structuring:
    fields it requires, fields that may not be null, and constraints on values."""
    schema = builder.object(cls, request=True)
    properties = schema["properties"]
    for name in not_null:
        properties[name] = _without_null(properties[name])
    for name, extra in (refine or {}).items():
        properties[name] = _refined(properties[name], extra)
    wanted = [*schema.get("required", ()), *(n for n in required if n not in schema.get(
        "required", ()))]
    if wanted:
        schema["required"] = wanted
    return schema


def _without_null(schema: JSONSchema) -> JSONSchema:
    if isinstance(schema.get("type"), list):
        kinds = [t for t in schema["type"] if t != "null"]
        return {**schema, "type": kinds[0] if len(kinds) == 1 else kinds}
    if "anyOf" in schema:
        members = [m for m in schema["anyOf"] if m != {"type": "null"}]
        return members[0] if len(members) == 1 else {"anyOf": members}
    return schema


def _refined(schema: JSONSchema, extra: JSONSchema) -> JSONSchema:
    """``schema`` with ``extra`` applied to its non-null part (a null stays allowed)."""
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        return {"anyOf": [{**_without_null(schema), **extra}, {"type": "null"}]}
    if "anyOf" in schema:
        return {"anyOf": [m if m == {"type": "null"} else _refined(m, extra)
                          for m in schema["anyOf"]]}
    if "items" in extra and "items" in schema and "$ref" not in schema["items"]:
        return {**schema, "items": {**schema["items"], **extra["items"]},
                **{k: v for k, v in extra.items() if k != "items"}}
    return {**schema, **extra}


def _constant(schema: JSONSchema, field: str, value: str) -> JSONSchema:
    schema = copy.deepcopy(schema)
    schema["properties"][field] = {"const": value}
    return schema


# --- the routes -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Route:
    """One operation: what it answers with and which errors it can answer besides the ones
    every route can (401 with a token, 405, 421, 500; 403 and 415 on state-changing routes,
    400 and 413 on those that read a body).

    :ivar answer: ``(builder, server) -> schema`` of the success body.
    :ivar also: other success statuses answering that body, and when they do.
    :ivar body: ``(builder, server) -> schema`` of the request body, or ``None``.
    :ivar errors: route-specific error statuses and when they happen.
    :ivar store: whether it needs the store (so it can answer 503 before it is open).
    :ivar links: path parameter -> the operations that take the success answer's ``id`` as
        that parameter (OpenAPI links, which a client or a fuzzer can follow).
    """

    summary: str
    status: str = "200"
    description: str = ""
    answer: Callable[[SchemaBuilder, ServerState], JSONSchema]
    also: Mapping[str, str] = attrs.field(factory=dict)
    body: Callable[[SchemaBuilder, ServerState], JSONSchema] | None = None
    body_required: bool = True
    errors: Mapping[int, str] = attrs.field(factory=dict)
    store: bool = True
    paginated: bool = False
    sse: bool = False
    links: Mapping[str, tuple[tuple[str, str], ...]] = attrs.field(factory=dict)
    #: Header and query parameters besides the path's and the pages'.
    parameters: tuple[Mapping[str, Any], ...] = ()


def _of(tp: Any) -> Callable[[SchemaBuilder, ServerState], JSONSchema]:
    return lambda builder, _: builder.of(tp)


def _status(value: str) -> Callable[[SchemaBuilder, ServerState], JSONSchema]:
    return lambda builder, _: _constant(builder.object(Status), "status", value)


def _allowed_tools(server: ServerState) -> list[str]:
    allowed = server.config.allowed_tools
    return sorted(t for t in server.runtime.tools if allowed is None or t in allowed)


def _agent_refinements(server: ServerState) -> dict[str, JSONSchema]:
    tools = _allowed_tools(server)
    limit = server.config.max_steps_limit
    return {
        "name": {"pattern": NOT_BLANK},
        "tools": {"items": {"enum": tools}} if tools else {"maxItems": 0},
        "provider": {"enum": sorted(server.runtime.providers)},
        "options": {"description": "the provider's options, checked by the provider (400 "
                    "naming an unknown or ill-typed one); where keys come from is the "
                    "operator's to set, not an agent's"},
        "max_steps": {"minimum": 1, "maximum": limit},
        "permissions": {"items": RULE_REQUEST},
    }


_GLOB = {"type": "string", "minLength": 1, "default": "*",
         "description": "a glob (* matches any characters, / and spaces included)"}
#: A rule as a request gives it: ``tool`` and ``match`` default to ``*``.
RULE_REQUEST: JSONSchema = {
    "type": "object",
    "properties": {"tool": _GLOB, "match": _GLOB,
                   "action": {"enum": ["allow", "ask", "deny"]}},
    "required": ["action"],
    "additionalProperties": False,
}


def _create_agent(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    return _request(builder, CreateAgentRequest, refine=_agent_refinements(server))


def _update_agent(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    # Only model and output_schema may be set to null; other fields are absent or a value.
    nullable = {"model", "output_schema"}
    names = tuple(f.name for f in attrs.fields(UpdateAgentRequest) if f.name not in nullable)
    return _request(builder, UpdateAgentRequest, not_null=names,
                    refine=_agent_refinements(server))


_WORK_DIR = {"pattern": "^/", "description": "an existing absolute directory (inside the "
             "server's work-dir roots when it has any)"}


def _answer(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    return _request(builder, AnswerRequest)


def _create_session(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    return _request(builder, SessionRequest, refine={"work_dir": _WORK_DIR})


def _update_session(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    return _request(builder, SessionRequest, not_null=("title",),
                    refine={"work_dir": _WORK_DIR})


def _message(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    return _request(builder, MessageRequest, required=("agent_id", "message"),
                    not_null=("agent_id", "message"), refine={
                        "message": {"pattern": NOT_BLANK},
                        "if_busy": {"enum": [*typing.get_args(wingspan.IfBusy), None]}})


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
    "description": "a repeat with the same key and body does not run again (it answers the "
                   "first run); with another body, 409",
}
#: The key of a creation (``idempotency.py``): remembered by the server for 24 h at least.
_CREATION_KEY = {
    **_IDEMPOTENCY_KEY,
    "description": "a repeat with the same key and body creates nothing: it answers 200 with "
                   "the object the first created; with another body, 409. Keys are scoped "
                   "to the server and remembered for 24 h at least",
}
#: The answer to a repeat of a creation's key.
_REPEAT = {"200": "a repeat of an Idempotency-Key: the object created the first time"}
_SEQ = {"type": "string", "pattern": "^[0-9]{1,18}$"}
_RESUME = (
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _SEQ,
     "description": "the seq of the last event received: the stream goes on after it"},
    {"name": "after", "in": "query", "required": False, "schema": _SEQ,
     "description": "as Last-Event-ID (for clients that cannot set headers)"},
)


def _credentials(builder: SchemaBuilder, server: ServerState) -> JSONSchema:
    """One property per provider that takes a credential, with the types it accepts."""
    providers: dict[str, JSONSchema] = {}
    for name in sorted(server.runtime.providers):
        auth_types = server.runtime.providers[name].auth_types
        if not auth_types:
            continue
        credential = _request(builder, CredentialInput, refine={
            "type": {"enum": list(auth_types)}, "key": {"pattern": NOT_BLANK},
            "base_url": BASE_URL})
        if "api_key" not in auth_types:  # the default type would be refused
            credential["required"] = sorted({*credential.get("required", ()), "type"})
        providers[name] = credential
    schema = _request(builder, PutCredentialsRequest)
    schema["properties"]["providers"] = {
        "type": "object", "properties": providers, "additionalProperties": False}
    return schema


#: Characters that Unicode normalization (NFKC) turns into one of ``/?#@:``, which
#: ``urllib.parse.urlsplit`` refuses in a URL's host part (as regular-expression escapes).
NFKC_DELIMITERS = (
    r"\u2047\u2048\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b"
    r"\uff03\uff0f\uff1a\uff1f\uff20"
)
_NETLOC = r"[^/?#\[\]" + NFKC_DELIMITERS + "]"

#: A provider API's base URL (a proxy, a compatible server): what
#: ``wingspan.plugins._http.check_base_url`` takes — http or https, a host, a numeric port
#: if any, no whitespace and no backslash anywhere.
BASE_URL: JSONSchema = {
    "type": "string",
    "description": "an http or https URL with a host",
    "pattern": (
        r"^(?![\s\S]*[\s\\])https?://(?:" + _NETLOC + r"*@)?"
        + _NETLOC.replace("^", "^@:") + "+"
        + r"(?::(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
        r"|6553[0-5]))?(?:[/?#][\s\S]*)?$"
    ),
}


_SSE = (
    "A `text/event-stream` of frames `id: <seq>`, `event: <type>`, `data: <JSON>`. Each "
    "`data` is one of `#/components/schemas/StreamEvent` (its `type` is the frame's event); "
    "the stream ends with one `done` or `error` frame. `id` is the event's seq in the "
    "session's log: sent back as `Last-Event-ID` with the same body, the stream resumes after "
    "it (also on another server sharing the store) instead of running again."
)
_LOG_SSE = (
    "A `text/event-stream` of frames `id: <seq>`, `event: <type>`, `data: <JSON>`, each "
    "`data` one of `#/components/schemas/LogEvent`: the stored events after `Last-Event-ID` "
    "(or `?after=`), then the live ones, each run bracketed by `run_queued`, `run_started` "
    "and `run_finished`; a `ping` (without `id`) after 15 s of silence; a `resync` first when "
    "the cursor fell in a pruned range."
)

#: (path, method) -> its description.
ROUTES: dict[tuple[str, str], Route] = {
    ("/health", "get"): Route(summary="Liveness check; never needs a token",
                              answer=_status("ok"), store=False),
    ("/openapi.json", "get"): Route(summary="This document",
                                    answer=lambda *_: {"type": "object"}, store=False),
    ("/tools", "get"): Route(summary="Every tool agents on this server may use",
                             answer=_of(list[ToolView]), store=False),
    ("/plugins", "get"): Route(summary="Loaded plugins with their hooks",
                               answer=_of(list[PluginInfo]), store=False),
    ("/provider", "get"): Route(summary="Installed providers, sorted by id",
                                answer=_of(list[ProviderView]), store=False),
    ("/provider/{provider_id}", "get"): Route(
        summary="One provider", answer=_of(ProviderView), errors={404: "unknown provider"},
        store=False),
    ("/provider/{provider_id}/models", "get"): Route(
        summary="The provider's model catalog", answer=_of(list[ModelInfo]),
        description=(
            "`?base_url=` lists from a compatible server instead (HTTP providers only; checked "
            "like an agent's base_url, and a stored key goes only where it is bound)"),
        errors={400: "a bad or disallowed base_url", 404: "unknown provider"}),
    ("/provider/{provider_id}/models/{model_id}", "get"): Route(
        summary="One model", answer=_of(ModelInfo),
        errors={404: "unknown provider or model"}),
    ("/provider/auth", "get"): Route(
        summary="Which providers have a credential (never the keys)",
        answer=_of(CredentialsView)),
    ("/provider/auth", "put"): Route(
        summary="Store provider credentials (merged with those stored)", answer=_status("ok"),
        body=_credentials, errors={400: "a bad body, an unknown provider, a type the provider "
                                   "does not take, or an empty key"}),
    ("/provider/auth/{provider_id}", "delete"): Route(
        summary="Forget a provider's credential", answer=_status("deleted"),
        errors={404: "none stored"}),
    ("/agents", "post"): Route(
        summary="Create an agent", status="201", answer=_of(AgentRecord), body=_create_agent,
        also=_REPEAT, parameters=(_CREATION_KEY,),
        links={"agent_id": tuple(("/agents/{agent_id}", m) for m in ("get", "put", "delete"))},
        errors={400: "invalid: unknown or disallowed tools, an unknown provider, ..., or a "
                     "bad Idempotency-Key",
                409: "the Idempotency-Key was used with another body"}),
    ("/agents", "get"): Route(summary="Agents, newest first", answer=_of(list[AgentRecord])),
    ("/agents/{agent_id}", "get"): Route(summary="One agent", answer=_of(AgentRecord),
                                         errors={404: "unknown agent"}),
    ("/agents/{agent_id}", "put"): Route(
        summary="Change an agent; absent fields are unchanged", answer=_of(AgentRecord),
        body=_update_agent, errors={400: "invalid", 404: "unknown agent"}),
    ("/agents/{agent_id}", "delete"): Route(summary="Delete an agent", answer=_status("deleted"),
                                            errors={404: "unknown agent"}),
    ("/sessions", "post"): Route(
        summary="Create a session", status="201", answer=_of(SessionView),
        body=_create_session, body_required=False, also=_REPEAT, parameters=(_CREATION_KEY,),
        # Not to the message routes: they need an agent too, and answer 404 for an unknown one.
        links={"session_id": (*(("/sessions/{session_id}", m) for m in ("get", "put", "delete")),
                              ("/sessions/{session_id}/abort", "post"))},
        errors={400: "invalid, work_dir is not an existing absolute directory inside the "
                "allowed roots, or a bad Idempotency-Key",
                409: "the Idempotency-Key was used with another body"}),
    ("/sessions", "get"): Route(
        summary="Sessions, newest first, without history, paginated",
        description="The next page's URL is in the `Link` header (`rel=\"next\"`).",
        answer=_of(list[SessionSummary]), errors={400: "limit out of range"}, paginated=True),
    ("/sessions/{session_id}", "get"): Route(summary="One session with its history",
                                             answer=_of(SessionView),
                                             errors={404: "unknown session"}),
    ("/sessions/{session_id}", "put"): Route(
        summary="Change work_dir or title", answer=_of(SessionView), body=_update_session,
        errors={400: "invalid", 404: "unknown session"}),
    ("/sessions/{session_id}", "delete"): Route(
        summary="Abort its run, delete it and its history", answer=_status("deleted"),
        errors={404: "unknown session"}),
    ("/sessions/{session_id}/message", "post"): Route(
        summary="Run an agent on a message and answer when it is done", answer=_of(Result),
        body=_message, parameters=(_IDEMPOTENCY_KEY,),
        errors={400: "invalid body, or the agent's provider cannot be built",
                404: "unknown session or agent", 409: "the run was aborted",
                502: "the provider failed (what finished is saved)",
                503: "the store is not open, or the server is stopping",
                504: "the run went over the server's max_run_time (what finished is saved)"}),
    ("/sessions/{session_id}/message/stream", "post"): Route(
        summary="Run an agent on a message, streaming its events (SSE)", description=_SSE,
        answer=lambda *_: {"type": "string"}, body=_message, sse=True,
        parameters=(_IDEMPOTENCY_KEY, *_RESUME),
        errors={400: "invalid body or Last-Event-ID, or the agent's provider cannot be built",
                404: "unknown session or agent",
                409: "the Idempotency-Key was used with another body, the Last-Event-ID is of "
                     "another request's run, or if_busy is reject and the session is busy",
                503: "the store is not open, or the server is stopping"}),
    ("/sessions/{session_id}/abort", "post"): Route(
        summary="Cancel the active run", answer=_of(AbortAnswer),
        errors={404: "unknown session", 409: "no run is active"}),
    ("/sessions/{session_id}/runs", "post"): Route(
        summary="Admit a run; answers at once with it (follow it at /runs/{id}/events)",
        status="202", answer=_of(RunView), body=_message, parameters=(_IDEMPOTENCY_KEY,),
        links={"run_id": (("/runs/{run_id}", "get"), ("/runs/{run_id}/events", "get"))},
        errors={400: "invalid body, or the agent's provider cannot be built",
                404: "unknown session or agent",
                409: "the Idempotency-Key was used with another body, or if_busy is reject "
                     "and the session is busy",
                503: "the store is not open, or the server is stopping"}),
    ("/sessions/{session_id}/runs", "get"): Route(
        summary="The session's runs, newest first, paginated", answer=_of(list[RunView]),
        errors={400: "limit out of range", 404: "unknown session"}, paginated=True),
    ("/sessions/{session_id}/events", "get"): Route(
        summary="Every event of the session after Last-Event-ID (default: from now), live "
                "(SSE)", description=_LOG_SSE, answer=lambda *_: {"type": "string"},
        sse=True, parameters=_RESUME,
        errors={400: "a Last-Event-ID that is no seq of this session",
                404: "unknown session"}),
    ("/sessions/{session_id}/permissions", "get"): Route(
        summary="The session's permission requests, oldest first: the pending ones (default), "
                "or all", answer=_of(list[PermissionRequest]),
        parameters=({"name": "status", "in": "query", "required": False,
                     "schema": {"enum": ["pending", "all"], "default": "pending"}},),
        errors={400: "status is neither pending nor all", 404: "unknown session"}),
    ("/sessions/{session_id}/permissions/{request_id}", "post"): Route(
        summary="Answer a permission request: its run continues at once (on any server "
                "sharing the store, also after the one running it stopped)",
        answer=_of(PermissionRequest), body=_answer,
        errors={400: "invalid answer", 404: "unknown session or request",
                409: "the request was answered already"}),
    ("/runs/{run_id}", "get"): Route(summary="One run", answer=_of(RunView),
                                     errors={404: "unknown run"}),
    ("/runs/{run_id}/abort", "post"): Route(
        summary="Abort a queued, running or waiting run, from any server sharing the store",
        answer=_of(RunView), errors={404: "unknown run", 409: "it has already finished"}),
    ("/runs/{run_id}/events", "get"): Route(
        summary="The run's events from its first (or after Last-Event-ID), then live, to its "
                "end (SSE)", description=_LOG_SSE, answer=lambda *_: {"type": "string"},
        sse=True, parameters=_RESUME,
        errors={400: "a Last-Event-ID that is no seq of the run's session",
                404: "unknown run"}),
}

_STATE_CHANGING = frozenset({"post", "put", "patch", "delete"})


def app_routes(app: Quart) -> set[tuple[str, str]]:
    """``(path, method)`` of every route the app serves, paths in OpenAPI's ``{name}`` form."""
    return set(_endpoints(app))


def _endpoints(app: Quart) -> dict[tuple[str, str], str]:
    """The endpoint (``blueprint.function``) serving each ``(path, method)``."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes[path, method.lower()] = rule.endpoint
    return routes


def undocumented_routes(app: Quart) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Routes served but not described, and routes described but not served."""
    served = app_routes(app)
    return served - set(ROUTES), set(ROUTES) - served


# --- the document -----------------------------------------------------------------------------

_COMMON_ERRORS: Mapping[int, str] = {
    421: "the Host header is not one of the server's allowed hosts",
    405: "the method is not allowed on this path (`Allow` lists those that are)",
    500: "an unexpected error (never with a traceback; see the server log)",
}


def _error_schema(builder: SchemaBuilder, status: int) -> JSONSchema:
    name = f"Error{status}"
    if name not in builder.components:
        builder.components[name] = _constant(builder.object(ErrorBody), "code",
                                             CODES[status])
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(path: str, method: str, route: Route, *, token: bool) -> dict[int, str]:
    errors = dict(_COMMON_ERRORS)
    if token and path != "/health":
        errors[401] = "no or a wrong bearer token"
    if method in _STATE_CHANGING:
        errors[403] = "the request's Origin is neither this server nor an allowed CORS origin"
        errors[415] = "the request has a body that is not application/json"
    if route.body is not None:
        errors[400] = route.errors.get(400, "malformed JSON, wrong types or unknown fields "
                                       "(each named in details)")
        errors[413] = "the body is over the server's size limit"
    if route.store:
        errors[503] = "the store is not open"
    errors.update(route.errors)
    return dict(sorted(errors.items()))


def _operation(
    builder: SchemaBuilder, server: ServerState, path: str, method: str, route: Route,
    *, token: bool, endpoints: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    answer = route.answer(builder, server)
    success: dict[str, Any] = {"description": route.summary}
    if route.links:
        success["links"] = {
            endpoints[target]: {"operationId": endpoints[target],
                                "parameters": {parameter: "$response.body#/id"}}
            for parameter, targets in route.links.items() for target in targets
            if target in endpoints}
    if route.sse:
        success["content"] = {"text/event-stream": {"schema": answer}}
        success["headers"] = {
            name: {"required": True, "schema": {"const": value}}
            for name, value in (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))}
    else:
        success["content"] = {"application/json": {"schema": answer}}
    if route.paginated:
        success["headers"] = {"Link": {
            "description": 'the next page: `</sessions?limit=N&cursor=C>; rel="next"`; '
                           "absent on the last page",
            "schema": {"type": "string"}}}
    responses: dict[str, Any] = {route.status: success}
    for other, text in route.also.items():
        responses[other] = {**success, "description": text}
    for status, text in _errors(path, method, route, token=token).items():
        response: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": _error_schema(builder, status)}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"required": True,
                                                        "schema": {"type": "string"}}}
        elif status == 405:
            response["headers"] = {"Allow": {"required": True, "schema": {"type": "string"}}}
        responses[str(status)] = response
    operation: dict[str, Any] = {"summary": route.summary, "responses": responses}
    if (path, method) in endpoints:
        operation["operationId"] = endpoints[path, method]
    if route.description:
        operation["description"] = route.description
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)]
    if route.paginated:
        parameters += [
            {"name": "limit", "in": "query", "required": False, "schema": PAGE_LIMIT,
             "description": "items per page"},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "where the page starts: the `cursor` of the previous page's Link"},
        ]
    parameters += [dict(parameter) for parameter in route.parameters]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": route.body(builder, server)}},
        }
    if token and path == "/health":
        operation["security"] = []
    return operation


def build_openapi(app: Quart) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``: every route with its request and response
    bodies, as this server (its tools, providers and token) answers them."""
    server: ServerState = app.extensions["wingspan"]
    token = server.config.token is not None
    builder = SchemaBuilder(omit_none=frozenset({CredentialStatus, ErrorBody, ModelInfo}))
    endpoints = _endpoints(app)
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), route in sorted(ROUTES.items()):
        paths.setdefault(path, {})[method] = _operation(builder, server, path, method, route,
                                                        token=token, endpoints=endpoints)
    builder.ref(Message)
    builder.components["StreamEvent"] = builder.of(StreamEvent)
    builder.components["LogEvent"] = builder.of(LogEvent)
    components: dict[str, Any] = {"schemas": dict(sorted(builder.components.items()))}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "wingspan", "version": wingspan.__version__},
        "paths": paths,
        "components": components,
    }
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
