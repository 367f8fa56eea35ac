"""The ``permissions`` plugin: allow, ask or deny each tool call, by rules.

A ``wingspan_tool_call`` wrapper. Each call's action is the last rule matching it — the
runtime's (``Settings.extra["permissions"]["rules"]``, the server's ``[[permissions]]``),
then the agent's ``permissions``, then the session's grants — or the configured default
(``"allow"`` unless set). ``deny`` refuses the call (the model sees why); ``ask`` stores a
:class:`~wingspan.PermissionRequest` (the run is ``waiting``), sends its
``permission_request`` event, and waits for the answer: the run's ``approve`` callback, or
:func:`wingspan.permissions.answer` from any process sharing the store, or the request's
``expires_at`` (denied ``by: "timeout"``). The answer is stored before the tool runs; a run
stopped meanwhile resolves its requests ``by: "abort"``. See docs/permissions.md.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Generator, Mapping
from datetime import timedelta
from typing import Any

import wingspan
from wingspan import (
    ConfigError,
    ConflictError,
    ErrorInfo,
    PermissionRequest,
    PermissionRequested,
    PermissionResolved,
    Rule,
    ToolContext,
    ToolError,
    ToolInvocation,
    ToolOutcome,
)
from wingspan.ids import new_id
from wingspan.permissions import (
    ACTIONS,
    Answer,
    decide,
    grant_for,
    guard_of,
    parse_answer,
    parse_rules,
    resolved,
    subject_of,
    wait_resolved,
)
from wingspan.runs import RunFailed

#: Seconds a request waits for an answer before it is denied (``ask_timeout``).
DEFAULT_ASK_TIMEOUT = 600.0
#: The action of a call no rule matches, unless configured.
DEFAULT_ACTION: wingspan.PermissionAction = "allow"
#: The key of the run's grants (read from the store once a run) in ``ToolContext.run_data``.
GRANTS = "permissions.grants"
#: How many agents' rules a policy keeps merged with its own.
MERGED_KEPT = 64
#: The key of the requests an earlier execution of the run made, by tool call id.
ASKED = "permissions.asked"


class Policy:
    """The runtime's rules, read from its settings each time they change."""

    __slots__ = ("_merged", "_read", "ask_timeout", "default", "rules")

    def __init__(self) -> None:
        self._read: object = None
        self.rules: tuple[Rule, ...] = ()
        self.default: wingspan.PermissionAction = DEFAULT_ACTION
        self.ask_timeout = DEFAULT_ASK_TIMEOUT
        #: The runtime's rules then an agent's, by the identity of the agent's (each entry
        #: holds them): the same tuple for each call, which ``decide`` reads once a tool.
        self._merged: dict[int, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = {}

    def update(self, settings: Mapping[str, Any] | None) -> Policy:
        if settings is self._read:
            return self
        settings = settings or {}
        unknown = sorted(set(settings) - {"rules", "default", "ask_timeout"})
        if unknown:
            raise ConfigError(f"permissions settings: unknown key {unknown[0]!r} (rules, "
                              "default, ask_timeout)")
        rules = parse_rules(settings.get("rules", ()), "permissions")
        default = settings.get("default", DEFAULT_ACTION)
        if default not in ACTIONS:
            raise ConfigError(f"permissions: the default must be allow, ask or deny, got "
                              f"{default!r}")
        timeout = settings.get("ask_timeout", DEFAULT_ASK_TIMEOUT)
        if type(timeout) not in (int, float) or not timeout > 0:
            raise ConfigError(f"permissions: ask_timeout must be a positive number of "
                              f"seconds, got {timeout!r}")
        self.rules, self.default = rules, typing.cast(wingspan.PermissionAction, default)
        self.ask_timeout, self._read = float(timeout), settings
        self._merged.clear()
        return self

    def rules_for(self, agent_rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        """The runtime's rules, then ``agent_rules`` (the agent's): they decide a call."""
        if not agent_rules:
            return self.rules
        if not self.rules:
            return agent_rules
        merged = self._merged.get(id(agent_rules))
        if merged is None or merged[0] is not agent_rules:
            if len(self._merged) >= MERGED_KEPT:
                self._merged.clear()
            merged = self._merged[id(agent_rules)] = (agent_rules, self.rules + agent_rules)
        return merged[1]


class Permissions:
    """The wrapper of one runtime's tool calls."""

    def __init__(self, runtime: wingspan.Runtime) -> None:
        self.runtime = runtime
        self.policy = Policy()

    @wingspan.hookimpl
    def wingspan_tool_call_applies(
        self, agent: wingspan.Agent, session: wingspan.Session, run_id: str
    ) -> bool | Callable[[wingspan.Tool, Mapping[str, Any]], bool]:
        """The calls of the run that may be refused or asked about: those the rules do not
        allow (grants only answer what would be asked). Without rules, all of them or
        none, as the default says; with rules, a guard deciding each call, so that an
        allowed call runs without the wrapper."""
        policy = self.policy.update(self.runtime.settings.extra.get("permissions"))
        rules, default = policy.rules_for(agent.permissions), policy.default
        if not rules:
            return default != "allow"
        # What the subjects of the built-in tools read of a call's context is the run's.
        context = ToolContext(work_dir=session.work_dir, session_id=session.id, run_id=run_id,
                              tool_use_id="", settings=self.runtime.settings.tools,
                              agent=agent, store=session.store)
        return guard_of(rules, default, context)

    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(
        self, invocation: ToolInvocation, context: ToolContext
    ) -> Generator[None, Any, Any]:
        policy = self.policy.update(self.runtime.settings.extra.get("permissions"))
        agent = context.agent
        rules = policy.rules_for(agent.permissions) if agent is not None else policy.rules
        if not rules:
            action = policy.default
            if action == "allow":
                return (yield)  # nothing to decide: the call as it is
        tool = invocation.tool
        subject: str | None = None

        def computed() -> str:
            nonlocal subject
            if subject is None:
                subject = subject_of(tool, invocation.input, context)
            return subject

        if rules:
            action = decide(rules, tool.name, computed, policy.default)
        if action == "deny":
            raise ToolError(f"permission denied: the rules do not allow {tool.name} on "
                            f"{computed()!r}")
        call = yield
        if action == "allow":
            return call
        return self._ask(invocation, context, call, computed(), policy.ask_timeout)

    async def _ask(self, invocation: ToolInvocation, context: ToolContext, call: Any,
                   subject: str, timeout: float) -> ToolOutcome:
        try:
            granted = await self._granted(context, invocation.tool.name, subject)
        except BaseException:
            _close(call)
            raise
        if granted:
            return typing.cast(ToolOutcome, await call)
        store = context.store
        asked = await self._asked(context) if store is not None else None
        if asked is not None:  # a run entered again: its request was made before
            return await self._asked_before(asked, invocation, context, call, subject)
        if context.approve is None and not (context.answerable and store is not None):
            _close(call)
            raise RunFailed(ErrorInfo(
                code="permission_required",
                message=f"the call of {invocation.tool.name} on {subject!r} needs a person's "
                        f"approval (a rule says ask) and nobody can answer this run: pass "
                        f"approve=... to run it, or start it in a store"))
        now = wingspan.utc_now()
        request = PermissionRequest(
            id=new_id(), session_id=context.session_id, run_id=context.run_id,
            tool_use_id=context.tool_use_id, tool_name=invocation.tool.name,
            input=invocation.input, subject=subject, created_at=now,
            expires_at=now + timedelta(seconds=timeout))
        try:
            if store is not None:
                await store.add_permission_request(request)  # stored before its event
            assert context.emit is not None
            context.emit(PermissionRequested(request=request))
            resolved = await self._answer(request, context, timeout)
        except BaseException:
            _close(call)  # the run stopped: its end resolves its requests (Store.finish_run)
            raise
        return await self._decided(resolved, invocation, context, call, subject)

    async def _asked_before(self, request: PermissionRequest, invocation: ToolInvocation,
                            context: ToolContext, call: Any, subject: str) -> ToolOutcome:
        """The call of a run entered again (its process ended while it waited): the answer
        its request got meanwhile, or the wait for it goes on until it expires."""
        if request.status == "pending":
            left = (request.expires_at - wingspan.utc_now()).total_seconds()
            try:
                request = await self._answer(request, context, max(left, 0.0))
            except BaseException:
                _close(call)
                raise
        return await self._decided(request, invocation, context, call, subject)

    async def _asked(self, context: ToolContext) -> PermissionRequest | None:
        """The request this call made before, in an earlier execution of its run (read
        once a run: the requests of the session's run)."""
        made: dict[str, PermissionRequest] | None = context.run_data.get(ASKED)
        if made is None:
            assert context.store is not None
            made = {request.tool_use_id: request for request in
                    await context.store.list_permission_requests(context.session_id,
                                                                 pending_only=False)
                    if request.run_id == context.run_id}
            context.run_data[ASKED] = made
        return made.pop(context.tool_use_id, None)

    async def _decided(self, resolved: PermissionRequest, invocation: ToolInvocation,
                       context: ToolContext, call: Any, subject: str) -> ToolOutcome:
        """Run the call, or refuse it, as ``resolved`` says."""
        assert context.emit is not None
        assert resolved.decision is not None and resolved.by is not None
        context.emit(PermissionResolved(request_id=resolved.id, decision=resolved.decision,
                                        by=resolved.by))
        if resolved.status == "denied":
            _close(call)
            why = {"timeout": "nobody answered in time", "abort": "the run was stopped"}
            reason = resolved.message or why.get(resolved.by, "a person refused it")
            return ToolOutcome(content=f"permission denied for {invocation.tool.name} on "
                                       f"{subject!r}: {reason}", is_error=True)
        if resolved.decision == "allow_always" and context.store is not None:
            context.run_data.pop(GRANTS, None)  # read again, with the grant it made
        return typing.cast(ToolOutcome, await call)

    async def _granted(self, context: ToolContext, tool_name: str, subject: str) -> bool:
        """Whether a grant of the session allows the call (grants are read once a run)."""
        store = context.store
        grants: list[Rule] | None
        if store is None:  # a session without a store keeps its grants here
            grants = context.session_data.get(GRANTS)
        else:
            grants = context.run_data.get(GRANTS)
            if grants is None:
                grants = context.run_data.setdefault(
                    GRANTS, await store.list_grants(context.session_id))
        return grants is not None and decide(grants, tool_name, subject, "ask") == "allow"

    async def _answer(self, request: PermissionRequest, context: ToolContext,
                      timeout: float) -> PermissionRequest:
        """The request as answered: by the run's callback, in the store, or by its timeout;
        the answer is stored before the tool runs."""
        store = context.store
        if context.approve is not None:
            by: wingspan.ResolvedBy = "user"
            try:
                answer = await asyncio.wait_for(_call(context.approve, request), timeout)
            except TimeoutError:
                answer, by = Answer(decision="deny"), "timeout"
            except Exception as exc:  # the callback's own failure refuses the call
                answer = Answer(decision="deny", message=(
                    f"the approval callback failed: {type(exc).__name__}: {exc}"))
            if store is None and answer.decision == "allow_always":
                grant = grant_for(request, answer)  # a session without a store keeps it here
                context.session_data.setdefault(GRANTS, []).append(grant)
            return await self._resolve(store, request, answer, by)
        assert store is not None
        stored = await wait_resolved(store, request, timeout)
        if stored is not None:
            return stored
        return await self._resolve(store, request, Answer(decision="deny"), "timeout")

    async def _resolve(self, store: wingspan.Store | None, request: PermissionRequest,
                       answer: Answer, by: wingspan.ResolvedBy) -> PermissionRequest:
        """Store ``answer``; if another won the race, the stored one is the answer."""
        if store is None:
            return resolved(request, decision=answer.decision, by=by, message=answer.message)
        try:
            return await store.resolve_permission_request(
                request.id, decision=answer.decision, by=by, message=answer.message,
                grant=grant_for(request, answer))
        except ConflictError:
            return await store.get_permission_request(request.id)


async def _call(approve: Any, request: PermissionRequest) -> Answer:
    value = approve(request)
    if inspect.isawaitable(value):
        value = await value
    return parse_answer(value, "the approve callback's answer")


def _close(call: Any) -> None:
    """Drop the tool call that will not run (a coroutine never awaited says so otherwise)."""
    close = getattr(call, "close", None)
    if close is not None:
        close()


@wingspan.hookimpl
def wingspan_configure(runtime: wingspan.Runtime) -> None:
    permissions = Permissions(runtime)
    permissions.policy.update(runtime.settings.extra.get("permissions"))  # ConfigError now
    runtime.plugin_manager.register(permissions, name=f"permissions-{id(runtime)}")
