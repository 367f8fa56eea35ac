"""Agents: ``/agents`` and ``/agents/{id}``; and building a runnable agent from a record."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from quart import Blueprint

from wingspan import (
    Agent,
    AgentRecord,
    ConfigError,
    NotFoundError,
    ProviderSpec,
    StoreError,
    WingspanError,
    new_id,
    utc_now,
    wire,
)
from wingspan.plugins._http import same_origin

from ..app import ServerState, read_body, state
from ..errors import ApiError
from ..idempotency import create_once, idempotency_key
from ..shapes import CreateAgentRequest, Status, UpdateAgentRequest

blueprint = Blueprint("agents", __name__)

#: What a server shows in place of a header value that carries a credential. Sent back
#: unchanged in an update, it keeps the stored value.
REDACTED = "[redacted]"
#: Header names whose values carry credentials, as parts of the lower-case name.
SECRET_HEADER_PARTS = ("auth", "key", "token", "secret", "cookie", "password", "session")


#: Agents a server keeps built (:attr:`ServerState.agents`).
AGENTS_KEPT = 256


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_HEADER_PARTS)


def _check_fields(
    server: ServerState, fields: set[str], *, name: str | None, tools: Iterable[str],
    provider: str | None, options: Any, model: str | None, max_steps: int | None,
) -> None:
    """Check what an agent create or update sets; ``provider`` is the agent's provider when
    its options need checking (they or it changed), else ``None``."""
    problems: list[tuple[str, str]] = []
    if "name" in fields and not (name or "").strip():
        problems.append(("$.name", "must not be empty"))
    allowed = server.config.allowed_tools
    for i, tool in enumerate(tools):
        if tool not in server.runtime.tools:
            problems.append((f"$.tools[{i}]", f"unknown tool {tool!r}"))
        elif allowed is not None and tool not in allowed:
            problems.append((f"$.tools[{i}]", f"tool {tool!r} is not allowed on this server"))
    spec = server.runtime.providers.get(provider) if provider is not None else None
    if provider is not None and spec is None:
        known = ", ".join(sorted(server.runtime.providers)) or "none"
        problems.append(("$.provider", f"unknown provider {provider!r} (installed: {known})"))
    if spec is not None:
        problems.extend(_option_problems(server, spec, options or {}, model))
    if max_steps is not None and max_steps < 1:
        problems.append(("$.max_steps", "must be at least 1"))
    limit = server.config.max_steps_limit
    if max_steps is not None and max_steps > limit:
        problems.append(("$.max_steps", f"must be at most {limit} on this server "
                                        "(its max_steps_limit)"))
    if problems:
        raise ApiError(400, "invalid agent: " + "; ".join(f"{f}: {r}" for f, r in problems),
                       details=problems)


def _option_problems(
    server: ServerState, spec: ProviderSpec, options: Mapping[str, Any], model: str | None
) -> list[tuple[str, str]]:
    """What is wrong with an agent's provider options: settings that only the operator may
    make (where keys come from), a ``base_url`` outside the allow-list, and whatever the
    provider's own check finds (an unknown or ill-typed option)."""
    problems: list[tuple[str, str]] = []
    for key in sorted(set(options) & set(spec.operator_options)):
        problems.append((f"$.options.{key}",
                         "chooses where the provider's key comes from, which only the server's "
                         "operator may set; store keys with PUT /provider/auth"))
    base_url = options.get("base_url")
    if isinstance(base_url, str) and not base_url_allowed(server, base_url):
        problems.append(("$.options.base_url",
                         f"{base_url!r} is not among the base URLs this server allows "
                         "(its allowed_base_urls setting)"))
    if problems or spec.check_options is None:
        return problems
    checked = dict(options)
    if model is not None:
        checked.setdefault("model", model)
    try:
        spec.check_options(checked)
    except ConfigError as exc:
        field = f"$.options.{exc.option}" if exc.option else "$.options"
        if exc.option == "model" and "model" not in options:
            field = "$.model"
        problems.append((field, str(exc)))
    return problems


def base_url_allowed(server: ServerState, base_url: str) -> bool:
    allowed = server.config.allowed_base_urls
    return allowed is None or any(same_origin(base_url, url) for url in allowed)


def _json(record: AgentRecord) -> Any:
    """An agent as the API shows it: the values of headers that carry credentials are
    never shown back."""
    server = state()
    data = wire.unstructure(record, server.converter)
    spec = server.runtime.providers.get(record.provider)
    secret = spec.secret_options if spec is not None else ()
    options = data.get("options") or {}
    for key in secret:
        value = options.get(key)
        if isinstance(value, Mapping):
            options[key] = {name: REDACTED if _is_secret_header(name) else header
                            for name, header in value.items()}
        elif value is not None:
            options[key] = REDACTED
    return data


def _keep_redacted(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` options with every :data:`REDACTED` value (an agent read and sent back)
    replaced by the stored one."""
    merged = dict(new)
    for key, value in new.items():
        if value == REDACTED and key in old:
            merged[key] = old[key]
        elif isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            merged[key] = {name: old[key].get(name, item) if item == REDACTED else item
                           for name, item in value.items()}
    return merged


@blueprint.post("/agents")
async def create_agent() -> Any:
    server = state()
    key = idempotency_key()
    body, fields = await read_body(CreateAgentRequest, what="agent")
    _check_fields(server, fields | {"name"}, name=body.name, tools=body.tools,
                  provider=body.provider, options=body.options, model=body.model,
                  max_steps=body.max_steps)
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
        permissions=body.permissions,
    )
    store = server.require_store()
    record, status = await create_once(server, "agents", key, body, record,
                                       store.create_agent, store.get_agent)
    return _json(record), status


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
            return [_json(record) for record in records]


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
        changes["options"] = _keep_redacted(changes["options"], current.options)
    updated = attrs.evolve(current, **changes, updated_at=utc_now())
    recheck = fields & {"provider", "options", "model"}
    _check_fields(server, fields, name=updated.name,
                  tools=updated.tools if "tools" in fields else (),
                  provider=updated.provider if recheck else None,
                  options=updated.options, model=updated.model,
                  max_steps=changes.get("max_steps"))
    return _json(await store.update_agent(updated))


@blueprint.delete("/agents/<agent_id>")
async def delete_agent(agent_id: str) -> Any:
    await state().require_store().delete_agent(agent_id)
    return wire.unstructure(Status(status="deleted"), state().converter)


async def build_agent(server: ServerState, record: AgentRecord) -> Agent:
    """A runnable agent for ``record``, its provider given a key only where that key may go
    (see :func:`credential_options`), its steps within the server's limit; built once and
    used again while the record and those options stay the same (:attr:`ServerState.agents`).

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
    # An agent stored before the operator tightened the rules is held to them too.
    problems = _option_problems(server, spec, record.options, None)
    if problems:
        raise ApiError(400, f"agent {record.id}: " + "; ".join(f"{f}: {r}" for f, r in problems),
                       details=problems)
    try:
        provider_options = await credential_options(server, spec, record.options)
    except StoreError as exc:  # a stored key that cannot be decrypted: the message says why
        raise ApiError(400, f"agent {record.id}: {exc}") from None
    target = provider_options.get("base_url") or record.options.get("base_url") or spec.base_url
    official = (target is not None and spec.base_url is not None
                and same_origin(target, spec.base_url))
    if "api_key" in spec.auth_types and "api_key" not in provider_options and (
            official or (spec.base_url is None and not server.config.env_fallback)):
        fallback = (f" or set {spec.env_key} in the server's environment"
                    if spec.env_key and server.config.env_fallback else "")
        raise ApiError(
            400, f"provider {spec.name!r} has no API key: store one with PUT /provider/auth"
            f"{fallback}")
    limit = server.config.max_steps_limit
    if record.max_steps > limit:
        record = attrs.evolve(record, max_steps=limit)
    built = server.agents.get(record.id)
    if built is not None and built[0] == record and built[1] == provider_options:
        return built[2]
    try:
        agent = Agent.from_record(record, server.runtime, provider_options=provider_options)
    except NotFoundError as exc:
        raise ApiError(400, f"agent {record.id}: {exc}") from None
    except WingspanError as exc:
        raise ApiError(400, f"the provider of agent {record.id} cannot be built: {exc}") from None
    server.agents.pop(record.id, None)
    server.agents[record.id] = (record, provider_options, agent)
    if len(server.agents) > AGENTS_KEPT:
        del server.agents[next(iter(server.agents))]  # the one built longest ago
    return agent


async def credential_options(
    server: ServerState, spec: ProviderSpec, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The options the server adds to an agent's (``options``) for ``spec``: the key, and
    where it goes.

    A key is sent only to the endpoint it belongs to. A stored key bound to a base URL (``PUT
    /provider/auth`` with ``base_url``) goes only there, and agents that name no base URL
    use that one; an unbound stored key, and the environment's (unless ``env_fallback`` is
    off), go to the provider's official endpoint or a base URL the operator bound to the
    provider (``credential_urls``). An agent naming any other base URL gets no key: a
    keyless local server works as it is. The provider itself is told not to look in the
    environment (``env_fallback: false``), so the server alone decides.
    """
    options = options or {}
    if spec.base_url is None:  # a provider that names no endpoint: its stored key, if any
        if "api_key" not in spec.auth_types:
            return {}
        credential = await server.require_store().get_credential(spec.name)
        key = credential.key if credential is not None else None
        if key is None and spec.env_key and server.config.env_fallback:
            key = os.environ.get(spec.env_key) or None
        return {"api_key": key} if key is not None else {}
    added: dict[str, Any] = {"env_fallback": False}
    credential = None
    if "api_key" in spec.auth_types:
        credential = await server.require_store().get_credential(spec.name)
    if "base_url" not in options and credential is not None and credential.base_url:
        added["base_url"] = credential.base_url
    target = options.get("base_url") or added.get("base_url") or spec.base_url
    if not isinstance(target, str):
        return added
    official = (spec.base_url, *server.config.credential_urls.get(spec.name, ()))
    key = None
    if credential is not None:
        homes = (credential.base_url,) if credential.base_url else official
        if any(same_origin(target, home) for home in homes):
            key = credential.key
    if (key is None and spec.env_key and server.config.env_fallback
            and any(same_origin(target, home) for home in official)):
        key = os.environ.get(spec.env_key) or None
    if key is not None:
        added["api_key"] = key
    return added
