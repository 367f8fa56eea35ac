"""The runtime: the composition root of settings, plugins, registries and the converter."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import cattrs
import pluggy

from .errors import ConfigError, NotFoundError, PluginLoadError
from .loader import PluginInfo, load_plugins, make_plugin_manager
from .providers import Provider, ProviderSpec
from .store import Store, StoreSpec
from .tools import Tool
from .transports import TransportSpec
from .wire import make_converter

__all__ = ["Runtime", "Settings", "default_runtime"]

T = TypeVar("T")


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


@attrs.frozen(kw_only=True)
class Settings:
    """What a runtime is built from.

    :ivar disable: plugin names never to load.
    :ivar autoload: load every installed third-party plugin.
    :ivar plugins: plugins to load by name (entry-point name or module path), also when
        autoload is off; contrib plugins load only when named here.
    :ivar tools: settings given to every tool call (:attr:`ToolContext.settings`).
    :ivar stores: settings given to store factories.
    :ivar extra: settings of transports and other plugins, by section.
    """

    disable: tuple[str, ...] = ()
    autoload: bool = True
    plugins: tuple[str, ...] = ()
    tools: Mapping[str, Any] = attrs.field(factory=dict)
    stores: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``WINGSPAN_DISABLE``, ``WINGSPAN_DISABLE_PLUGIN_AUTOLOAD`` and
        ``WINGSPAN_PLUGINS`` (comma-separated names), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "disable": _names(env.get("WINGSPAN_DISABLE")),
            "autoload": not env.get("WINGSPAN_DISABLE_PLUGIN_AUTOLOAD"),
            "plugins": _names(env.get("WINGSPAN_PLUGINS")),
        }
        values.update(overrides)
        return cls(**values)


@attrs.define(eq=False)
class Runtime:
    """Settings, the plugin manager, the registries of providers, tools, stores and
    transports, and the converter. Build one with :meth:`from_settings`."""

    settings: Settings
    plugin_manager: pluggy.PluginManager
    providers: Mapping[str, ProviderSpec]
    tools: Mapping[str, Tool]
    stores: Mapping[str, StoreSpec]
    transports: Mapping[str, TransportSpec]
    plugins: tuple[PluginInfo, ...]
    #: Plugins that failed to load, each with its name and cause.
    plugin_errors: tuple[PluginLoadError, ...]
    converter: cattrs.Converter
    #: Which plugin registered each tool (for listings).
    tool_plugins: Mapping[str, str]
    has_event_hook: bool = False
    has_prepare_request_hook: bool = False
    has_tool_call_hook: bool = False

    @property
    def hooks(self) -> Any:
        """The hook relay (``runtime.hooks.wingspan_event(...)``)."""
        return self.plugin_manager.hook

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        plugins: Sequence[tuple[str, object]] = (),
    ) -> Runtime:
        """Load plugins and fill the registries.

        :param settings: default: :meth:`Settings.from_env`.
        :param plugins: ``(name, plugin)`` pairs registered after the installed ones.
        :raises PluginLoadError: for a named plugin that does not exist, or when two plugins
            register the same name.
        """
        settings = settings or Settings.from_env()
        pm = make_plugin_manager()
        infos, errors = load_plugins(
            pm,
            disable=settings.disable,
            autoload=settings.autoload,
            names=settings.plugins,
            objects=plugins,
        )
        providers = _collect(pm.hook.wingspan_providers, "provider", lambda s: s.name, errors)
        tools = _collect(pm.hook.wingspan_tools, "tool", lambda t: t.name, errors)
        stores = _collect(pm.hook.wingspan_stores, "store scheme", lambda s: s.scheme, errors)
        transports = _collect(pm.hook.wingspan_transports, "transport", lambda s: s.name, errors)
        runtime = cls(
            settings=settings,
            plugin_manager=pm,
            providers={k: v for k, (v, _) in providers.items()},
            tools={k: v for k, (v, _) in tools.items()},
            stores={k: v for k, (v, _) in stores.items()},
            transports={k: v for k, (v, _) in transports.items()},
            plugins=tuple(infos),
            plugin_errors=tuple(errors),
            converter=make_converter(),
            tool_plugins={k: plugin for k, (_, plugin) in tools.items()},
            has_event_hook=bool(pm.hook.wingspan_event.get_hookimpls()),
            has_prepare_request_hook=bool(pm.hook.wingspan_prepare_request.get_hookimpls()),
            # The kernel implements the innermost call; only plugins' wrappers cost a hook call.
            has_tool_call_hook=len(pm.hook.wingspan_tool_call.get_hookimpls()) > 1,
        )
        pm.hook.wingspan_configure.call_historic(kwargs={"runtime": runtime})
        return runtime

    def close(self) -> None:
        """Let plugins release what they set up (:func:`wingspan_unconfigure`)."""
        self.plugin_manager.hook.wingspan_unconfigure(runtime=self)

    # --- façade ------------------------------------------------------------------------------

    def get_provider(self, name: str, options: Mapping[str, Any] | None = None) -> Provider:
        """Build the provider registered as ``name`` from JSON-like ``options``.

        :raises NotFoundError: naming the unknown provider and the known ones.
        :raises ConfigError: when the options are wrong (from the provider's factory).
        """
        spec = self.providers.get(name)
        if spec is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise NotFoundError(f"unknown provider {name!r}; the providers installed are: {known}")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"provider {name!r}: options must be a mapping, got {options!r}")
        return spec.factory(dict(options or {}))

    def get_tools(self, names: Iterable[str] | None = None) -> list[Tool]:
        """The tools named (all of them when ``names`` is ``None``), sorted by name.

        :raises NotFoundError: naming every unknown tool.
        """
        if names is None:
            return [self.tools[n] for n in sorted(self.tools)]
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.tools]
        if unknown:
            known = ", ".join(sorted(self.tools)) or "none"
            raise NotFoundError(
                f"unknown tool{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"the tools installed are: {known}"
            )
        return [self.tools[n] for n in sorted(wanted)]

    async def open_store(self, url: str) -> Store:
        """Open the store at ``url`` with the plugin claiming its scheme.

        :raises ConfigError: for a URL whose scheme no plugin claims.
        """
        scheme = urlsplit(url).scheme if "://" in url else ""
        spec = self.stores.get(scheme)
        if spec is None:
            known = ", ".join(f"{s}://" for s in sorted(self.stores)) or "none"
            raise ConfigError(f"no store plugin handles {url!r}; the store URLs known are: {known}")
        return await spec.open(url, self.settings.stores)

    def list_plugins(self) -> list[PluginInfo]:
        """Every loaded plugin with its distribution, version and hooks."""
        return list(self.plugins)


def _collect(
    hook: Any, what: str, key: Callable[[Any], str], errors: list[PluginLoadError]
) -> dict[str, tuple[Any, str]]:
    """Call a registration hook plugin by plugin, so that a duplicate names both plugins
    and a plugin whose hook raises is reported as that plugin's failure."""
    found: dict[str, tuple[Any, str]] = {}
    for impl in hook.get_hookimpls():  # registration order
        try:
            items = list(impl.function() or ())
        except Exception as exc:
            errors.append(
                PluginLoadError(
                    f"plugin {impl.plugin_name!r} failed in {hook.name}(): "
                    f"{type(exc).__name__}: {exc}",
                    plugin=impl.plugin_name,
                )
            )
            continue
        for item in items:
            name = key(item)
            if name in found:
                raise PluginLoadError(
                    f"{what} {name!r} is registered by both plugin {found[name][1]!r} and "
                    f"plugin {impl.plugin_name!r}; disable one of them (WINGSPAN_DISABLE)",
                    plugin=impl.plugin_name,
                )
            found[name] = (item, impl.plugin_name)
    return found


_default: Runtime | None = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The runtime the module-level façade functions use, built on first use from the
    environment."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Runtime.from_settings()
    return _default
