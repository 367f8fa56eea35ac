"""Health and discovery: ``/health``, ``/tools``, ``/plugins``, ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app

from wingspan import wire

from ..app import state
from ..openapi import build_openapi
from ..shapes import Status, ToolView

blueprint = Blueprint("meta", __name__)


@blueprint.get("/health")
async def health() -> Any:
    return wire.unstructure(Status(status="ok"), state().converter)


@blueprint.get("/tools")
async def list_tools() -> Any:
    server = state()
    runtime = server.runtime
    allowed = server.config.allowed_tools
    views = [
        ToolView(
            name=tool.name,
            description=tool.description,
            input_schema=tool.input_schema,
            plugin=runtime.tool_plugins.get(tool.name),
        )
        for tool in runtime.get_tools()
        if allowed is None or tool.name in allowed
    ]
    return wire.unstructure(views, server.converter)


@blueprint.get("/plugins")
async def list_plugins() -> Any:
    server = state()
    return wire.unstructure(server.runtime.list_plugins(), server.converter)


@blueprint.get("/openapi.json")
async def openapi() -> Any:
    return build_openapi(current_app)
