"""Hook specifications: the whole surface a plugin can implement.

Hooks are synchronous and run at set-up time; what the registration hooks return carries the
async methods. Implement a hook in a plugin module with :data:`wingspan.hookimpl`::

    import wingspan

    @wingspan.hookimpl
    def wingspan_tools():
        return [my_tool]

Specs are grouped by lifecycle phase. Every call is made with keyword arguments, so specs
can gain arguments later without breaking plugins that do not take them. The run-time hooks
``wingspan_prepare_request`` and ``wingspan_event`` are called by :class:`Runtime` methods
(``prepare_request``, ``observe``), in plugin order: first loaded first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .agent import Agent
    from .providers import ProviderSpec
    from .runtime import Runtime
    from .session import Session
    from .store import StoreSpec
    from .tools import Tool, ToolContext, ToolInvocation
    from .transports import TransportSpec
    from .types import InferenceRequest, StreamEvent

__all__ = ["hookimpl", "hookspec"]

PROJECT = "wingspan"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a function of a plugin module as the implementation of the hook of the same name.
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------
# Registration hooks (called once while the runtime is built). What an implementation raises,
# and every item it returns that is not of the hook's type, is reported as that plugin's
# failure (Runtime.plugin_errors, the wingspan.plugins logger); the rest is registered.
# -------------------------------------------------------------------------------------------


@hookspec
def wingspan_providers() -> Sequence[ProviderSpec]:
    """Register model providers.

    Called once while a runtime is built, after every plugin is loaded.

    :returns: :class:`~wingspan.ProviderSpec` s. Each name must be unique across all
        plugins: a second plugin offering the same name is an error naming both.
    """
    raise NotImplementedError


@hookspec
def wingspan_tools() -> Sequence[Tool]:
    """Register tools.

    Called once while a runtime is built, after every plugin is loaded.

    :returns: objects satisfying the :class:`~wingspan.Tool` protocol, such as functions
        decorated with :func:`wingspan.tool`. Names must be unique across all plugins.
    """
    raise NotImplementedError


@hookspec
def wingspan_stores() -> Sequence[StoreSpec]:
    """Register store back-ends.

    Called once while a runtime is built, after every plugin is loaded.

    :returns: :class:`~wingspan.StoreSpec` s, each claiming one URL scheme (``sqlite``,
        ``memory``, ``postgresql``...). Schemes must be unique across all plugins.
    """
    raise NotImplementedError


@hookspec
def wingspan_transports() -> Sequence[TransportSpec]:
    """Register transports, the ways a runtime is exposed (``http``...).

    Called once while a runtime is built, after every plugin is loaded.

    :returns: :class:`~wingspan.TransportSpec` s with unique names.
    """
    raise NotImplementedError


# -------------------------------------------------------------------------------------------
# Lifecycle hooks
# -------------------------------------------------------------------------------------------


@hookspec(historic=True)
def wingspan_configure(runtime: Runtime) -> None:
    """Set a plugin up for a runtime.

    Called once the runtime is complete (registries filled). Historic: a plugin registered
    later is called on registration.

    :param runtime: the runtime being configured.
    """


@hookspec
def wingspan_unconfigure(runtime: Runtime) -> None:
    """Release what :func:`wingspan_configure` set up.

    Called by :meth:`Runtime.close`.

    :param runtime: the runtime being closed.
    """


# -------------------------------------------------------------------------------------------
# Run-time hooks: called only when some plugin implements them, so they cost nothing otherwise
# -------------------------------------------------------------------------------------------


@hookspec
def wingspan_prepare_request(
    request: InferenceRequest, session: Session
) -> InferenceRequest | Awaitable[InferenceRequest | None] | None:
    """Rewrite a request before it goes to the provider (compaction, redaction, ...).

    Called before every model call of every run, through :meth:`Runtime.prepare_request`.
    Every implementation runs, in plugin order (the order plugins were loaded, first loaded
    first; ``tryfirst`` ones before the others, ``trylast`` ones after), each given the
    request the previous one returned. It may be ``async def`` (to call a model, say).

    :param request: the request the loop is about to send, as the plugins before left it.
    :param session: the session running.
    :returns: a replacement request, ``None`` to keep it, or an awaitable resolving to
        either. Anything else, or an exception, fails the run with a
        :class:`~wingspan.PluginError` naming the plugin.
    """


@hookspec(firstresult=True)
def wingspan_tool_call(
    invocation: ToolInvocation, context: ToolContext
) -> Generator[None, Any, Any] | Any:
    """Wrap a tool call: permission checks, audit, timing.

    Implement it as a new-style wrapper. Raising before ``yield`` refuses the call (a
    :class:`~wingspan.ToolError` message is shown to the model). ``yield`` gives the awaitable
    that runs the tool and resolves to a :class:`~wingspan.ToolOutcome`; return it, or an
    awaitable wrapping it::

        @wingspan.hookimpl(wrapper=True)
        def wingspan_tool_call(invocation, context):
            if invocation.tool.name == "bash" and not allowed(context):
                raise wingspan.ToolError("bash is not allowed here")
            return (yield)

    Called for every tool call, after its input was validated.

    :param invocation: the tool, the call id and the validated input.
    :param context: the call's :class:`~wingspan.ToolContext`.
    :returns: an awaitable resolving to a :class:`~wingspan.ToolOutcome`.

    Stops at first non-None result.
    """


@hookspec
def wingspan_tool_call_applies(
    agent: Agent, session: Session, run_id: str
) -> bool | Callable[[Tool, Mapping[str, Any]], bool] | None:
    """Which calls of a run this plugin's :func:`wingspan_tool_call` wrapper wraps: asked once
    a run, before its first tool call.

    - ``False``: none; the run's calls are left to the other wrappers, and a run no wrapper
      applies to calls its tools directly. A policy with nothing to decide (the
      ``permissions`` plugin without rules) steps aside.
    - a **guard**, ``guard(tool, input) -> bool``, synchronous: asked before each call of the
      run (its input validated); false leaves that call to the other wrappers. A policy
      that allows most calls lets them run at the cost of its guard (the ``permissions``
      plugin's is its rules' decision), not at that of a wrapped call: no
      :class:`~wingspan.ToolContext` and no wrapper are made for them.
    - ``True`` or ``None`` (or not implementing it): every call.

    A check or a guard that raises counts as true (its wrapper wraps the call, and sees
    what is wrong), so that a failure skips no policy; a check's failure is logged.

    :param agent: the agent of the run.
    :param session: the session running it.
    :param run_id: the run's id.
    """


@hookspec
def wingspan_event(event: StreamEvent, session: Session) -> None:
    """Observe every event of every run, as it happens.

    Called through :meth:`Runtime.observe`, in plugin order. Must return quickly; it runs
    on the event loop. An observer cannot end a run: what it raises is logged to the
    ``wingspan.plugins`` logger, and the run and the other observers go on.

    :param event: the event about to be yielded to the caller.
    :param session: the session running.
    """

