"""Plugin discovery and loading.

Order: blocked names (``WINGSPAN_DISABLE`` / settings) -> built-ins (the entry points of the
``wingspan`` distribution) -> third-party entry points in group ``wingspan`` (skipped when
``WINGSPAN_DISABLE_PLUGIN_AUTOLOAD`` is set; then only those named in ``WINGSPAN_PLUGINS``
load) -> ``check_pending()``. Contrib plugins load only when named. A named plugin that cannot
be found is a usage error; every other failure of a plugin (it fails to import, cannot be
registered, implements a hook that does not exist, takes the name of another plugin) is
reported — :attr:`Runtime.plugin_errors` and the ``wingspan.plugins`` logger — and the rest
still load. A name to block that is no plugin's is a warning
(:attr:`Runtime.plugin_warnings`, the same logger), never an error.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginLoadError
from .log import plugin_logger

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginManager",
    "hookimpls",
    "load_plugins",
    "make_plugin_manager",
    "report_failure",
]

ENTRY_POINT_GROUP = "wingspan"
#: The distribution whose own entry points are the built-in plugins.
DISTRIBUTION = "wingspan"
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


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, keeping each hook's implementations in plugin order until
    a plugin is registered or unregistered: the runtime asks which run-time hooks are
    implemented on every run, and a plugin registered late must count at once."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self._ordered: dict[str, tuple[pluggy.HookImpl, ...]] = {}
        #: The callers of ``wingspan_tool_call`` less some plugins, by their sorted names
        #: (:func:`tool_call_chain`), likewise.
        self.chains: dict[tuple[str, ...], Any] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            # A new dict, not clear(): an ordering computed meanwhile lands in the old one.
            self._ordered, self.chains = {}, {}

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        try:
            return super().unregister(plugin, name)
        finally:
            self._ordered, self.chains = {}, {}

    def plugin_hookimpls(self, hook_name: str) -> tuple[pluggy.HookImpl, ...]:
        """:func:`hookimpls`, cached."""
        cache = self._ordered
        impls = cache.get(hook_name)
        if impls is None:
            impls = cache[hook_name] = _ordered_hookimpls(self, hook_name)
        return impls


def make_plugin_manager() -> PluginManager:
    from .tools import KernelToolCall

    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(KernelToolCall(), name=KERNEL)
    return pm


def hookimpls(pm: pluggy.PluginManager, hook_name: str) -> tuple[pluggy.HookImpl, ...]:
    """The plugins' implementations of ``hook_name`` (the kernel's own left out) in plugin
    order: those marked ``tryfirst`` first, then first registered first, ``trylast`` last.
    pluggy itself calls them the other way round (last registered first)."""
    if isinstance(pm, PluginManager):
        return pm.plugin_hookimpls(hook_name)
    return _ordered_hookimpls(pm, hook_name)


def _ordered_hookimpls(pm: pluggy.PluginManager, hook_name: str) -> tuple[pluggy.HookImpl, ...]:
    caller: pluggy.HookCaller | None = getattr(pm.hook, hook_name, None)
    if caller is None:
        return ()
    # By name: plugin objects need not be hashable. list_name_plugin() is in registration order.
    position = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
    impls = [impl for impl in caller.get_hookimpls() if impl.plugin_name != KERNEL]
    impls.sort(
        key=lambda impl: (
            0 if impl.tryfirst else 2 if impl.trylast else 1,
            position.get(impl.plugin_name, len(position)),
        )
    )
    return tuple(impls)


def report_failure(
    errors: list[PluginLoadError],
    message: str,
    *,
    plugin: str,
    cause: BaseException | None = None,
) -> None:
    """Record that a plugin failed to load, or that something it registered was refused:
    as a :class:`PluginLoadError` in ``errors`` (what becomes ``Runtime.plugin_errors``) and
    as an ERROR record of the ``wingspan.plugins`` logger, with the traceback of ``cause``."""
    error = PluginLoadError(message, plugin=plugin)
    error.__cause__ = cause
    errors.append(error)
    plugin_logger.error("%s", message, exc_info=cause, extra={"plugin": plugin})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_wingspan_own(ep: importlib.metadata.EntryPoint) -> bool:
    """An entry point of the wingspan distribution itself: by its distribution, never by
    the module it names (any distribution can name a ``wingspan.plugins.`` module)."""
    return ep.dist is not None and _canonical(ep.dist.name) == DISTRIBUTION


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = f"distribution {ep.dist.name!r}" if ep.dist is not None else "an unknown distribution"
    return f"{dist} ({ep.name} = {ep.value})"


@attrs.define
class _Loader:
    pm: pluggy.PluginManager
    errors: list[PluginLoadError] = attrs.field(factory=list)
    origins: dict[str, tuple[str | None, str | None]] = attrs.field(factory=dict)
    #: The entry point each plugin loaded from one came from, by plugin name.
    entry_points: dict[str, importlib.metadata.EntryPoint] = attrs.field(factory=dict)

    def fail(self, message: str, plugin: str, cause: BaseException | None = None) -> None:
        report_failure(self.errors, message, plugin=plugin, cause=cause)

    def load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        if self.pm.is_blocked(ep.name):
            return
        if self.pm.has_plugin(ep.name):
            first = self.entry_points.get(ep.name)
            if first is not ep:  # the same entry point named again is no clash
                self.fail(self.clash(ep, first), ep.name)
            return
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() on import too
            self.fail(
                f"plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}",
                ep.name,
                exc,
            )
            return
        dist = ep.dist
        if self.register(plugin, ep.name, dist.name if dist else None,
                         dist.version if dist else None):
            self.entry_points[ep.name] = ep

    def clash(
        self, ep: importlib.metadata.EntryPoint, first: importlib.metadata.EntryPoint | None
    ) -> str:
        if first is None:
            holder = f"plugin {ep.name!r}"
        elif _is_wingspan_own(first):
            holder = f"the built-in plugin {ep.name!r} ({first.value})"
        else:
            holder = f"plugin {ep.name!r} of {_origin(first)}"
        return (
            f"the entry point {ep.name!r} of {_origin(ep)} was not loaded: {holder} has that "
            f"name, and plugin names are unique; uninstall one of the two distributions or "
            f"have the entry point renamed"
        )

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
            self.fail(f"plugin {name!r} failed to import: {exc}", name, exc)
            return
        except (Exception, SystemExit) as exc:
            self.fail(
                f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}", name, exc
            )
            return
        self.register(module, name, None, None)

    def register(
        self, plugin: Any, name: str, distribution: str | None, version: str | None
    ) -> bool:
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy's ValueError, PluginValidationError, a broken getattr
            self.fail(f"plugin {name!r} could not be registered: {exc}", name, exc)
            return False
        self.origins[name] = (distribution, version)
        return True

    def drop_unknown_hooks(self) -> None:
        """Unregister and report every plugin implementing a hook that has no spec (a
        misspelt name, most likely), which would make ``check_pending()`` raise."""
        known = sorted(name for name in vars(hookspecs) if name.startswith("wingspan_"))
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None or name == KERNEL:
                continue
            unknown = []
            for caller in self.pm.get_hookcallers(plugin) or ():
                if caller.has_spec() or all(
                    impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin
                ):
                    continue
                close = difflib.get_close_matches(caller.name, known, n=1)
                unknown.append(
                    f"{caller.name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                )
            if unknown:
                self.pm.unregister(plugin)
                self.origins.pop(name, None)
                self.entry_points.pop(name, None)
                self.fail(
                    f"plugin {name!r} was not loaded: it implements "
                    f"{'hooks' if len(unknown) > 1 else 'a hook'} that wingspan does not have: "
                    f"{', '.join(unknown)}",
                    name,
                )


def load_plugins(
    pm: pluggy.PluginManager,
    *,
    disable: Sequence[str] = (),
    autoload: bool = True,
    names: Sequence[str] = (),
    objects: Sequence[tuple[str, object]] = (),
) -> tuple[list[PluginInfo], list[PluginLoadError], list[str]]:
    """Load plugins into ``pm`` in the documented order.

    :param disable: plugin names never to load.
    :param autoload: load every third-party entry point (else only ``names``).
    :param names: plugins to load by entry-point name or module path.
    :param objects: ``(name, plugin)`` pairs registered directly (tests, embedding apps).
    :returns: the loaded plugins; the failures of those that did not load; warnings — a
        name in ``disable`` that is no plugin's (each failure and warning also logged to
        ``wingspan.plugins``).
    :raises PluginLoadError: when a plugin named in ``names`` does not exist.
    """
    loader = _Loader(pm)
    for name in disable:
        pm.set_blocked(name)
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    own = [ep for ep in entry_points if _is_wingspan_own(ep)]
    others = [ep for ep in entry_points if not _is_wingspan_own(ep)]
    # A name given in WINGSPAN_PLUGINS means wingspan's own entry point when there is one.
    by_name = {ep.name: ep for ep in others} | {ep.name: ep for ep in own}
    for ep in own:
        if not ep.value.startswith(CONTRIB_PREFIX):
            loader.load_entry_point(ep)
    if autoload:
        for ep in others:
            if not ep.value.startswith(CONTRIB_PREFIX):
                loader.load_entry_point(ep)
    for name in names:
        if name in by_name:
            loader.load_entry_point(by_name[name])
        else:
            loader.load_module(name)
    for name, plugin in objects:
        if not pm.is_blocked(name):
            loader.register(plugin, name, None, None)
    loader.drop_unknown_hooks()
    pm.check_pending()
    known = {ep.name for ep in entry_points} | set(names) | {name for name, _ in objects}
    warnings = [_unknown_disabled(name, known) for name in disable if name not in known]
    return _describe(pm, loader.origins), loader.errors, warnings


def _unknown_disabled(name: str, known: set[str]) -> str:
    """Warn of a name to disable that is no plugin's (a typo, most likely: the plugin it
    meant still loads), as the ``wingspan.plugins`` logger's WARNING record."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    message = (
        f"plugin {name!r} is to be disabled (WINGSPAN_DISABLE), but no plugin has that name, "
        f"so it disables nothing"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f" The plugins are: {', '.join(sorted(known))}"
    )
    plugin_logger.warning("%s", message, extra={"plugin": name})
    return message


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


class ToolCalls:
    """How the calls of one run are wrapped: the ``wingspan_tool_call`` wrappers that apply
    to the run, less, for each call, those whose plugin's guard leaves it out
    (:func:`~wingspan.hookspecs.wingspan_tool_call_applies`)."""

    __slots__ = ("_aside", "_callers", "_guards", "_pm", "_single", "every")

    def __init__(self, pm: pluggy.PluginManager, aside: Sequence[str],
                 guards: Sequence[tuple[str, Any]]) -> None:
        self._pm, self._aside, self._guards = pm, tuple(aside), tuple(guards)
        #: The callers of calls some guard leaves out, by the plugins left out.
        self._callers: dict[tuple[str, ...], Any] = {}
        #: The caller of a call no guard leaves out.
        self.every = tool_call_chain(pm, self._aside)
        #: With one guard (the usual case): it, and the caller of a call it leaves out.
        self._single = None
        if len(self._guards) == 1:
            name, guard = self._guards[0]
            self._single = guard, tool_call_chain(pm, (*self._aside, name))

    def caller(self, tool: Any, input: Any) -> Any:
        """What calls ``tool`` with ``input`` through its wrappers; ``None`` when no wrapper
        wraps the call (then the kernel calls the tool itself)."""
        if self._single is not None:
            guard, without = self._single
            try:
                return self.every if guard(tool, input) else without
            except Exception:  # the wrapper wraps the call, and sees what is wrong
                return self.every
        left_out: tuple[str, ...] = ()
        for name, guard in self._guards:
            try:
                if guard(tool, input):
                    continue
            except Exception:
                continue
            left_out += (name,)
        if not left_out:
            return self.every
        try:
            return self._callers[left_out]
        except KeyError:
            caller = self._callers[left_out] = tool_call_chain(self._pm, self._aside + left_out)
            return caller


class ToolCallChain:
    """``wingspan_tool_call`` called as pluggy calls it, for the new-style wrappers of one run
    and the kernel's innermost call (:func:`tool_call_chain`).

    pluggy's general caller checks its arguments, copies the implementations and builds each
    one's arguments on every call; this one does that once a run. A tool call with one
    wrapper costs a third of what it costs through pluggy (bench/loop_overhead.py).
    """

    __slots__ = ("innermost", "wrappers")

    def __init__(self, wrappers: Sequence[Any], innermost: Any) -> None:
        #: The wrappers' functions, outermost (called first) first.
        self.wrappers = tuple(wrappers)
        self.innermost = innermost

    def __call__(self, invocation: Any, context: Any) -> Any:
        started = []
        result = inner = None
        failure: BaseException | None = None
        try:
            for wrapper in self.wrappers:
                generator = wrapper(invocation, context)
                try:
                    next(generator)
                except StopIteration:
                    raise RuntimeError(f"the wingspan_tool_call wrapper {wrapper.__qualname__} "
                                       f"did not yield") from None
                started.append(generator)
            result = inner = self.innermost(invocation, context)
        except BaseException as exc:  # given to the wrappers started, innermost first
            failure = exc
        for generator in reversed(started):
            try:
                if failure is not None:
                    generator.throw(failure)
                else:
                    generator.send(result)
            except StopIteration as stop:
                result, failure = stop.value, None
                continue
            except BaseException as exc:
                failure = exc
                continue
            failure = RuntimeError(f"the wingspan_tool_call wrapper {generator.__qualname__} "
                                   f"yielded twice")
            break
        if failure is not None:
            _close(inner)  # the tool's call will not run: not a coroutine never awaited
            raise failure
        return result


def _close(call: Any) -> None:
    close = getattr(call, "close", None)
    if close is not None:
        close()


def tool_call_chain(pm: pluggy.PluginManager, aside: Sequence[str]) -> Any:
    """The ``wingspan_tool_call`` of a run without the plugins named in ``aside``: a
    :class:`ToolCallChain` when each implementation left is a new-style wrapper taking
    ``(invocation, context)`` or the kernel's, ``None`` when only the kernel's is left, and
    pluggy's caller (a subset of it) otherwise (kept until a plugin is registered)."""
    if not isinstance(pm, PluginManager):
        return _tool_call_chain(pm, aside)
    key = tuple(sorted(aside))
    chains = pm.chains
    try:
        return chains[key]
    except KeyError:
        chain = chains[key] = _tool_call_chain(pm, aside)
        return chain


def _tool_call_chain(pm: pluggy.PluginManager, aside: Sequence[str]) -> Any:
    caller = pm.hook.wingspan_tool_call
    impls = [impl for impl in reversed(caller.get_hookimpls()) if impl.plugin_name not in aside]
    if len(impls) == 1:  # the kernel's own
        return None
    if impls[-1].plugin_name == KERNEL and all(
            impl.wrapper and impl.argnames == ("invocation", "context") and not impl.kwargnames
            for impl in impls[:-1]):
        return ToolCallChain([impl.function for impl in impls[:-1]], impls[-1].function)
    if not aside:
        return caller
    try:
        return pm.subset_hook_caller("wingspan_tool_call",
                                     [pm.get_plugin(name) for name in aside])
    except TypeError:  # an unhashable plugin object (pluggy keeps them in a set): all of them
        return caller
