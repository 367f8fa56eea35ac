"""Agents: stateless templates saying which model, instructions and tools a run uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError
from .permissions import parse_rules
from .providers import Provider
from .tools import Tool, definition_of
from .types import Rule, ToolDefinition

if TYPE_CHECKING:
    from .runtime import Runtime
    from .store import AgentRecord

__all__ = ["Agent"]

DEFAULT_MAX_STEPS = 50


def _check_provider(instance: Agent, attribute: Any, value: Any) -> None:
    if not callable(getattr(value, "stream", None)):
        raise ConfigError(
            f"Agent(provider=...) needs a provider, got {value!r}; build one with "
            "wingspan.get_provider(name, options), e.g. wingspan.get_provider('test', {})"
        )


def _to_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise ConfigError(
            f"Agent(tools=...) takes a list of tools, got {type(value).__name__}; "
            "use wingspan.get_tools(names) or functions decorated with @wingspan.tool"
        )
    tools = list(value)
    for item in tools:
        if not isinstance(item, Tool):
            hint = (
                "; decorate it with @wingspan.tool" if callable(item) else
                "; use @wingspan.tool or wingspan.get_tools(names)"
            )
            raise ConfigError(f"Agent(tools=...): {item!r} is not a tool{hint}")
    names = [t.name for t in tools]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"Agent(tools=...): more than one tool is named {duplicated}")
    # Providers get tools sorted by name, so prompts are stable (and cacheable).
    return tuple(sorted(tools, key=lambda t: t.name))


def _to_rules(value: Any) -> tuple[Rule, ...]:
    return parse_rules(value, "Agent(permissions=...)") if value else ()


def _check_max_steps(instance: Agent, attribute: Any, value: Any) -> None:
    if type(value) is not int or value < 1:
        raise ConfigError(f"Agent(max_steps=...) must be an integer of at least 1, got {value!r}")


@attrs.frozen(kw_only=True)
class Agent:
    """A reusable template for runs; one agent can serve any number of sessions.

    :param name: a name for people and logs.
    :param provider: the model provider (:func:`wingspan.get_provider`).
    :param instructions: the system prompt.
    :param tools: the tools the model may call.
    :param output_schema: a JSON Schema the final answer must follow, when given.
    :param max_steps: the most model calls one run may make (default 50).
    :param options: passed to the provider with every request (e.g. ``temperature``).
    :param permissions: rules for its tool calls (:class:`~wingspan.Rule` s, or their
        ``{"tool", "match", "action"}`` form), after the server's and before the session's
        grants; the last one matching a call decides (:mod:`wingspan.permissions`).
    :param id: the stored agent's id, for agents made from a store record.
    """

    name: str
    provider: Provider = attrs.field(validator=_check_provider)
    instructions: str = ""
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_to_tools)
    output_schema: Mapping[str, Any] | None = None
    max_steps: int = attrs.field(default=DEFAULT_MAX_STEPS, validator=_check_max_steps)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    permissions: tuple[Rule, ...] = attrs.field(default=(), converter=_to_rules)
    id: str | None = None
    #: name -> tool, and the definitions sent to the provider, computed once.
    tool_map: Mapping[str, Tool] = attrs.field(init=False, repr=False, eq=False)
    tool_definitions: tuple[ToolDefinition, ...] = attrs.field(init=False, repr=False, eq=False)

    @tool_map.default
    def _tool_map(self) -> Mapping[str, Tool]:
        return {t.name: t for t in self.tools}

    @tool_definitions.default
    def _tool_definitions(self) -> tuple[ToolDefinition, ...]:
        return tuple(definition_of(t) for t in self.tools)

    @classmethod
    def from_record(
        cls, record: AgentRecord, runtime: Runtime, *, provider_options: Mapping[str, Any] = {}
    ) -> Agent:
        """Build a runnable agent from a stored definition, through ``runtime``'s registries.

        :param provider_options: merged over the record's options (e.g. an API key).
        :raises ConfigError: when the provider cannot be built.
        :raises NotFoundError: naming an unknown provider or tool.
        """
        options = dict(record.options)
        if record.model is not None:
            options.setdefault("model", record.model)
        options.update(provider_options)
        return cls(
            id=record.id,
            name=record.name,
            instructions=record.instructions,
            provider=runtime.get_provider(record.provider, options),
            tools=runtime.get_tools(record.tools),
            output_schema=record.output_schema,
            max_steps=record.max_steps,
            permissions=record.permissions,
        )
