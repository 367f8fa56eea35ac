"""Isolated runtimes, and the ``test`` provider from a script."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..providers import Provider
from ..runtime import Runtime, Settings, default_runtime

__all__ = ["make_runtime", "scripted"]


def make_runtime(
    *,
    plugins: Sequence[tuple[str, object]] = (),
    disable: Sequence[str] = (),
    autoload: bool = False,
    names: Sequence[str] = (),
    tools: Mapping[str, Any] | None = None,
    stores: Mapping[str, Any] | None = None,
) -> Runtime:
    """An isolated runtime: the built-in plugins plus ``plugins``, ignoring the environment.

    :param plugins: ``(name, plugin)`` pairs to register, e.g. ``[("mine", my_module)]``.
    :param disable: plugin names to block.
    :param autoload: also load every installed third-party plugin.
    :param names: plugins to load by entry-point name or module path.
    :param tools: tool settings (:attr:`ToolContext.settings`).
    :param stores: store settings.
    """
    settings = Settings(
        disable=tuple(disable),
        autoload=autoload,
        plugins=tuple(names),
        tools=dict(tools or {}),
        stores=dict(stores or {}),
    )
    return Runtime.from_settings(settings, plugins=plugins)


def scripted(
    script: Sequence[Any] | Callable[..., Any],
    *,
    runtime: Runtime | None = None,
    **options: Any,
) -> Provider:
    """The ``test`` provider replaying ``script``, built by name like any provider.

    :param script: the turns (see ``docs/sdk.md``, "The test provider"), or a callable
        ``(request) -> turn``.
    :param runtime: whose ``test`` provider to build; by default
        :func:`wingspan.default_runtime`'s, the one :func:`wingspan.get_provider` uses.
    :param options: the provider's other options (``chunk_size``...).
    :raises NotFoundError: when the runtime has no ``test`` provider (it is disabled).
    """
    turns = list(script) if isinstance(script, Sequence) else script
    return (runtime or default_runtime()).get_provider("test", {"script": turns, **options})
