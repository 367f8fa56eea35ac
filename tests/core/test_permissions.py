"""Permissions through the real loop: rules (tool and subject globs, last match wins, the
runtime's then the agent's), the configured default, approval callbacks, ``allow_always``
grants, the ``permission_request`` / ``permission_resolved`` events, the fail-fast
``permission_required``, and runs that wait in a store (answered, timed out, aborted), on
the memory and the SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wingspan
from wingspan import (
    Agent,
    ConfigError,
    ConflictError,
    InferenceRequest,
    LoggedEvent,
    NotFoundError,
    PermissionRequest,
    PermissionRequested,
    PermissionResolved,
    Result,
    Rule,
    Runtime,
    Session,
    Settings,
    Store,
    TextBlock,
    ToolContext,
    ToolResultBlock,
    ToolResultEvent,
)
from wingspan.permissions import (
    Answer,
    answer,
    decide,
    escape,
    grant_for,
    guard_of,
    parse_answer,
    parse_rules,
    subject_of,
)
from wingspan.runs import RunFailed, RunHandle
from wingspan.testing import make_runtime, scripted

WAIT = 5  # seconds: every wait is bounded

Call = Mapping[str, Any]


# --- what the tests run ----------------------------------------------------------------------


@attrs.define
class Shell:
    """A bash-like tool that names its subject (the command) and records what it ran."""

    name: str = "sh"
    description: str = "Run a command."
    input_schema: Mapping[str, Any] = attrs.field(factory=lambda: {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    })
    ran: list[str] = attrs.field(factory=list)

    def subject(self, input: Mapping[str, Any], context: ToolContext | None) -> str:
        return str(input["command"])

    async def call(self, input: dict[str, Any], context: ToolContext) -> str:
        self.ran.append(input["command"])
        return f"ran {input['command']}"


@attrs.define
class Notes:
    """A tool without a subject of its own: its subject is its input as compact JSON."""

    name: str = "note"
    description: str = "Write a note."
    input_schema: Mapping[str, Any] = attrs.field(factory=lambda: {
        "type": "object",
        "properties": {"text": {"type": "string"}, "tag": {"type": "string"}},
        "required": ["text"],
    })
    ran: list[str] = attrs.field(factory=list)

    async def call(self, input: dict[str, Any], context: ToolContext) -> str:
        self.ran.append(input["text"])
        return f"noted {input['text']}"


def sh(command: str) -> Call:
    return {"name": "sh", "input": {"command": command}}


def note(text: str, **more: str) -> Call:
    return {"name": "note", "input": {"text": text, **more}}


def model(*turns: Sequence[Call]) -> Any:
    """A script: step *i* of a run makes the calls of ``turns[i]``; then the model answers
    with every tool result it was given in the run (so a test sees what the model saw)."""

    def script(request: InferenceRequest) -> Any:
        messages = request.messages
        start = max(i for i, m in enumerate(messages) if m.role == "user"
                    and any(isinstance(b, TextBlock) for b in m.content))
        step = sum(1 for m in messages[start:] if m.role == "assistant")
        if step < len(turns):
            return {"tool_calls": [dict(call) for call in turns[step]]}
        seen = [f"{'error' if b.is_error else 'ok'}: {b.content}"
                for m in messages[start:] for b in m.content if isinstance(b, ToolResultBlock)]
        return "saw " + " | ".join(seen)

    return script


def runtime_with(permissions: Mapping[str, Any] | None = None) -> Runtime:
    """An isolated runtime whose settings hold ``permissions`` (the server's section)."""
    extra = {} if permissions is None else {"permissions": dict(permissions)}
    return Runtime.from_settings(Settings(autoload=False, extra=extra))


@attrs.define
class Setup:
    runtime: Runtime
    shell: Shell
    notes: Notes
    agent: Agent

    def session(self, store: Store | None = None, **kwargs: Any) -> Session:
        return Session(agent=self.agent, store=store, runtime=self.runtime, **kwargs)


def setup(*turns: Sequence[Call], settings: Mapping[str, Any] | None = None,
          permissions: Any = ()) -> Setup:
    runtime = runtime_with(settings)
    shell, notes = Shell(), Notes()
    agent = Agent(name="careful", provider=scripted(model(*turns), runtime=runtime),
                  tools=[shell, notes], permissions=permissions)
    return Setup(runtime=runtime, shell=shell, notes=notes, agent=agent)


class Person:
    """An approval callback answering from a table by subject, recording what it was
    asked (sync or async)."""

    def __init__(self, answers: Mapping[str, Any] | Any = "allow", *,
                 is_async: bool = False) -> None:
        self.answers = answers
        self.asked: list[PermissionRequest] = []
        self.is_async = is_async

    def _answer(self, request: PermissionRequest) -> Any:
        self.asked.append(request)
        if isinstance(self.answers, Mapping):
            return self.answers[request.subject]
        return self.answers

    def __call__(self, request: PermissionRequest) -> Any:
        if self.is_async:
            async def later() -> Any:
                await asyncio.sleep(0)
                return self._answer(request)
            return later()
        return self._answer(request)

    @property
    def subjects(self) -> list[str]:
        return [request.subject for request in self.asked]


def outputs(result: Result) -> list[tuple[str, bool]]:
    return [(call.output, call.is_error) for call in result.tool_calls]


async def run(session: Session, message: str = "go", **kwargs: Any) -> Result:
    return await asyncio.wait_for(session.run(message, **kwargs), WAIT)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'w.db'}"
    opened = await make_runtime().open_store(url)
    yield opened
    await opened.close()


async def requested(handle: RunHandle, count: int = 1) -> list[PermissionRequest]:
    """The run's first ``count`` permission requests, from its event log as they come (the
    request is stored, and its run ``waiting``, before its event is sent)."""
    seen: list[PermissionRequest] = []

    async def follow() -> None:
        async for entry in handle.events():
            if isinstance(entry.event, PermissionRequested):
                seen.append(entry.event.request)
                if len(seen) == count:
                    return

    await asyncio.wait_for(follow(), WAIT)
    return seen


async def logged(handle: RunHandle) -> list[LoggedEvent]:
    async def read() -> list[LoggedEvent]:
        return [entry async for entry in handle.events()]

    return await asyncio.wait_for(read(), WAIT)


# --- the rule language -------------------------------------------------------------------------

GIT, RM, NOTE = sh("git status"), sh("rm -rf build"), note("hello")
DENIED = "permission denied"


@pytest.mark.parametrize(("settings", "rules", "ran"), [
    pytest.param({}, [], ["git status", "rm -rf build", "hello"], id="no-rule-default-allow"),
    pytest.param({}, [Rule(tool="sh", action="deny")], ["hello"], id="tool-only"),
    pytest.param({}, [Rule(tool="sh", match="rm -rf build", action="deny")],
                 ["git status", "hello"], id="tool-and-exact-match"),
    pytest.param({"default": "deny"}, [Rule(tool="sh", match="git *", action="allow")],
                 ["git status"], id="glob-match"),
    pytest.param({}, [Rule(tool="*", action="deny")], [], id="star-tool"),
    pytest.param({}, [Rule(tool="n*", action="deny")], ["git status", "rm -rf build"],
                 id="tool-glob"),
    pytest.param({}, [Rule(match="*rm *", action="deny")], ["git status", "hello"],
                 id="match-only-any-tool"),
    pytest.param({"default": "deny"}, [Rule(tool="note", action="allow")], ["hello"],
                 id="allow-over-default-deny"),
    pytest.param({"default": "deny"}, [{"tool": "note", "match": '{"text":"hello"}',
                                        "action": "allow"}], ["hello"],
                 id="json-subject-of-a-tool-without-one"),
    pytest.param({}, [Rule(tool="sh", action="deny"),
                      Rule(tool="sh", match="git *", action="allow")],
                 ["git status", "hello"], id="last-match-wins-allow-after-deny"),
    pytest.param({}, [Rule(tool="sh", match="git *", action="allow"),
                      Rule(tool="sh", action="deny")],
                 ["hello"], id="last-match-wins-deny-after-allow"),
])
async def test_the_last_rule_matching_a_call_decides_and_a_denied_call_tells_the_model(
        settings: dict[str, Any], rules: list[Any], ran: list[str]) -> None:
    s = setup([GIT, RM, NOTE], settings=settings, permissions=rules)
    result = await run(s.session())
    assert s.shell.ran + s.notes.ran == ran
    refused = [call for call in result.tool_calls if call.is_error]
    assert len(refused) == 3 - len(ran)
    for call in refused:
        assert call.output.startswith(DENIED)
        assert call.input["command" if call.tool_name == "sh" else "text"] in call.output
    # the run went on: the model saw each result (refusals included) and answered
    assert result.response == "saw " + " | ".join(
        f"{'error' if is_error else 'ok'}: {output}" for output, is_error in outputs(result))
    assert result.stop_reason == "end_turn"


@pytest.mark.parametrize(("runtime_rules", "agent_rules", "git_runs"), [
    pytest.param([{"tool": "sh", "action": "deny"}], [Rule(tool="sh", match="git *",
                                                           action="allow")], True,
                 id="agent-allow-after-runtime-deny"),
    pytest.param([{"tool": "sh", "action": "allow"}], [Rule(tool="sh", action="deny")], False,
                 id="agent-deny-after-runtime-allow"),
    pytest.param([{"tool": "sh", "match": "git *", "action": "allow"}], [], True,
                 id="runtime-rules-alone"),
])
async def test_runtime_rules_come_first_then_the_agents(
        runtime_rules: list[Any], agent_rules: list[Rule], git_runs: bool) -> None:
    s = setup([GIT], settings={"rules": runtime_rules, "default": "deny"},
              permissions=agent_rules)
    result = await run(s.session())
    assert s.shell.ran == (["git status"] if git_runs else [])
    assert result.tool_calls[0].is_error is (not git_runs)


async def test_the_default_deny_refuses_every_call_no_rule_matches() -> None:
    s = setup([GIT, NOTE], settings={"default": "deny"})
    result = await run(s.session())
    assert s.shell.ran == s.notes.ran == []
    assert [output.split(":")[0] for output, _ in outputs(result)] == [DENIED] * 2
    assert result.response.startswith("saw error: permission denied")


async def test_the_default_ask_asks_about_every_call_no_rule_matches() -> None:
    s = setup([GIT, NOTE], settings={"default": "ask"},
              permissions=[Rule(tool="note", action="allow")])
    approve = Person("allow")
    result = await run(s.session(), approve=approve)
    assert approve.subjects == ["git status"]  # the note has a rule: never asked
    assert (s.shell.ran, s.notes.ran) == (["git status"], ["hello"])
    assert not any(call.is_error for call in result.tool_calls)


async def test_new_permission_settings_apply_to_the_next_run() -> None:
    s = setup([GIT], settings={"default": "allow"})
    assert outputs(await run(s.session())) == [("ran git status", False)]
    s.runtime.settings.extra["permissions"] = {"default": "deny"}  # what a reload does
    [(told, refused)] = outputs(await run(s.session()))
    assert refused and told.startswith(DENIED)
    s.runtime.settings.extra["permissions"] = {
        "rules": [{"tool": "sh", "match": "git *", "action": "allow"}], "default": "deny"}
    assert outputs(await run(s.session())) == [("ran git status", False)]


def test_decide_escape_and_subject_of_follow_the_documented_language() -> None:
    rules = parse_rules([{"tool": "sh", "action": "deny"},
                         {"tool": "sh", "match": "git *", "action": "allow"},
                         {"tool": "s?", "match": "git push*", "action": "ask"}], "rules")
    assert decide(rules, "sh", "git status", "allow") == "allow"
    assert decide(rules, "sh", "git push origin", "allow") == "ask"
    assert decide(rules, "sh", "ls", "allow") == "deny"
    assert decide(rules, "note", "anything", "ask") == "ask"  # no match: the default
    # '*' matches '/', spaces and newlines too
    assert decide([Rule(match="a*b", action="deny")], "x", "a /\n b", "allow") == "deny"
    # an escaped subject matches exactly itself, its glob characters taken literally
    literal = escape("ls *.py [x]?")
    assert decide([Rule(match=literal, action="allow")], "sh", "ls *.py [x]?", "deny") == "allow"
    assert decide([Rule(match=literal, action="allow")], "sh", "ls a.py [x]!", "deny") == "deny"
    assert subject_of(Shell(), {"command": "git log"}, None) == "git log"
    assert subject_of(Notes(), {"text": "é", "tag": "a"}, None) == '{"tag":"a","text":"é"}'


@pytest.mark.parametrize(("value", "where"), [
    ("allow", r"^rules must be a list of rules"),
    ([{"tool": "sh", "action": "allow"}, {"tool": "sh", "action": "maybe"}],
     r"rules\[1\]\.action must be one of allow, ask, deny, got 'maybe'"),
    ([{"tool": "sh"}], r"rules\[0\]\.action must be one of"),
    ([{"tool": "sh", "action": "deny", "pattern": "x"}], r"rules\[0\] has unknown key 'pattern'"),
    ([{"tool": "", "action": "deny"}], r"rules\[0\]\.tool must be a non-empty glob"),
    ([{"match": 3, "action": "deny"}], r"rules\[0\]\.match must be a non-empty glob"),
    ([Rule(action="deny"), "deny"], r"rules\[1\] must be a rule"),
])
def test_invalid_rules_raise_config_error_naming_where(value: Any, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse_rules(value, "rules")


def test_an_agent_with_invalid_permissions_fails_at_construction() -> None:
    provider = scripted(["hi"])
    with pytest.raises(ConfigError, match=r"Agent\(permissions=\.\.\.\)\[1\]\.action"):
        Agent(name="a", provider=provider,
              permissions=[Rule(action="allow"), {"tool": "sh", "action": "always"}])
    with pytest.raises(ConfigError, match=r"Agent\(permissions=\.\.\.\) must be a list"):
        Agent(name="a", provider=provider, permissions="deny")
    with pytest.raises(ValueError, match="tool must be a non-empty glob"):
        Rule(tool="", action="deny")
    agent = Agent(name="a", provider=provider, permissions=[{"tool": "sh", "action": "ask"}])
    assert agent.permissions == (Rule(tool="sh", match="*", action="ask"),)


BAD_SETTINGS = [
    pytest.param({"rules": [{"tool": "sh", "action": "nope"}]}, r"permissions\[0\]\.action",
                 id="rule"),
    pytest.param({"rules": [{"tool": "sh", "action": "deny", "when": 1}]},
                 r"permissions\[0\] has unknown key 'when'", id="rule-key"),
    pytest.param({"default": "maybe"}, "default must be allow, ask or deny", id="default"),
    pytest.param({"ask_timeout": 0}, "ask_timeout must be a positive number", id="timeout"),
    pytest.param({"ask_timeout": "5"}, "ask_timeout must be a positive number",
                 id="timeout-str"),
    pytest.param({"defaults": "deny"}, "unknown key 'defaults'", id="unknown-key"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_invalid_permission_settings_raise_config_error_as_the_runtime_is_made(
        settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        setup([GIT], settings=settings)


# --- approval callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("given", "runs", "told"), [
    ("allow", True, "ran git status"),
    (Answer(decision="allow"), True, "ran git status"),
    ("deny", False, "permission denied for sh on 'git status': a person refused it"),
    (Answer(decision="deny", message="not today"), False,
     "permission denied for sh on 'git status': not today"),
])
async def test_the_approve_callback_answers_and_the_model_sees_its_answer(
        is_async: bool, given: Any, runs: bool, told: str) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    approve = Person(given, is_async=is_async)
    result = await run(s.session(), approve=approve)
    assert approve.subjects == ["git status"]
    assert s.shell.ran == (["git status"] if runs else [])
    assert outputs(result) == [(told, not runs)]
    assert result.response == f"saw {'ok' if runs else 'error'}: {told}"


def test_run_sync_takes_an_approve_callback() -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    approve = Person(Answer(decision="deny", message="no"))
    result = s.session().run_sync("go", approve=approve)
    assert approve.subjects == ["git status"] and s.shell.ran == []
    assert result.tool_calls[0].output.endswith(": no")


@pytest.mark.parametrize("given", [
    42, "yes", "ask", None, Answer(decision="sometimes"),  # type: ignore[arg-type]
])
async def test_an_invalid_callback_answer_refuses_the_call_and_says_why(given: Any) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    result = await run(s.session(), approve=Person(given))
    assert s.shell.ran == []
    [call] = result.tool_calls
    assert call.is_error and "approve callback" in call.output
    assert result.response.startswith("saw error:")  # the run went on


async def test_a_callback_that_raises_refuses_the_call() -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])

    def approve(request: PermissionRequest) -> str:
        raise ValueError("the approver broke")

    result = await run(s.session(), approve=approve)
    assert s.shell.ran == []
    assert result.tool_calls[0].is_error and "the approver broke" in result.tool_calls[0].output


@pytest.mark.parametrize("approve", [
    pytest.param(lambda request: 42, id="invalid-answer"),
    pytest.param(lambda request: 1 / 0, id="raises"),
])
async def test_a_request_the_callback_fails_to_answer_is_resolved_on_the_stream(
        store: Store, approve: Any) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    async with session.stream("go", approve=approve) as stream:
        events = await asyncio.wait_for(_collect(stream), WAIT)
    assert s.shell.ran == []
    assert [e.type for e in events if e.type.startswith("permission_")] == [
        "permission_request", "permission_resolved"]
    [stored] = await store.list_permission_requests(session.id, pending_only=False)
    assert stored.status == "denied" and stored.by != "abort"


async def test_approve_must_be_callable(store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    with pytest.raises(ConfigError, match="approve must be a function"):
        await session.run("go", approve="allow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="approve must be a function"):
        session.stream("go", approve=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="approve must be a function"):
        await session.start("go", approve=["allow"])  # type: ignore[arg-type]
    assert s.shell.ran == []
    with pytest.raises(ConfigError, match="approve must be a function"):
        await asyncio.to_thread(s.session().run_sync, "go", approve=1)  # type: ignore[arg-type]


async def test_allow_always_without_a_store_covers_later_calls_of_the_run() -> None:
    s = setup([GIT], [GIT, sh("git log")], [GIT],
              permissions=[Rule(tool="sh", action="ask")])
    approve = Person({"git status": "allow_always", "git log": "allow"})
    result = await run(s.session(), approve=approve)
    assert approve.subjects == ["git status", "git log"]  # the same subject asked once
    assert s.shell.ran == ["git status", "git status", "git log", "git status"]
    assert not any(call.is_error for call in result.tool_calls)


async def test_allow_always_without_a_store_covers_the_sessions_next_run() -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    approve = Person("allow_always")
    session = s.session()
    await run(session, approve=approve)
    await run(session, "again", approve=approve)
    assert approve.subjects == ["git status"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_allow_always_is_a_stored_grant_for_the_sessions_later_runs(
        store: Store, is_async: bool) -> None:
    s = setup([GIT], [GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    approve = Person({"git status": "allow_always", "git log": "deny"}, is_async=is_async)
    await run(session, approve=approve)
    assert approve.subjects == ["git status"]  # its second call in the run: not asked
    assert await store.list_grants(session.id) == [
        Rule(tool="sh", match="git status", action="allow")]
    await run(session, "again", approve=approve)  # a new run, the same session
    assert approve.subjects == ["git status"]
    assert s.shell.ran == ["git status"] * 4
    # another subject is still asked; another session has no grant
    other = setup([sh("git log")], permissions=[Rule(tool="sh", action="ask")])
    later = Session.from_record(await store.get_session(session.id), agent=other.agent,
                                store=store, runtime=other.runtime)
    result = await run(later, "log", approve=approve)
    assert approve.subjects == ["git status", "git log"] and result.tool_calls[0].is_error
    fresh = s.session(store)
    await run(fresh, approve=approve)
    assert approve.subjects == ["git status", "git log", "git status"]
    assert len(await store.list_grants(fresh.id)) == 1  # its own


async def test_a_grant_of_a_subject_with_glob_characters_covers_only_that_subject(
        store: Store) -> None:
    s = setup([sh("ls *")], [sh("ls secret")], [sh("ls *")],
              permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    approve = Person({"ls *": "allow_always", "ls secret": "deny"})
    await run(session, approve=approve)
    assert approve.subjects == ["ls *", "ls secret"]
    assert s.shell.ran == ["ls *", "ls *"]
    assert await store.list_grants(session.id) == [Rule(tool="sh", match="ls [*]",
                                                        action="allow")]


async def test_an_allow_always_answer_with_a_pattern_grants_that_pattern(store: Store) -> None:
    s = setup([GIT], [sh("git log")], [sh("rm x")], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    approve = Person({"git status": Answer(decision="allow_always", pattern="git *"),
                        "rm x": "deny"})
    await run(session, approve=approve)
    assert approve.subjects == ["git status", "rm x"]
    assert s.shell.ran == ["git status", "git log"]
    assert await store.list_grants(session.id) == [Rule(tool="sh", match="git *",
                                                        action="allow")]


async def test_a_grant_never_overrides_a_deny_rule(store: Store) -> None:
    # grants are asked about only for calls a rule says to ask: a deny stays a deny
    s = setup([GIT], [GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    await run(session, approve=Person("allow_always"))
    strict = setup([GIT], permissions=[Rule(tool="sh", action="deny")])
    again = Session.from_record(await store.get_session(session.id), agent=strict.agent,
                                store=store, runtime=strict.runtime)
    result = await run(again, "again")
    assert strict.shell.ran == [] and result.tool_calls[0].output.startswith(DENIED)


# --- events ------------------------------------------------------------------------------------


async def test_the_stream_carries_the_request_then_its_resolution_then_the_result() -> None:
    s = setup([GIT, NOTE], permissions=[Rule(tool="sh", action="ask")])
    session = s.session()
    approve = Person("allow")
    async with session.stream("go", approve=approve) as stream:
        events = await asyncio.wait_for(_collect(stream), WAIT)
    kinds = [e.type for e in events]
    assert kinds.count("permission_request") == kinds.count("permission_resolved") == 1
    [event] = [e for e in events if isinstance(e, PermissionRequested)]
    request = event.request
    use = next(b for m in session.history for b in m.content
               if getattr(b, "name", None) == "sh")
    assert (request.tool_name, request.input, request.subject, request.status) == (
        "sh", {"command": "git status"}, "git status", "pending")
    assert (request.session_id, request.run_id, request.tool_use_id) == (
        session.id, stream.run_id, use.id)
    assert request.decision is None and request.by is None
    assert request.expires_at > request.created_at
    assert approve.asked == [request]  # the callback got the request the stream announced
    resolved = next(e for e in events if isinstance(e, PermissionResolved))
    assert resolved == PermissionResolved(request_id=request.id, decision="allow", by="user")
    sh_result = next(i for i, e in enumerate(events)
                     if isinstance(e, ToolResultEvent) and e.tool_name == "sh")
    assert kinds.index("permission_request") < kinds.index("permission_resolved") < sh_result
    assert events[sh_result].content == "ran git status"
    assert wingspan.wire.unstructure(event)["request"]["subject"] == "git status"


async def _collect(stream: Any) -> list[Any]:
    return [event async for event in stream]


async def test_an_allowed_call_and_a_denied_call_send_no_permission_event() -> None:
    s = setup([GIT, RM], permissions=[Rule(tool="sh", match="rm *", action="deny")])
    async with s.session().stream("go") as stream:
        events = await asyncio.wait_for(_collect(stream), WAIT)
    assert not [e for e in events if e.type.startswith("permission_")]
    assert s.shell.ran == ["git status"]


# --- nobody can answer: fail fast ------------------------------------------------------------


async def test_an_ask_nobody_can_answer_fails_the_run_at_once() -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session()
    with pytest.raises(RunFailed) as failed:
        await run(session)
    assert failed.value.error.code == "permission_required"
    assert "sh" in failed.value.error.message and "approve=" in failed.value.error.message
    assert s.shell.ran == []
    wingspan.check_history(list(session.history))  # the next run is accepted


async def test_the_default_ask_fails_fast_in_a_stream_too() -> None:
    s = setup([NOTE], settings={"default": "ask"})

    async def drain() -> list[Any]:
        async with s.session().stream("go") as stream:
            return [event async for event in stream]

    with pytest.raises(RunFailed) as failed:
        await asyncio.wait_for(drain(), WAIT)
    assert failed.value.error.code == "permission_required"
    assert s.notes.ran == []


async def test_a_stored_run_without_start_or_callback_fails_fast_and_frees_the_session(
        store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    with pytest.raises(RunFailed) as failed:
        await run(session)
    assert failed.value.error.code == "permission_required"
    page = await store.list_runs(session.id)
    assert [run.status for run in page.items] == ["failed"]
    assert await store.list_permission_requests(session.id, pending_only=False) == []
    wingspan.check_history(await store.load_messages(session.id))
    result = await run(session, "again", approve=Person("allow"))  # not stuck
    assert result.tool_calls[0].output == "ran git status"


# --- runs waiting in a store -------------------------------------------------------------------


async def test_a_started_run_waits_in_the_store_until_answered(store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    [request] = await requested(handle)
    assert (await store.get_run(handle.id)).status == "waiting"
    [listed] = await store.list_permission_requests(session.id)
    assert listed == request
    assert (listed.subject, listed.status, listed.run_id) == ("git status", "pending", handle.id)
    assert s.shell.ran == []

    answered = await answer(store, request.id, "allow")
    assert (answered.status, answered.decision, answered.by) == ("allowed", "allow", "user")
    assert answered.resolved_at is not None
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert outputs(result) == [("ran git status", False)]
    assert result.response == "saw ok: ran git status"
    assert (await store.get_run(handle.id)).status == "completed"
    assert await store.list_permission_requests(session.id) == []
    assert await store.list_permission_requests(session.id, pending_only=False) == [answered]

    with pytest.raises(ConflictError):
        await answer(store, request.id, "deny")
    with pytest.raises(NotFoundError):
        await answer(store, "01NOSUCHREQUEST0000000000", "allow")
    with pytest.raises(ConfigError):
        await answer(store, request.id, "maybe")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.list_permission_requests("01NOSUCHSESSION0000000000")

    events = [entry.event for entry in await logged(handle)]
    kinds = [e.type for e in events]
    assert kinds.index("permission_request") < kinds.index("permission_resolved") < \
        kinds.index("tool_result")
    assert PermissionResolved(request_id=request.id, decision="allow", by="user") in events


async def test_a_deny_answered_in_the_store_reaches_the_model_with_its_message(
        store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    handle = await s.session(store).start("go")
    [request] = await requested(handle)
    await answer(store, request.id, Answer(decision="deny", message="use the CI"))
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert s.shell.ran == []
    assert result.response == "saw error: permission denied for sh on 'git status': use the CI"
    stored = await store.get_permission_request(request.id)
    assert (stored.status, stored.decision, stored.message) == ("denied", "deny", "use the CI")


async def test_allow_always_answered_in_the_store_covers_the_rest_of_the_run(
        store: Store) -> None:
    s = setup([GIT], [GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    [request] = await requested(handle)
    await answer(store, request.id, "allow_always")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert s.shell.ran == ["git status", "git status"]
    assert len(await store.list_permission_requests(session.id, pending_only=False)) == 1
    assert not any(call.is_error for call in result.tool_calls)
    second = await session.start("again")
    assert (await asyncio.wait_for(second.result(), WAIT)).tool_calls[0].output == \
        "ran git status"


async def test_a_started_run_with_a_callback_does_not_wait_in_the_store(store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    approve = Person("allow", is_async=True)
    handle = await session.start("go", approve=approve)
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert approve.subjects == ["git status"] and s.shell.ran == ["git status"]
    [stored] = await store.list_permission_requests(session.id, pending_only=False)
    assert (stored.status, stored.by, stored.id) == ("allowed", "user", approve.asked[0].id)
    assert result.tool_calls[0].output == "ran git status"


async def test_an_unanswered_request_is_denied_by_timeout_and_the_run_completes(
        store: Store) -> None:
    s = setup([GIT], settings={"ask_timeout": 0.2}, permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert s.shell.ran == []
    assert result.response == ("saw error: permission denied for sh on 'git status': nobody "
                               "answered in time")
    [stored] = await store.list_permission_requests(session.id, pending_only=False)
    assert (stored.status, stored.decision, stored.by) == ("denied", "deny", "timeout")
    assert (await store.get_run(handle.id)).status == "completed"
    events = [entry.event for entry in await logged(handle)]
    assert PermissionResolved(request_id=stored.id, decision="deny", by="timeout") in events
    with pytest.raises(ConflictError):
        await answer(store, stored.id, "allow")  # too late


async def test_a_callback_that_never_answers_is_denied_by_timeout() -> None:
    s = setup([GIT], settings={"ask_timeout": 0.2, "default": "ask"})
    never = asyncio.Event()

    async def approve(request: PermissionRequest) -> str:
        await never.wait()
        return "allow"

    async with s.session().stream("go", approve=approve) as stream:
        events = await asyncio.wait_for(_collect(stream), WAIT)
    [resolved] = [e for e in events if isinstance(e, PermissionResolved)]
    assert (resolved.decision, resolved.by) == ("deny", "timeout")
    assert s.shell.ran == []
    assert events[-1].response.endswith("nobody answered in time")


async def test_aborting_a_waiting_run_denies_its_request_by_abort(store: Store) -> None:
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    [request] = await requested(handle)
    await asyncio.wait_for(handle.abort(), WAIT)
    with pytest.raises(RunFailed) as failed:
        await asyncio.wait_for(handle.result(), WAIT)
    assert failed.value.error.code == "aborted"
    assert (await store.get_run(handle.id)).status == "aborted"
    stored = await store.get_permission_request(request.id)
    assert (stored.status, stored.decision, stored.by) == ("denied", "deny", "abort")
    assert await store.list_permission_requests(session.id) == []
    assert s.shell.ran == []
    with pytest.raises(ConflictError):
        await answer(store, request.id, "allow")
    wingspan.check_history(await store.load_messages(session.id))
    result = await run(session, "again", approve=Person("allow"))  # the session goes on
    assert result.tool_calls[0].output == "ran git status"


async def test_calls_of_one_turn_wait_independently_and_keep_their_order(store: Store) -> None:
    s = setup([sh("first"), sh("second"), NOTE], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    one, two = await requested(handle, 2)
    assert {one.subject, two.subject} == {"first", "second"}
    by_subject = {one.subject: one, two.subject: two}
    await answer(store, by_subject["second"].id, Answer(decision="deny", message="not 2"))
    # the other request still waits, and so does the run
    [pending] = await store.list_permission_requests(session.id)
    assert pending.id == by_subject["first"].id
    assert (await store.get_run(handle.id)).status == "waiting"
    await answer(store, by_subject["first"].id, "allow")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert s.shell.ran == ["first"] and s.notes.ran == ["hello"]
    assert outputs(result) == [
        ("ran first", False),
        ("permission denied for sh on 'second': not 2", True),
        ("noted hello", False),
    ]
    [results] = [m for m in await store.load_messages(session.id)
                 if any(isinstance(b, ToolResultBlock) for b in m.content)]
    calls = [b.id for m in await store.load_messages(session.id) for b in m.content
             if getattr(b, "type", None) == "tool_use"]
    assert [b.tool_use_id for b in results.content] == calls
    assert result.response == ("saw ok: ran first | error: permission denied for sh on "
                               "'second': not 2 | ok: noted hello")


async def test_an_allow_always_answer_also_allows_the_waiting_calls_its_grant_covers(
        store: Store) -> None:
    s = setup([sh("git status"), sh("git status"), sh("rm x")],
              permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    asked = await requested(handle, 3)
    first, second = [r for r in asked if r.subject == "git status"]
    [third] = [r for r in asked if r.subject == "rm x"]
    await answer(store, first.id, Answer(decision="allow_always", pattern="git *"))
    covered = await store.get_permission_request(second.id)
    assert covered.status == "allowed" and covered.by == "rule"
    assert [r.id for r in await store.list_permission_requests(session.id)] == [third.id]
    await answer(store, third.id, "deny")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert s.shell.ran == ["git status", "git status"]
    assert [is_error for _, is_error in outputs(result)] == [False, False, True]


async def test_callbacks_of_one_turn_are_asked_concurrently() -> None:
    """Each call's callback runs while the other's waits: the second answered first."""
    s = setup([sh("first"), sh("second")], permissions=[Rule(tool="sh", action="ask")])
    second_answered = asyncio.Event()
    answered: list[str] = []

    async def approve(request: PermissionRequest) -> str:
        if request.subject == "first":  # answered once the second is
            await asyncio.wait_for(second_answered.wait(), WAIT)
        answered.append(request.subject)
        if request.subject == "second":
            second_answered.set()
        return "allow"

    result = await run(s.session(), approve=approve)
    assert answered == ["second", "first"]
    assert [call.output for call in result.tool_calls] == ["ran first", "ran second"]
    assert s.shell.ran == ["second", "first"]  # each ran as soon as it was allowed


# --- subjects of the built-in tools and of @wingspan.tool --------------------------------------


async def test_the_subject_of_a_bash_call_is_its_command(tmp_path: Path) -> None:
    runtime = runtime_with({"default": "deny"})
    provider = scripted(model([{"name": "bash", "input": {"command": "echo hi"}}]),
                        runtime=runtime)
    agent = Agent(name="b", provider=provider, tools=runtime.get_tools(["bash"]),
                  permissions=[Rule(tool="bash", match="echo *", action="allow")])
    result = await run(Session(agent=agent, work_dir=tmp_path, runtime=runtime))
    assert not result.tool_calls[0].is_error, result.tool_calls[0].output


def test_wingspan_tool_takes_a_subject() -> None:
    def fetch(url: str) -> str:
        """Fetch.

        :param url: where
        """
        return url

    made = wingspan.tool(subject=lambda input, context: input["url"])(fetch)
    assert subject_of(made, {"url": "https://example.com"}, None) == "https://example.com"


# --- a waiting run outlives its process (SQLite) ------------------------------------------------


async def waiting_request(handle: RunHandle) -> PermissionRequest:
    """The request the run waits on, from its event log."""
    async def first() -> PermissionRequest:
        async for entry in handle.events():
            if isinstance(entry.event, PermissionRequested):
                return entry.event.request
        raise AssertionError("the run ended without asking")

    return await asyncio.wait_for(first(), WAIT)


async def suspended_run(tmp_path: Path) -> tuple[Setup, str, str, str, PermissionRequest]:
    """A run that asked, suspended as its process stops (its store closed): ``(setup, url,
    session id, run id, request)``."""
    url = f"sqlite:///{tmp_path}/w.db"
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    store = await wingspan.open_store(url)
    session = s.session(store)
    handle = await session.start("go")
    request = await waiting_request(handle)
    assert await handle.suspend()  # what a server's graceful stop does to a waiting run
    assert (await store.get_run(handle.id)).status == "waiting"
    await store.close()  # its claim is parked, not recovered
    return s, url, session.id, handle.id, request


async def test_a_suspended_run_is_adopted_and_goes_on_under_its_id(tmp_path: Path) -> None:
    s, url, session_id, run_id, request = await suspended_run(tmp_path)
    store = await wingspan.open_store(url)
    try:
        assert (await store.get_run(run_id)).status == "waiting"
        assert [r.id for r in await store.list_permission_requests(session_id)] == [request.id]
        await answer(store, request.id, "allow")
        adopted = await store.adopt_run(run_id)
        assert adopted is not None and adopted.id == run_id
        assert await store.adopt_run(run_id) is None  # held by this process now
        session = Session.from_record(await store.get_session(session_id), agent=s.agent,
                                      store=store, runtime=s.runtime)
        handle = await session.reenter(adopted)
        result = await asyncio.wait_for(handle.result(), WAIT)
        assert s.shell.ran == ["git status"] and result.response == "saw ok: ran git status"
        assert result.run_id == run_id
        assert (await store.get_run(run_id)).status == "completed"
        kinds = [e.event.type for e in await store.read_events(session_id, run_id=run_id)]
        assert kinds.count("permission_request") == 1 and kinds.count("run_started") == 1
        assert kinds.index("permission_request") < kinds.index("permission_resolved") \
            < kinds.index("tool_result") < kinds.index("done")
        assert await store.adopt_run(run_id) is None  # finished
    finally:
        await store.close()


async def test_aborting_a_parked_run_ends_it_at_once_and_frees_its_session(
        tmp_path: Path) -> None:
    _, url, session_id, run_id, request = await suspended_run(tmp_path)
    store = await wingspan.open_store(url)
    try:
        aborted = await store.abort_run(run_id)
        assert aborted.status == "aborted"
        stored = await store.get_permission_request(request.id)
        assert stored.status == "denied" and stored.by == "abort"
        history = await store.load_messages(session_id)
        assert wingspan.check_history(history) == []  # the asked call got its error result
        following = setup([], permissions=[Rule(tool="sh", action="ask")])
        session = Session.from_record(await store.get_session(session_id),
                                      agent=following.agent, store=store,
                                      runtime=following.runtime)
        result = await asyncio.wait_for(session.run("again"), WAIT)
        assert result.steps == 1 and not result.tool_calls
    finally:
        await store.close()


async def test_a_run_cannot_be_suspended_in_a_store_of_one_process() -> None:
    store = await wingspan.open_store("memory://")
    s = setup([GIT], permissions=[Rule(tool="sh", action="ask")])
    session = s.session(store)
    handle = await session.start("go")
    request = await waiting_request(handle)
    assert not await handle.suspend()  # its run would be lost with the process
    assert await store.adopt_run(handle.id) is None
    await answer(store, request.id, "allow")
    assert (await asyncio.wait_for(handle.result(), WAIT)).response == "saw ok: ran git status"
    await store.close()


def test_an_allow_always_answer_on_an_empty_subject_grants_nothing() -> None:
    request = PermissionRequest(
        id="r", session_id="s", run_id="u", tool_use_id="t", tool_name="sh", input={},
        subject="", created_at=wingspan.utc_now(), expires_at=wingspan.utc_now())
    assert grant_for(request, Answer(decision="allow_always")) is None
    assert grant_for(request, Answer(decision="allow_always", pattern="x*")) == Rule(
        tool="sh", match="x*", action="allow")
    with pytest.raises(ConfigError, match="pattern must be a non-empty glob"):
        parse_answer(Answer(decision="allow_always", pattern=""))


# --- what an allowed call costs: the guard ---------------------------------------------------

GLOBS = ["*", "git *", "git push*", "*.env", "*secret*", "ls", "a*b", "[gl]*", '{"tag":*',
         '*"text":"x"*', "*[!a]", "?s"]
RULES = st.lists(st.builds(
    Rule, tool=st.sampled_from(["*", "sh", "s?", "note", "[sn]*", "other"]),
    match=st.sampled_from(GLOBS), action=st.sampled_from(["allow", "ask", "deny"])),
    max_size=8).map(tuple)
WORDS = st.sampled_from(["git", "push", "ls", "a", "b", ".env", "secret", "x", " ", "*"])
TEXTS = st.lists(WORDS, max_size=4).map("".join)


@settings(max_examples=400)
@given(rules=RULES, default=st.sampled_from(["allow", "ask", "deny"]), data=st.data())
def test_the_guard_wraps_exactly_the_calls_the_rules_do_not_allow(
    rules: tuple[Rule, ...], default: Any, data: st.DataObject
) -> None:
    guard = guard_of(rules, default, None)
    for _ in range(4):  # several calls of each tool: the guard is made once a tool
        tool, input = data.draw(st.one_of(
            st.builds(lambda c: (Shell(), {"command": c}), TEXTS),
            st.builds(lambda t, g: (Notes(), {"text": t, "tag": g}), TEXTS, TEXTS)))
        action = decide(rules, tool.name, subject_of(tool, input, None), default)
        assert guard(tool, input) is (action != "allow"), (tool.name, input, action)


def test_a_guard_of_a_subject_that_cannot_be_computed_raises_as_subject_of_does() -> None:
    class Broken(Shell):
        def subject(self, input: Mapping[str, Any], context: ToolContext | None) -> str:
            raise KeyError("command")

    guard = guard_of((Rule(tool="sh", match="git *", action="allow"),), "ask", None)
    with pytest.raises(wingspan.ToolError, match="could not be computed"):
        guard(Broken(), {"command": "git status"})


@pytest.mark.parametrize(("settings", "permissions", "wrapped"), [
    ({}, (), "no wrapper"),
    ({"default": "allow"}, (), "no wrapper"),
    ({"default": "ask"}, (), "every call"),
    ({"default": "deny"}, (), "every call"),
    ({}, [{"tool": "sh", "match": "rm *", "action": "deny"}], "guarded"),
    ({"rules": [{"tool": "sh", "action": "ask"}]},
     [{"tool": "sh", "match": "ls", "action": "allow"}], "guarded"),
])
def test_the_plugin_wraps_only_the_calls_it_may_refuse_or_ask_about(
    settings: Mapping[str, Any], permissions: Any, wrapped: str
) -> None:
    s = setup(settings=settings, permissions=permissions)
    session = s.session()
    calls = s.runtime.tool_calls(s.agent, session, "run")
    if wrapped == "no wrapper":
        assert calls is None  # the tools are called directly: no context, no wrapper
        return
    assert calls is not None and calls.every is not None
    shell = calls.caller(s.shell, {"command": "ls"})
    assert (shell is None) is (wrapped == "guarded")  # an allowed call runs unwrapped
    assert calls.caller(s.shell, {"command": "rm -rf x"}) is calls.every


async def test_a_guarded_run_asks_and_refuses_as_before_and_runs_the_allowed_calls() -> None:
    s = setup([sh("ls")], [sh("rm -rf /")], [sh("git push")], settings={"rules": [
        {"tool": "sh", "action": "allow"},
        {"tool": "sh", "match": "rm *", "action": "deny"},
        {"tool": "sh", "match": "git push*", "action": "ask"}]})
    approve = Person({"git push": "allow"})
    result = await run(s.session(), approve=approve)
    assert approve.subjects == ["git push"]
    assert s.shell.ran == ["ls", "git push"]
    assert [call.is_error for call in result.tool_calls] == [False, True, False]
