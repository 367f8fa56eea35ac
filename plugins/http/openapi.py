"""``GET /openapi.json``: the API described route by route.

The description table below is checked against the app's routes by the tests (and
:func:`undocumented_routes`), so adding a route without describing it fails the build.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Quart

import wingspan

__all__ = ["ROUTES", "app_routes", "build_openapi", "undocumented_routes"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object"}
_ARRAY = {"type": "array", "items": _OBJECT}
_ID = {"type": "string", "description": "a ULID"}

#: (path, method) -> (summary, request body schema or None, {status: description}).
ROUTES: dict[tuple[str, str], tuple[str, dict[str, Any] | None, dict[str, str]]] = {
    ("/health", "get"): ("Liveness check; never needs a token", None, {"200": "ok"}),
    ("/openapi.json", "get"): ("This document", None, {"200": "the OpenAPI document"}),
    ("/tools", "get"): ("Every tool agents on this server may use", None, {"200": "tools"}),
    ("/plugins", "get"): ("Loaded plugins with their hooks", None, {"200": "plugins"}),
    ("/provider", "get"): ("Installed providers, sorted by id", None, {"200": "providers"}),
    ("/provider/{provider_id}", "get"): ("One provider", None,
                                         {"200": "the provider", "404": "unknown"}),
    ("/provider/{provider_id}/models", "get"): (
        "The provider's model catalog", None, {"200": "models", "404": "unknown provider"}),
    ("/provider/{provider_id}/models/{model_id}", "get"): (
        "One model", None, {"200": "the model", "404": "unknown provider or model"}),
    ("/provider/auth", "get"): ("Which providers have a key (never the keys)", None,
                                {"200": "credential status"}),
    ("/provider/auth", "put"): (
        "Store provider keys (merged with those stored)",
        {"type": "object", "required": ["providers"], "properties": {"providers": {
            "type": "object", "additionalProperties": {
                "type": "object", "required": ["key"],
                "properties": {"type": {"type": "string"}, "key": {"type": "string"}}}}}},
        {"200": "stored", "400": "unknown provider or bad body"}),
    ("/provider/auth/{provider_id}", "delete"): ("Forget a provider's key", None,
                                                 {"200": "deleted", "404": "none stored"}),
    ("/agents", "post"): (
        "Create an agent",
        {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "instructions": {"type": "string"},
            "tools": {"type": "array", "items": {"type": "string"}},
            "provider": {"type": "string"}, "model": {"type": ["string", "null"]},
            "options": _OBJECT, "output_schema": {"type": ["object", "null"]},
            "max_steps": {"type": "integer", "minimum": 1}}},
        {"201": "the agent", "400": "invalid"}),
    ("/agents", "get"): ("Agents, newest first", None, {"200": "agents"}),
    ("/agents/{agent_id}", "get"): ("One agent", None, {"200": "the agent", "404": "unknown"}),
    ("/agents/{agent_id}", "put"): ("Change an agent; absent fields are unchanged", _OBJECT,
                                    {"200": "the agent", "400": "invalid", "404": "unknown"}),
    ("/agents/{agent_id}", "delete"): ("Delete an agent", None,
                                       {"200": "deleted", "404": "unknown"}),
    ("/sessions", "post"): (
        "Create a session",
        {"type": "object", "properties": {"work_dir": {"type": ["string", "null"]},
                                          "title": {"type": "string"}}},
        {"201": "the session", "400": "invalid"}),
    ("/sessions", "get"): ("Sessions, newest first, paginated (?limit=, ?cursor=, Link)",
                           None, {"200": "sessions without history"}),
    ("/sessions/{session_id}", "get"): ("One session with its history", None,
                                        {"200": "the session", "404": "unknown"}),
    ("/sessions/{session_id}", "put"): ("Change work_dir or title", _OBJECT,
                                        {"200": "the session", "400": "invalid",
                                         "404": "unknown"}),
    ("/sessions/{session_id}", "delete"): ("Abort its run, delete it and its history", None,
                                           {"200": "deleted", "404": "unknown"}),
    ("/sessions/{session_id}/message", "post"): (
        "Run an agent on a message and answer when it is done",
        {"type": "object", "required": ["agent_id", "message"],
         "properties": {"agent_id": _ID, "message": {"type": "string"}}},
        {"200": "the result", "400": "invalid", "404": "unknown session or agent",
         "409": "aborted", "502": "provider error"}),
    ("/sessions/{session_id}/message/stream", "post"): (
        "Run an agent on a message, streaming its events (SSE)",
        {"type": "object", "required": ["agent_id", "message"],
         "properties": {"agent_id": _ID, "message": {"type": "string"}}},
        {"200": "text/event-stream", "400": "invalid", "404": "unknown session or agent"}),
    ("/sessions/{session_id}/abort", "post"): ("Cancel the active run", None,
                                               {"200": "aborted", "404": "unknown",
                                                "409": "no active run"}),
}


def app_routes(app: Quart) -> set[tuple[str, str]]:
    """``(path, method)`` of every route the app serves, paths in OpenAPI's ``{name}`` form."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((path, method.lower()))
    return routes


def undocumented_routes(app: Quart) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Routes served but not described, and routes described but not served."""
    served = app_routes(app)
    return served - set(ROUTES), set(ROUTES) - served


def build_openapi(app: Quart) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), (summary, body, responses) in sorted(ROUTES.items()):
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {
                status: {"description": text,
                         **({"content": {"application/json": {"schema": _ERROR}}}
                            if int(status) >= 400 else {})}
                for status, text in responses.items()
            },
        }
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string"}} for name in re.findall(r"{(\w+)}", path)]
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = {
                "required": method != "put" or path.startswith("/provider"),
                "content": {"application/json": {"schema": body}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "wingspan", "version": wingspan.__version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": {
                "type": "object", "required": ["error", "code"],
                "properties": {"error": {"type": "string"}, "code": {"type": "string"},
                               "details": {"type": "array", "items": {
                                   "type": "object",
                                   "properties": {"field": {"type": "string"},
                                                  "reason": {"type": "string"}}}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
