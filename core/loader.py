"""Plugin discovery and loading.

Order: blocked names (``WINGSPAN_DISABLE`` / settings) -> built-ins (the entry points of the
``wingspan`` distribution) -> third-party entry points in group ``wingspan`` (skipped when
``WINGSPAN_DISABLE_PLUGIN_AUTOLOAD`` is set; then only those named in ``WINGSPAN_PLUGINS``
load) -> ``check_pending()``. Contrib plugins load only when named. A named plugin that cannot
be found is a usage error; one that fails to import is reported and the rest still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginLoadError

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "load_plugins", "make_plugin_manager"]

ENTRY_POINT_GROUP = "wingspan"
BUILTIN_PREFIX = "wingspan.plugins."
#: The kernel's own hook implementations (not listed as a plugin).
KERNEL = "wingspan.kernel"
CONTRIB_PREFIX = "wingspan.contrib."


@attrs.frozen(kw_only=True)
class PluginInfo:
    """A loaded plugin, as ``wingspan plugins`` and ``GET /plugins`` show it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: tuple[str, ...] = ()


def make_plugin_manager() -> pluggy.PluginManager:
    from .tools import KernelToolCall

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(KernelToolCall(), name=KERNEL)
    return pm


@attrs.define
class _Loader:
    pm: pluggy.PluginManager
    errors: list[PluginLoadError] = attrs.field(factory=list)
    origins: dict[str, tuple[str | None, str | None]] = attrs.field(factory=dict)

    def load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
            return
        try:
            plugin = ep.load()
        except Exception as exc:
            self.errors.append(
                PluginLoadError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}",
                    plugin=ep.name,
                )
            )
            return
        dist = ep.dist
        self.register(plugin, ep.name, dist.name if dist else None, dist.version if dist else None)

    def load_module(self, name: str) -> None:
        if self.pm.is_blocked(name) or self.pm.has_plugin(name):
            return
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise PluginLoadError(
                    f"plugin {name!r} not found: no entry point in group "
                    f"{ENTRY_POINT_GROUP!r} and no module of that name; is it installed?",
                    plugin=name,
                ) from None
            self.errors.append(
                PluginLoadError(f"plugin {name!r} failed to import: {exc}", plugin=name)
            )
            return
        except Exception as exc:
            self.errors.append(
                PluginLoadError(
                    f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}", plugin=name
                )
            )
            return
        self.register(module, name, None, None)

    def register(
        self, plugin: Any, name: str, distribution: str | None, version: str | None
    ) -> None:
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self.errors.append(
                PluginLoadError(f"plugin {name!r} could not be registered: {exc}", plugin=name)
            )
            return
        self.origins[name] = (distribution, version)


def load_plugins(
    pm: pluggy.PluginManager,
    *,
    disable: Iterable[str] = (),
    autoload: bool = True,
    names: Sequence[str] = (),
    objects: Sequence[tuple[str, object]] = (),
) -> tuple[list[PluginInfo], list[PluginLoadError]]:
    """Load plugins into ``pm`` in the documented order.

    :param disable: plugin names never to load.
    :param autoload: load every third-party entry point (else only ``names``).
    :param names: plugins to load by entry-point name or module path.
    :param objects: ``(name, plugin)`` pairs registered directly (tests, embedding apps).
    :returns: the loaded plugins and the failures of those that did not load.
    :raises PluginLoadError: when a plugin named in ``names`` does not exist.
    """
    loader = _Loader(pm)
    for name in disable:
        pm.set_blocked(name)
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    by_name = {ep.name: ep for ep in entry_points}
    for ep in entry_points:
        if ep.value.startswith(BUILTIN_PREFIX):
            loader.load_entry_point(ep)
    if autoload:
        for ep in entry_points:
            if not ep.value.startswith((BUILTIN_PREFIX, CONTRIB_PREFIX)):
                loader.load_entry_point(ep)
    for name in names:
        if name in by_name:
            loader.load_entry_point(by_name[name])
        else:
            loader.load_module(name)
    for name, plugin in objects:
        if not pm.is_blocked(name):
            loader.register(plugin, name, None, None)
    pm.check_pending()
    return _describe(pm, loader.origins), loader.errors


def _describe(
    pm: pluggy.PluginManager, origins: dict[str, tuple[str | None, str | None]]
) -> list[PluginInfo]:
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name == KERNEL:  # blocked, or the kernel itself
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        distribution, version = origins.get(name, (None, None))
        if distribution is None and isinstance(plugin, ModuleType):
            distribution, version = _distribution_of(plugin)
        infos.append(
            PluginInfo(name=name, distribution=distribution, version=version, hooks=tuple(hooks))
        )
    return sorted(infos, key=lambda info: info.name)


def _distribution_of(module: ModuleType) -> tuple[str | None, str | None]:
    top = module.__name__.partition(".")[0]
    names = importlib.metadata.packages_distributions().get(top)
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None
