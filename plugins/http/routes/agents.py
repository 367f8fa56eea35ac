"""Agents: ``/agents`` and ``/agents/{id}``; and building a runnable agent from a record."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import attrs
from quart import Blueprint

from wingspan import (
    Agent,
    AgentRecord,
    NotFoundError,
    ProviderSpec,
    WingspanError,
    new_id,
    utc_now,
    wire,
)

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..shapes import CreateAgentRequest, Status, UpdateAgentRequest

blueprint = Blueprint("agents", __name__)

#: Keys belong in the store (PUT /provider/auth), never in an agent, which GET returns.
SECRET_OPTIONS = frozenset({"api_key"})


def _check_fields(
    server: ServerState, fields: set[str], *, name: str | None, tools: Iterable[str],
    provider: str | None, options: Any, max_steps: int | None,
) -> None:
    problems: list[tuple[str, str]] = []
    if "name" in fields and not (name or "").strip():
        problems.append(("$.name", "must not be empty"))
    allowed = server.config.allowed_tools
    for i, tool in enumerate(tools):
        if tool not in server.runtime.tools:
            problems.append((f"$.tools[{i}]", f"unknown tool {tool!r}"))
        elif allowed is not None and tool not in allowed:
            problems.append((f"$.tools[{i}]", f"tool {tool!r} is not allowed on this server"))
    if provider is not None and provider not in server.runtime.providers:
        known = ", ".join(sorted(server.runtime.providers)) or "none"
        problems.append(("$.provider", f"unknown provider {provider!r} (installed: {known})"))
    for key in SECRET_OPTIONS & set(options or {}):
        problems.append((f"$.options.{key}",
                         "keys are not kept in agents; store them with PUT /provider/auth"))
    if max_steps is not None and max_steps < 1:
        problems.append(("$.max_steps", "must be at least 1"))
    if problems:
        raise ApiError(400, "invalid agent: " + "; ".join(f"{f}: {r}" for f, r in problems),
                       details=problems)


def _json(record: AgentRecord) -> Any:
    return wire.unstructure(record, state().converter)


@blueprint.post("/agents")
async def create_agent() -> Any:
    server = state()
    body, fields = await read_body(CreateAgentRequest, what="agent")
    _check_fields(server, fields | {"name"}, name=body.name, tools=body.tools,
                  provider=body.provider, options=body.options, max_steps=body.max_steps)
    record = AgentRecord(
        id=new_id(),
        name=body.name,
        instructions=body.instructions,
        tools=tuple(dict.fromkeys(body.tools)),
        provider=body.provider,
        model=body.model,
        options=dict(body.options),
        output_schema=body.output_schema,
        max_steps=body.max_steps if body.max_steps is not None else server.config.max_steps,
    )
    record = await server.require_store().create_agent(record)
    return _json(record), 201


@blueprint.get("/agents")
async def list_agents() -> Any:
    store = state().require_store()
    records: list[AgentRecord] = []
    cursor: str | None = None
    while True:
        page = await store.list_agents(limit=500, cursor=cursor)
        records.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return wire.unstructure(records, state().converter)


@blueprint.get("/agents/<agent_id>")
async def get_agent(agent_id: str) -> Any:
    return _json(await state().require_store().get_agent(agent_id))


@blueprint.put("/agents/<agent_id>")
async def update_agent(agent_id: str) -> Any:
    server = state()
    store = server.require_store()
    current = await store.get_agent(agent_id)
    body, fields = await read_body(UpdateAgentRequest, what="agent")
    nullable = {"model", "output_schema"}
    for name in fields - nullable:
        if getattr(body, name) is None:
            raise ApiError(400, f"invalid agent: $.{name}: must not be null",
                           details=[(f"$.{name}", "must not be null")])
    changes: dict[str, Any] = {name: getattr(body, name) for name in fields}
    if "tools" in changes:
        changes["tools"] = tuple(dict.fromkeys(changes["tools"]))
    if "options" in changes:
        changes["options"] = dict(changes["options"])
    updated = attrs.evolve(current, **changes, updated_at=utc_now())
    _check_fields(server, fields, name=updated.name,
                  tools=updated.tools if "tools" in fields else (),
                  provider=updated.provider if "provider" in fields else None,
                  options=changes.get("options"), max_steps=changes.get("max_steps"))
    return _json(await store.update_agent(updated))


@blueprint.delete("/agents/<agent_id>")
async def delete_agent(agent_id: str) -> Any:
    await state().require_store().delete_agent(agent_id)
    return wire.unstructure(Status(status="deleted"), state().converter)


async def build_agent(server: ServerState, record: AgentRecord) -> Agent:
    """A runnable agent for ``record``, its provider given the stored key (or, unless the
    config turns it off, the provider's environment variable).

    :raises ApiError: 400 naming why the provider cannot be built.
    """
    spec = server.runtime.providers.get(record.provider)
    if spec is None:
        raise ApiError(400, f"agent {record.id}: provider {record.provider!r} is not installed")
    allowed = server.config.allowed_tools
    refused = [t for t in record.tools if allowed is not None and t not in allowed]
    if refused:
        raise ApiError(400, f"agent {record.id}: tools not allowed on this server: "
                       f"{', '.join(refused)}")
    provider_options = await credential_options(server, spec)
    if "api_key" in spec.auth_types and not provider_options and not server.config.env_fallback:
        raise ApiError(
            400,
            f"provider {spec.name!r} has no API key: store one with PUT /provider/auth "
            "(the server's environment fallback is off)",
        )
    try:
        return Agent.from_record(record, server.runtime, provider_options=provider_options)
    except NotFoundError as exc:
        raise ApiError(400, f"agent {record.id}: {exc}") from None
    except WingspanError as exc:
        raise ApiError(400, f"the provider of agent {record.id} cannot be built: {exc}") from None


async def credential_options(server: ServerState, spec: ProviderSpec) -> dict[str, Any]:
    """``{"api_key": ...}`` for a provider that takes a key: the stored one, else (unless the
    config turns it off) its environment variable's; ``{}`` when there is none."""
    if "api_key" not in spec.auth_types:
        return {}
    credential = await server.require_store().get_credential(spec.name)
    key = credential.key if credential is not None else None
    if key is None and spec.env_key and server.config.env_fallback:
        key = os.environ.get(spec.env_key) or None
    return {"api_key": key} if key is not None else {}
