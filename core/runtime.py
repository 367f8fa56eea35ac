"""The runtime: the composition root of settings, plugins, registries and the converter."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import reprlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import attrs
import cattrs
import pluggy

from .errors import ConfigError, NotFoundError, PluginError, PluginLoadError
from .loader import (
    PluginInfo,
    ToolCalls,
    hookimpls,
    load_plugins,
    make_plugin_manager,
    report_failure,
)
from .log import plugin_logger
from .providers import Provider, ProviderSpec
from .runs import Runs
from .store import Store, StoreSpec
from .tools import Tool
from .transports import TransportSpec
from .types import InferenceRequest
from .wire import make_converter

if TYPE_CHECKING:
    from .session import Session
    from .types import StreamEvent

__all__ = ["Runtime", "Settings", "default_runtime"]

T = TypeVar("T")
#: The store URL schemes of contrib plugins: a URL of one enables its plugin to open it, as
#: naming the plugin in ``WINGSPAN_PLUGINS`` would (``wingspan serve --store postgresql://...``).
CONTRIB_STORES = {"postgresql": "postgres", "postgres": "postgres"}


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
    #: Which plugin registered each provider and each store scheme (for errors naming it).
    provider_plugins: Mapping[str, str] = attrs.field(factory=dict)
    store_plugins: Mapping[str, str] = attrs.field(factory=dict)
    #: What loading found odd but not wrong: a name to disable that is no plugin's.
    plugin_warnings: tuple[str, ...] = ()
    #: The runs executing in this process (:meth:`wingspan.Session.start`), by id.
    runs: Runs = attrs.field(factory=Runs, init=False, repr=False)
    #: How often each plugin's wingspan_event failed (to log the 1st, 2nd, 4th... failure).
    _observer_failures: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def hooks(self) -> Any:
        """The hook relay (``runtime.hooks.wingspan_tool_call(...)``)."""
        return self.plugin_manager.hook

    # The loop reads these once a run, so that a hook nobody implements costs nothing. They
    # follow registrations: a plugin registered on ``plugin_manager`` after the runtime was
    # built counts from the next run on (a lookup, recomputed after each registration).

    @property
    def has_event_hook(self) -> bool:
        """Whether some plugin implements :func:`wingspan_event`."""
        return bool(hookimpls(self.plugin_manager, "wingspan_event"))

    @property
    def has_prepare_request_hook(self) -> bool:
        """Whether some plugin implements :func:`wingspan_prepare_request`."""
        return bool(hookimpls(self.plugin_manager, "wingspan_prepare_request"))

    @property
    def has_tool_call_hook(self) -> bool:
        """Whether some plugin wraps tool calls (:func:`wingspan_tool_call`); the kernel's
        own innermost implementation does not count."""
        return bool(hookimpls(self.plugin_manager, "wingspan_tool_call"))

    def tool_calls(self, agent: Any, session: Session, run_id: str) -> ToolCalls | None:
        """How the tool calls of a run of ``agent`` in ``session`` are wrapped (read once a
        run): by the ``wingspan_tool_call`` wrappers whose plugin does not step aside
        (:func:`wingspan_tool_call_applies`), each call by those whose guard wants it;
        ``None`` when no wrapper is left, so that the kernel calls the tools directly."""
        pm = self.plugin_manager
        wrappers = hookimpls(pm, "wingspan_tool_call")
        if not wrappers:
            return None
        aside: list[str] = []
        guards: list[tuple[str, Callable[[Tool, Any], bool]]] = []
        arguments = {"agent": agent, "session": session, "run_id": run_id}
        for impl in hookimpls(pm, "wingspan_tool_call_applies"):
            try:
                applies = impl.function(*[arguments[arg] for arg in impl.argnames])
            except Exception as exc:  # its wrapper runs: a check that failed skips nothing
                plugin_logger.error(
                    "plugin %r failed in wingspan_tool_call_applies(): %s: %s; its "
                    "wingspan_tool_call wrapper wraps every call of the run",
                    impl.plugin_name, type(exc).__name__, exc, exc_info=exc,
                    extra={"plugin": impl.plugin_name},
                )
                continue
            if applies is False:
                aside.append(impl.plugin_name)
            elif callable(applies):
                guards.append((impl.plugin_name, applies))
        if all(impl.plugin_name in aside for impl in wrappers):
            return None
        return ToolCalls(pm, aside, guards)

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
        infos, errors, warnings = load_plugins(
            pm,
            disable=settings.disable,
            autoload=settings.autoload,
            names=settings.plugins,
            objects=plugins,
        )
        providers = _collect(pm, _PROVIDERS, errors)
        tools = _collect(pm, _TOOLS, errors)
        stores = _collect(pm, _STORES, errors)
        transports = _collect(pm, _TRANSPORTS, errors)
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
            provider_plugins={k: plugin for k, (_, plugin) in providers.items()},
            store_plugins={k: plugin for k, (_, plugin) in stores.items()},
            plugin_warnings=tuple(warnings),
        )
        pm.hook.wingspan_configure.call_historic(kwargs={"runtime": runtime})
        return runtime

    def close(self) -> None:
        """Let plugins release what they set up (:func:`wingspan_unconfigure`)."""
        self.plugin_manager.hook.wingspan_unconfigure(runtime=self)

    # --- run-time hooks (called by the loop) -------------------------------------------------

    async def prepare_request(
        self, request: InferenceRequest, session: Session
    ) -> InferenceRequest:
        """Pass ``request`` through every :func:`wingspan_prepare_request` implementation, in
        plugin order (first loaded first; ``tryfirst`` ones before, ``trylast`` ones after),
        each given what the one before returned. An implementation returns ``None`` (keep
        the request), an :class:`InferenceRequest`, or an awaitable resolving to either.

        :returns: the request to send.
        :raises PluginError: naming the plugin, when an implementation raises or returns
            something else.
        """
        for impl in hookimpls(self.plugin_manager, "wingspan_prepare_request"):
            arguments = {"request": request, "session": session}
            name = impl.plugin_name
            try:
                result = impl.function(*[arguments[arg] for arg in impl.argnames])
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                raise PluginError(
                    f"plugin {name!r} failed in wingspan_prepare_request(): "
                    f"{type(exc).__name__}: {exc}",
                    plugin=name,
                ) from exc
            if result is None:
                continue
            if not isinstance(result, InferenceRequest):
                raise PluginError(
                    f"plugin {name!r}: wingspan_prepare_request() returned "
                    f"{_describe_item(result)}; it must return an InferenceRequest or None "
                    f"(or an awaitable resolving to one)",
                    plugin=name,
                )
            request = result
        return request

    def observe(self, event: StreamEvent, session: Session) -> None:
        """Show ``event`` to every :func:`wingspan_event` implementation, in plugin order.

        An observer cannot end a run: what one raises is logged to ``wingspan.plugins``
        (with the plugin's name and the traceback; the 1st, 2nd, 4th, 8th... failure of
        each plugin, so that one failing on every event does not flood the log) and the
        others are still called.
        """
        arguments = {"event": event, "session": session}
        for impl in hookimpls(self.plugin_manager, "wingspan_event"):
            try:
                result = impl.function(*[arguments[arg] for arg in impl.argnames])
            except Exception as exc:
                self._observer_failed(
                    impl.plugin_name, f"{type(exc).__name__}: {exc}", exc
                )
                continue
            if result is not None:
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: say so here, not in a RuntimeWarning
                self._observer_failed(
                    impl.plugin_name,
                    f"it returned {_describe_item(result)}; observers are synchronous and "
                    f"return None",
                    None,
                )

    def _observer_failed(self, plugin: str, problem: str, cause: Exception | None) -> None:
        count = self._observer_failures[plugin] = self._observer_failures.get(plugin, 0) + 1
        if count & (count - 1):  # not a power of two
            return
        plugin_logger.error(
            "plugin %r failed in wingspan_event(): %s; the run goes on (failure %d of this "
            "plugin; the 1st, 2nd, 4th, 8th... are logged)",
            plugin,
            problem,
            count,
            exc_info=cause,
            extra={"plugin": plugin},
        )

    # --- façade ------------------------------------------------------------------------------

    def get_provider(self, name: str, options: Mapping[str, Any] | None = None) -> Provider:
        """Build the provider registered as ``name`` from JSON-like ``options``.

        :raises NotFoundError: naming the unknown provider and the known ones.
        :raises ConfigError: when the options are wrong (from the provider's factory).
        :raises PluginError: naming the plugin, when its factory returns no provider.
        """
        spec = self.providers.get(name)
        if spec is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise NotFoundError(f"unknown provider {name!r}; the providers installed are: {known}")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"provider {name!r}: options must be a mapping, got {options!r}")
        provider: object = spec.factory(dict(options or {}))  # what it is, not what it says
        if not isinstance(provider, Provider):
            raise self._not_built(
                self.provider_plugins.get(name), f"the factory of provider {name!r}",
                provider, "a Provider (an object with a stream(request) method)",
                "ProviderSpec.factory must return one, or raise ConfigError",
            )
        return provider

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
        :raises PluginError: naming the plugin, when its ``open`` gives no store.
        """
        scheme = urlsplit(url).scheme if "://" in url else ""
        spec = self.stores.get(scheme) or self._contrib_store(scheme)
        if spec is None:
            known = ", ".join(f"{s}://" for s in sorted(self.stores)) or "none"
            raise ConfigError(f"no store plugin handles {url!r}; the store URLs known are: {known}")
        plugin = self.store_plugins.get(scheme) or CONTRIB_STORES.get(scheme)
        what = f"the open() of store scheme {scheme!r}"
        opening: object = spec.open(url, self.settings.stores)  # what it is, not what it says
        if not inspect.isawaitable(opening):
            raise self._not_built(plugin, what, opening, "an awaitable",
                                  "StoreSpec.open must be an async function returning a Store")
        store: object = await opening
        if not isinstance(store, Store):
            missing = [m for m in _STORE_METHODS if not callable(getattr(store, m, None))]
            raise self._not_built(
                plugin, what, store, "a Store",
                f"it lacks {', '.join(missing)}" if store is not None and missing
                else "StoreSpec.open must return one, or raise ConfigError",
            )
        return store

    def _contrib_store(self, scheme: str) -> StoreSpec | None:
        """The store of the contrib plugin claiming ``scheme`` (:data:`CONTRIB_STORES`),
        which a URL of that scheme enables (unless the plugin is disabled); ``None`` for
        any other scheme."""
        name = CONTRIB_STORES.get(scheme)
        if name is None or self.plugin_manager.is_blocked(name):
            return None
        module = importlib.import_module(f"wingspan.contrib.{name}")
        specs: list[StoreSpec] = module.wingspan_stores()
        return next((spec for spec in specs if spec.scheme == scheme), None)

    @staticmethod
    def _not_built(
        plugin: str | None, what: str, built: object, wanted: str, advice: str
    ) -> PluginError:
        """The error for a factory that returned something it should not have."""
        if inspect.iscoroutine(built):
            built.close()  # never awaited: say so here, not in a RuntimeWarning
        shown = "None" if built is None else _describe_item(built)
        by = f"plugin {plugin!r}: " if plugin else ""
        return PluginError(f"{by}{what} returned {shown}, not {wanted}; {advice}", plugin=plugin)

    def list_plugins(self) -> list[PluginInfo]:
        """Every loaded plugin with its distribution, version and hooks."""
        return list(self.plugins)


@attrs.frozen
class _Registration:
    """What a registration hook must return, and how its items are named."""

    hook: str
    what: str  # "provider", used in messages
    kind: type[Any]
    key: Callable[[Any], object]
    #: What a valid name looks like, and how to say so.
    name_pattern: re.Pattern[str]
    name_rule: str
    #: How to build a right item, for the message about a wrong one.
    hint: str


_ANY_NAME = re.compile(r"\S(?:.*\S)?", re.S)
_ANY_NAME_RULE = "a non-empty string with no space at either end"
_PROVIDERS = _Registration(
    "wingspan_providers", "provider", ProviderSpec, lambda spec: spec.name,
    _ANY_NAME, _ANY_NAME_RULE, "return wingspan.ProviderSpec objects",
)
_TOOLS = _Registration(
    "wingspan_tools", "tool", Tool, lambda tool: tool.name,
    re.compile(r"[a-zA-Z0-9_-]{1,64}"), "1-64 characters of [a-zA-Z0-9_-]",
    "decorate the function with @wingspan.tool, or implement the wingspan.Tool protocol",
)
_STORES = _Registration(
    "wingspan_stores", "store scheme", StoreSpec, lambda spec: spec.scheme,
    re.compile(r"[a-z][a-z0-9+.-]*"), "a lower-case URL scheme such as 'sqlite'",
    "return wingspan.StoreSpec objects",
)
_TRANSPORTS = _Registration(
    "wingspan_transports", "transport", TransportSpec, lambda spec: spec.name,
    _ANY_NAME, _ANY_NAME_RULE, "return wingspan.TransportSpec objects",
)


#: The methods of the Store protocol, to name those a non-store lacks.
_STORE_METHODS = tuple(
    name for name, value in vars(Store).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(value)
)

_brief = reprlib.Repr()
_brief.maxother = _brief.maxstring = 80


def _describe_item(item: object) -> str:
    """``function 'shout'``, ``str 'abc'``, ``StoreSpec(scheme='s', ...)``: what a plugin
    returned, briefly."""
    kind = type(item).__name__
    qualname = getattr(item, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{kind} {qualname!r}"
    text = _brief.repr(item)
    return text if text.startswith(kind) else f"{kind} {text}"


def _refuse(
    errors: list[PluginLoadError], plugin: str, message: str, cause: BaseException | None = None
) -> None:
    report_failure(errors, f"plugin {plugin!r}: {message}", plugin=plugin, cause=cause)


def _collect(
    pm: pluggy.PluginManager, registration: _Registration, errors: list[PluginLoadError]
) -> dict[str, tuple[Any, str]]:
    """Call a registration hook plugin by plugin, so that a duplicate names both plugins,
    a plugin whose hook raises is reported as that plugin's failure, and an item that is
    not what the hook registers is skipped and reported naming the plugin and the item."""
    hook = registration.hook
    what = registration.what
    found: dict[str, tuple[Any, str]] = {}
    for impl in hookimpls(pm, hook):  # plugin order
        plugin = impl.plugin_name
        refuse = functools.partial(_refuse, errors, plugin)
        if impl.wrapper or impl.hookwrapper:
            refuse(f"{hook}() is a registration hook and cannot be a wrapper; it was ignored")
            continue
        try:
            result = impl.function()
            if result is None:
                continue
            if isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
                refuse(
                    f"{hook}() returned {_describe_item(result)}, not a list of "
                    f"{registration.kind.__name__}s; nothing it returned was registered"
                )
                continue
            items = list(result)
        except Exception as exc:
            refuse(f"failed in {hook}(): {type(exc).__name__}: {exc}", exc)
            continue
        for item in items:
            if not isinstance(item, registration.kind):
                refuse(
                    f"{hook}() returned {_describe_item(item)}, which is not a "
                    f"{registration.kind.__name__} ({registration.hint}); it was skipped"
                )
                continue
            try:
                name = registration.key(item)
            except Exception as exc:
                refuse(
                    f"{hook}() returned {_describe_item(item)}, whose name cannot be read: "
                    f"{type(exc).__name__}: {exc}; it was skipped",
                    exc,
                )
                continue
            if not isinstance(name, str) or not registration.name_pattern.fullmatch(name):
                refuse(
                    f"{hook}() returned a {what} named {name!r}; a {what} name is "
                    f"{registration.name_rule}; it was skipped"
                )
                continue
            if name in found:
                raise PluginLoadError(
                    f"{what} {name!r} is registered by both plugin {found[name][1]!r} and "
                    f"plugin {plugin!r}; disable one of them (WINGSPAN_DISABLE)",
                    plugin=plugin,
                )
            found[name] = (item, plugin)
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
