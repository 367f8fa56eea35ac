"""Permissions: the rules that decide whether a tool call runs, is asked about, or is refused.

A :class:`~wingspan.Rule` names tools and a pattern on a call's **subject**, what a person
would judge: the bash command, the path of a read, write or edit relative to the work dir,
the URL of a webfetch. A tool names its own subject (:func:`subject_of`); by default it is
the call's input as compact JSON. Rules come from the server's configuration, then the
agent's ``permissions``, then the session's grants; the last one matching a call decides,
and a call no rule matches gets the configured default.

The policy itself is the built-in ``permissions`` plugin, a ``wingspan_tool_call`` wrapper
(``wingspan.plugins.permissions``); this module holds what the kernel, the stores and the
transports share with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .errors import ConfigError, ConflictError, ToolError
from .store import utc_now
from .types import (
    PermissionAction,
    PermissionDecision,
    PermissionRequest,
    ResolvedBy,
    Rule,
)
from .wire import json_encoder

if TYPE_CHECKING:
    from .store import Store
    from .tools import Tool, ToolContext

__all__ = [
    "ACTIONS",
    "DECISIONS",
    "Answer",
    "Approver",
    "answer",
    "decide",
    "ended_with_run",
    "escape",
    "guard_of",
    "parse_answer",
    "parse_rules",
    "subject_of",
]

ACTIONS: tuple[str, ...] = typing.get_args(PermissionAction)
DECISIONS: tuple[str, ...] = typing.get_args(PermissionDecision)


@attrs.frozen(kw_only=True)
class Answer:
    """A decision on a :class:`~wingspan.PermissionRequest`.

    :ivar message: with ``deny``, what the model is told (a default message otherwise).
    :ivar pattern: with ``allow_always``, the glob on the subject the session's grant
        covers (default: exactly this request's subject).
    """

    decision: PermissionDecision
    message: str | None = None
    pattern: str | None = None


#: An approval callback: given a request, its answer — an :class:`Answer` or a bare decision
#: (``"allow"``, ``"allow_always"``, ``"deny"``) — sync or async.
Approver: TypeAlias = Callable[
    [PermissionRequest],
    "Answer | PermissionDecision | Awaitable[Answer | PermissionDecision]",
]


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern), re.DOTALL)


def _matches(value: str, pattern: str) -> bool:
    return pattern == "*" or _compiled(pattern).match(value) is not None


class _AnyOf:
    """Whether a subject matches any of some globs: those of the usual shapes (``ls``,
    ``git *``, ``*.env``, ``*secret*``) by string methods, the others by one regular
    expression."""

    __slots__ = ("exact", "parts", "prefixes", "regex", "suffixes")

    def __init__(self, globs: list[str]) -> None:
        exact: list[str] = []
        prefixes: list[str] = []
        suffixes: list[str] = []
        parts: list[str] = []
        others: list[str] = []
        for glob in globs:
            inner = glob.strip("*")
            if "*" in inner or "?" in inner or "[" in inner:
                others.append(glob)
            elif glob.startswith("*"):
                (parts if glob.endswith("*") else suffixes).append(inner)
            else:
                (prefixes if glob.endswith("*") else exact).append(inner)
        self.exact = frozenset(exact)
        self.prefixes, self.suffixes, self.parts = tuple(prefixes), tuple(suffixes), tuple(parts)
        # Each translated glob is anchored at both ends and has no group of its own (atomic
        # groups, since Python 3.11), so their alternation matches what any one of them does.
        self.regex = (re.compile("|".join(fnmatch.translate(g) for g in others), re.DOTALL)
                      if others else None)

    def matches(self, subject: str) -> bool:
        if subject in self.exact or subject.startswith(self.prefixes) \
                or subject.endswith(self.suffixes):
            return True
        for part in self.parts:
            if part in subject:
                return True
        return self.regex is not None and self.regex.match(subject) is not None


#: What :func:`decide` reads of a tuple of rules for one tool: the actions of the rules
#: naming that tool, last rule first, each with the globs one of its subjects must match
#: (``None``: any subject), consecutive rules of the same action merged (whichever of them
#: matches, that action decides).
_Plan: TypeAlias = tuple[tuple[_AnyOf | None, PermissionAction], ...]

#: The plans of the tuples of rules decided on lately, by the tuple's identity (each entry
#: holds its tuple, so that no other tuple takes its id while it is here), then by tool.
_plans: dict[int, tuple[tuple[Rule, ...], dict[str, _Plan]]] = {}
_PLANS_KEPT = 64


def _plan(rules: tuple[Rule, ...], tool_name: str) -> _Plan:
    kept = _plans.get(id(rules))
    if kept is None or kept[0] is not rules:
        if len(_plans) >= _PLANS_KEPT:
            _plans.clear()
        kept = _plans[id(rules)] = (rules, {})
    by_tool = kept[1]
    plan = by_tool.get(tool_name)
    if plan is None:
        groups: list[tuple[list[str], PermissionAction]] = []
        for rule in reversed(rules):
            if _matches(tool_name, rule.tool):
                if groups and groups[-1][1] == rule.action:
                    groups[-1][0].append(rule.match)
                else:
                    groups.append(([rule.match], rule.action))
        plan = tuple(
            (None if any(glob and not glob.strip("*") for glob in globs) else _AnyOf(globs),
             action)
            for globs, action in groups
        )
        if len(by_tool) >= _PLANS_KEPT:
            by_tool.clear()
        by_tool[tool_name] = plan
    return plan


def decide(
    rules: Iterable[Rule], tool_name: str, subject: str | Callable[[], str],
    default: PermissionAction,
) -> PermissionAction:
    """The action for a call of ``tool_name`` on ``subject``: the last rule matching it, or
    ``default``. ``subject`` may be a function computing it, called only when the action
    depends on it."""
    computed: str | None = subject if isinstance(subject, str) else None
    if type(rules) is tuple:
        # A tuple is decided on again and again (the plugin's rules): read once a tool.
        plan = _plan(rules, tool_name)
        last = len(plan) - 1
        for position, (pattern, action) in enumerate(plan):
            if pattern is not None:
                if position == last and action == default:
                    break  # matching or not, the action is the default
                if computed is None:
                    computed = subject() if callable(subject) else subject
                if not pattern.matches(computed):
                    continue
            return action
        return default
    for rule in reversed(rules if isinstance(rules, list) else list(rules)):
        if not _matches(tool_name, rule.tool):
            continue
        if rule.match != "*":
            if computed is None:
                computed = subject() if callable(subject) else subject
            if not _matches(computed, rule.match):
                continue
        found: PermissionAction = rule.action
        return found
    return default


def guard_of(
    rules: tuple[Rule, ...], default: PermissionAction, context: ToolContext | None
) -> Callable[[Tool, Mapping[str, Any]], bool]:
    """Whether a call of a tool with an input is one the rules do not allow (it is asked
    about or refused), as :func:`decide` says, by a function made once a tool: the
    ``permissions`` plugin's guard (:func:`~wingspan.hookspecs.wingspan_tool_call_applies`),
    the whole cost of an allowed call. ``context`` is what the tools' subjects see.

    :raises ToolError: when a tool's subject cannot be computed (as :func:`subject_of`).
    """
    by_tool: dict[str, Callable[[Mapping[str, Any]], bool]] = {}

    def guard(tool: Tool, input: Mapping[str, Any]) -> bool:
        check = by_tool.get(tool.name)
        if check is None:
            check = by_tool[tool.name] = _guard_for(_plan(rules, tool.name), default, tool,
                                                    context)
        return check(input)

    return guard


def _guard_for(plan: _Plan, default: PermissionAction, tool: Tool,
               context: ToolContext | None) -> Callable[[Mapping[str, Any]], bool]:
    """:func:`guard_of` for one tool: the groups of ``plan`` that can change the action."""
    groups = list(plan)
    if groups and groups[-1][0] is not None and groups[-1][1] == default:
        groups.pop()  # matching or not, the action is the default
    final = default
    for position, (pattern, action) in enumerate(groups):
        if pattern is None:  # it decides every call that gets to it
            groups, final = groups[:position], action
            break
    refused = final != "allow"
    if not groups:
        return lambda input: refused
    if getattr(tool, "subject", None) is None:
        subject: Callable[[Mapping[str, Any]], str] = _compact
    else:
        subject = functools.partial(subject_of, tool, context=context)
    if len(groups) == 1:  # the usual shape: an allow list, or a deny list
        ((pattern, action),) = groups
        matches = typing.cast(_AnyOf, pattern).matches
        refused_if_matched = action != "allow"
        return lambda input: refused_if_matched if matches(subject(input)) else refused
    checks = [(typing.cast(_AnyOf, pattern).matches, action != "allow")
              for pattern, action in groups]

    def check(input: Mapping[str, Any]) -> bool:
        computed = subject(input)
        for matches, refused_if_matched in checks:
            if matches(computed):
                return refused_if_matched
        return refused

    return check


def escape(subject: str) -> str:
    """A glob matching exactly ``subject`` (its ``*``, ``?`` and ``[`` taken literally)."""
    return re.sub(r"([*?\[])", r"[\1]", subject)


#: The subject of a tool that names none: its input as compact JSON, keys sorted.
_compact = json_encoder(sort_keys=True, default=str)


def subject_of(tool: Tool, input: Mapping[str, Any], context: ToolContext | None) -> str:
    """What a person judges of a call of ``tool``: its ``subject(input, context)`` when it
    has one, else its input as compact JSON (keys sorted)."""
    subject = getattr(tool, "subject", None)
    if subject is not None:
        try:
            value = subject(input, context)
        except Exception as exc:  # a call that cannot be judged is not run
            raise ToolError(f"the subject of this {tool.name} call could not be computed, so "
                            f"it is refused: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, str):
            return value
    return _compact(input)


def parse_rules(value: Any, where: str) -> tuple[Rule, ...]:
    """Rules from their JSON (or TOML) form, a list of ``{"tool", "match", "action"}``.

    :param where: how to name the list in errors (``"permissions"``, ``"$.permissions"``).
    :raises ConfigError: naming the first problem and where it is.
    """
    if isinstance(value, Rule):
        return (value,)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} must be a list of rules ({{\"tool\", \"match\", "
                          f"\"action\"}}), got {type(value).__name__}")
    rules = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, Rule):
            rules.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at} must be a rule ({{\"tool\", \"match\", \"action\"}}), "
                              f"got {type(item).__name__}")
        unknown = sorted(set(item) - {"tool", "match", "action"})
        if unknown:
            raise ConfigError(f"{at} has unknown key {unknown[0]!r}: a rule has tool, match "
                              "and action")
        action = item.get("action")
        if action not in ACTIONS:
            raise ConfigError(f"{at}.action must be one of allow, ask, deny, got {action!r}")
        fields = {}
        for key in ("tool", "match"):
            if key in item:
                if not isinstance(item[key], str) or not item[key]:
                    raise ConfigError(f"{at}.{key} must be a non-empty glob string, got "
                                      f"{item[key]!r}")
                fields[key] = item[key]
        rules.append(Rule(action=action, **fields))
    return tuple(rules)


def parse_answer(value: Answer | str | Any, where: str = "answer") -> Answer:
    """An :class:`Answer` from what a callback or a client gave.

    :raises ConfigError: for anything but an answer or one of the three decisions.
    """
    if isinstance(value, Answer):
        if value.decision not in DECISIONS:
            raise ConfigError(f"{where}: decision must be one of allow, allow_always, deny, "
                              f"got {value.decision!r}")
        if value.pattern is not None and (not isinstance(value.pattern, str)
                                          or not value.pattern):
            raise ConfigError(f"{where}: pattern must be a non-empty glob, got "
                              f"{value.pattern!r}")
        return value
    if isinstance(value, str) and value in DECISIONS:
        return Answer(decision=typing.cast(PermissionDecision, value))
    raise ConfigError(f"{where} must be 'allow', 'allow_always', 'deny' or a "
                      f"wingspan.permissions.Answer, got {value!r}")


# --- answering and waiting ---------------------------------------------------------------------

#: Seconds between two looks at the store by a run waiting for an answer given elsewhere (a
#: process sharing the store); an answer given in this process wakes it at once.
ANSWER_POLL = 0.5

#: The waiters of this process on each request, woken by :func:`answer`.
_waiters: dict[str, set[asyncio.Future[None]]] = {}


def resolved(request: PermissionRequest, *, decision: PermissionDecision, by: ResolvedBy,
             message: str | None) -> PermissionRequest:
    """``request`` answered now: ``allowed`` (``allow``, ``allow_always``) or ``denied``."""
    return attrs.evolve(request, status="denied" if decision == "deny" else "allowed",
                        decision=decision, by=by, message=message, resolved_at=utc_now())


def ended_with_run(request: PermissionRequest) -> PermissionRequest:
    """A pending ``request`` whose run ends: denied ``by: "timeout"`` once it expired
    (nobody answered in time), ``by: "abort"`` before."""
    by: ResolvedBy = "timeout" if request.expires_at <= utc_now() else "abort"
    return resolved(request, decision="deny", by=by, message=None)


def grant_for(request: PermissionRequest, answer: Answer) -> Rule | None:
    """The session grant an ``allow_always`` answer makes: that tool, on the subjects its
    pattern matches (default: exactly the request's subject)."""
    if answer.decision != "allow_always" or not (answer.pattern or request.subject):
        return None  # an empty subject: this call is allowed, no rule can name it
    return Rule(tool=escape(request.tool_name), match=answer.pattern or escape(request.subject),
                action="allow")


async def answer(
    store: Store, request_id: str, decision: Answer | PermissionDecision, *,
    by: ResolvedBy = "user",
) -> PermissionRequest:
    """Answer a pending request in the store, and wake its run if it waits in this process
    (one in another process sees the answer within :data:`ANSWER_POLL` seconds). An
    ``allow_always`` answer also allows, ``by: "rule"``, the session's other pending
    requests its grant covers.

    :returns: the request as stored.
    :raises NotFoundError: when there is no such request.
    :raises ConflictError: when it was answered already (of two racing answers, one wins).
    :raises ConfigError: for a decision that is none of the three.
    """
    given = parse_answer(decision)
    request = await store.get_permission_request(request_id)
    grant = grant_for(request, given)
    resolved = await store.resolve_permission_request(
        request_id, decision=given.decision, by=by, message=given.message, grant=grant)
    wake(request_id)
    if grant is not None:  # the session's other requests the grant covers are answered too
        for other in await store.list_permission_requests(request.session_id):
            if decide((grant,), other.tool_name, other.subject, "ask") == "allow":
                with contextlib.suppress(ConflictError):
                    await store.resolve_permission_request(other.id, decision="allow",
                                                           by="rule")
                    wake(other.id)
    return resolved


def wake(request_id: str) -> None:
    """Wake this process's waiters on ``request_id`` (it was answered)."""
    for waiter in _waiters.pop(request_id, ()):
        if not waiter.done():
            waiter.set_result(None)


async def wait_resolved(store: Store, request: PermissionRequest,
                        timeout: float) -> PermissionRequest | None:
    """Wait until ``request`` is answered (here or in another process sharing ``store``) or
    ``timeout`` seconds pass. :returns: the request as answered, or ``None`` at the
    timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        waiter = loop.create_future()
        _waiters.setdefault(request.id, set()).add(waiter)
        try:
            stored = await store.get_permission_request(request.id)
            if stored.status != "pending":
                return stored
            left = deadline - loop.time()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, min(left, ANSWER_POLL))
        finally:
            waiting = _waiters.get(request.id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del _waiters[request.id]
