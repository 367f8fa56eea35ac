"""The wire format: round-trips, the documented JSON shapes, and strictness."""

from __future__ import annotations

import copy
import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wingspan
from wingspan import store, wire
from wingspan import types as t

from .. import strategies as s

ALL_TYPES = list(s.WIRE_TYPES)


def _json_round_trip(data: Any) -> Any:
    return json.loads(json.dumps(data))


# --- round-trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_through_json(cls: type, data: st.DataObject) -> None:
    value = data.draw(s.WIRE_TYPES[cls])
    assert wire.structure(_json_round_trip(wire.unstructure(value)), cls) == value
    assert wire.loads(wire.dumps(value), cls) == value


@settings(max_examples=150)
@given(s.stream_events)
def test_stream_events_round_trip_through_the_union(event: t.StreamEvent) -> None:
    data = _json_round_trip(wire.unstructure(event))
    assert data["type"] == type(event).type
    back = wire.structure(data, t.StreamEvent)
    assert type(back) is type(event)
    assert back == event


@settings(max_examples=60)
@given(s.content_blocks)
def test_content_blocks_round_trip_through_the_union(block: t.ContentBlock) -> None:
    data = _json_round_trip(wire.unstructure(block))
    assert data["type"] == type(block).type
    back = wire.structure(data, t.ContentBlock)
    assert type(back) is type(block)
    assert back == block


@settings(max_examples=30)
@given(s.block_starts)
def test_content_block_heads_round_trip_through_their_union(head: Any) -> None:
    data = _json_round_trip(wire.unstructure(head))
    assert wire.structure(data, t.TextStart | t.ToolUseStart) == head


def test_timestamps_are_rfc3339_utc_milliseconds() -> None:
    record = store.SessionRecord(
        id="01J", created_at=datetime.fromisoformat("2026-11-24T15:11:02.123456+02:00")
    )
    data = wire.unstructure(record)
    assert data["created_at"] == "2026-11-24T13:11:02.123Z"
    back = wire.structure(data, store.SessionRecord)
    assert back.created_at == datetime.fromisoformat("2026-11-24T13:11:02.123+00:00")


def test_a_timestamp_without_time_zone_is_rejected() -> None:
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure({"id": "x", "created_at": "2026-11-24T13:11:02"}, store.SessionRecord)
    assert [field for field, _ in info.value.details] == ["$.created_at"]


def test_credential_round_trips_but_never_shows_its_key_in_repr() -> None:
    credential = store.Credential(key="sk-secret")
    assert wire.unstructure(credential) == {"type": "api_key", "key": "sk-secret",
                                            "base_url": None}
    assert "sk-secret" not in repr(credential)


# --- the documented shapes --------------------------------------------------------------------

#: HTTP_API.md, "Streaming answer": each event and its exact data.
DOCUMENTED_EVENTS = [
    (t.MessageStart(step=1), {"type": "message_start", "step": 1}),
    (
        t.ContentBlockStart(index=0, content_block=t.TextStart()),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
    ),
    (
        t.ContentBlockStart(index=1, content_block=t.ToolUseStart(id="toolu_01", name="bash")),
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": "bash"},
        },
    ),
    (t.TextDelta(text="Hello ", index=0), {"type": "text_delta", "text": "Hello ", "index": 0}),
    (
        t.InputJsonDelta(partial_json='{"comm', index=1),
        {"type": "input_json_delta", "partial_json": '{"comm', "index": 1},
    ),
    (t.ContentBlockStop(index=0), {"type": "content_block_stop", "index": 0}),
    (
        t.MessageDelta(stop_reason="tool_use", usage=t.Usage(input_tokens=12, output_tokens=34)),
        {
            "type": "message_delta",
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 34},
        },
    ),
    (t.MessageStop(), {"type": "message_stop"}),
    (t.Ping(), {"type": "ping"}),
    (
        t.ErrorEvent(error=t.ErrorInfo(code="provider_error", message="overloaded")),
        {"type": "error", "error": {"code": "provider_error", "message": "overloaded"}},
    ),
    (
        t.Done(
            usage=t.Usage(input_tokens=120, output_tokens=240),
            steps=2,
            response="Here are the files...",
            tool_calls=(
                t.ToolCall(
                    id="toolu_01",
                    tool_name="bash",
                    input={"command": "ls"},
                    output="a.txt\nb.txt",
                ),
            ),
            stop_reason="end_turn",
            run_id="01JDQ3",
        ),
        {
            "type": "done",
            "usage": {"input_tokens": 120, "output_tokens": 240},
            "steps": 2,
            "response": "Here are the files...",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "tool_name": "bash",
                    "input": {"command": "ls"},
                    "output": "a.txt\nb.txt",
                    "is_error": False,
                }
            ],
            "stop_reason": "end_turn",
            "run_id": "01JDQ3",
        },
    ),
    (
        t.ToolResultEvent(tool_use_id="toolu_01", tool_name="bash", content="a.txt"),
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01",
            "tool_name": "bash",
            "content": "a.txt",
            "is_error": False,
        },
    ),
]


@pytest.mark.parametrize(
    ("event", "shape"), DOCUMENTED_EVENTS, ids=[shape["type"] for _, shape in DOCUMENTED_EVENTS]
)
def test_events_have_the_documented_json_shape(event: Any, shape: dict[str, Any]) -> None:
    assert wire.unstructure(event) == shape
    assert wire.structure(shape, t.StreamEvent) == event


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (t.TextDelta(text="Hello ", index=0), '{"type":"text_delta","text":"Hello ","index":0}'),
        (t.TextDelta(text="world", index=0), '{"type":"text_delta","text":"world","index":0}'),
        (t.MessageStop(), '{"type":"message_stop"}'),
    ],
)
def test_events_serialise_exactly_as_the_seed_shows(event: Any, line: str) -> None:
    """The seed's ``data:`` lines, byte for byte (key order included)."""
    assert wire.dumps(event) == line
    assert wire.loads(line, t.StreamEvent) == event


def test_done_carries_everything_the_seed_shows() -> None:
    seed = {"usage": {"input_tokens": 120, "output_tokens": 240}, "steps": 1}
    done = t.Done(
        usage=t.Usage(input_tokens=120, output_tokens=240),
        steps=1,
        response="Here are the files in the directory...",
        tool_calls=(),
        stop_reason="end_turn",
    )
    data = json.loads(wire.dumps(done))
    assert data.items() >= seed.items()
    assert next(iter(data)) == "type"


def test_result_is_the_blocking_answer_of_http_api() -> None:
    answer = {
        "response": "Here are the files...",
        "tool_calls": [
            {
                "id": "toolu_01",
                "tool_name": "bash",
                "input": {"command": "ls"},
                "output": "a.txt\nb.txt",
                "is_error": False,
            }
        ],
        "usage": {"input_tokens": 120, "output_tokens": 240},
        "steps": 2,
        "stop_reason": "end_turn",
        "run_id": "01...",
    }
    result = wire.structure(answer, t.Result)
    assert result.tool_calls[0].input == {"command": "ls"}
    assert wire.unstructure(result) == answer


def test_message_json_shape() -> None:
    message = t.Message(
        role="assistant",
        content=(
            t.TextBlock(text="Let me look."),
            t.ToolUseBlock(id="toolu_01", name="bash", input={"command": "ls"}),
        ),
    )
    assert wire.unstructure(message) == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}},
        ],
    }
    results = t.Message(
        role="user", content=(t.ToolResultBlock(tool_use_id="toolu_01", content="a"),)
    )
    assert wire.unstructure(results)["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a", "is_error": False}
    ]


def test_defaults_fill_absent_optional_fields() -> None:
    assert wire.structure({"type": "message_delta", "stop_reason": "end_turn"}, t.StreamEvent) == (
        t.MessageDelta(stop_reason="end_turn", usage=t.Usage())
    )
    assert wire.structure({"messages": []}, t.InferenceRequest) == t.InferenceRequest(messages=())
    assert wire.structure({"type": "ping"}, t.StreamEvent) == t.Ping()


# --- strictness: hand-written cases -----------------------------------------------------------


def _fields(exc: pytest.ExceptionInfo[wingspan.ValidationError]) -> list[str]:
    return [field for field, _ in exc.value.details]


@pytest.mark.parametrize(
    ("data", "cls", "field", "reason"),
    [
        # 1 never becomes "1", and the reverse
        ({"type": "text", "text": 1}, t.TextBlock, "$.text", "expected a string"),
        ({"type": "text_delta", "text": "a", "index": "1"}, t.TextDelta, "$.index", "integer"),
        # true is not an integer, nor 1 a boolean
        ({"type": "text_delta", "text": "a", "index": True}, t.TextDelta, "$.index", "integer"),
        (
            {"type": "tool_result", "tool_use_id": "x", "content": "", "is_error": 1},
            t.ToolResultBlock,
            "$.is_error",
            "boolean",
        ),
        # fractions are not integers (1.0 is: see test_a_whole_number_is_an_integer...)
        ({"type": "text_delta", "text": "a", "index": 1.25}, t.TextDelta, "$.index", "integer"),
        ({"input_tokens": 1.5}, t.Usage, "$.input_tokens", "integer"),
        # strings are not arrays, arrays not objects
        ({"role": "user", "content": "hi"}, t.Message, "$.content", "array"),
        (
            {"type": "tool_use", "id": "a", "name": "b", "input": []},
            t.ToolUseBlock,
            "$.input",
            "object",
        ),
        ({"messages": [], "options": None}, t.InferenceRequest, "$.options", "object"),
        # mappings come from objects only (not Python's AttributeError about .items())
        ({"messages": [], "options": []}, t.InferenceRequest, "$.options", "expected an object"),
        (
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b",
                                              "input": "x"}]},
            t.Message, "$.content[0].input", "expected an object",
        ),
        # unknown keys
        ({"role": "user", "content": [], "name": "bob"}, t.Message, "$.name", "unknown field"),
        # missing fields
        ({"type": "text_delta", "text": "a"}, t.TextDelta, "$.index", "missing"),
        ({"role": "user"}, t.Message, "$.content", "missing"),
        # wrong tags
        ({"type": "ping"}, t.TextDelta, "$", '"type" must be "text_delta"'),
        ({"type": "nope"}, t.StreamEvent, "$", '"type" must be one of'),
        ({"text": "tag missing"}, t.ContentBlock, "$", '"type" must be one of'),
        # literals
        ({"role": "system", "content": []}, t.Message, "$.role", "must be one of"),
        ({"id": "r", "session_id": "s", "status": "done"}, store.RunRecord, "$.status", "one of"),
        # the top level is an object
        ([], t.Message, "$", "expected an object"),
        ("ping", t.StreamEvent, "$", "expected an object"),
        (None, t.Usage, "$", "expected an object"),
    ],
)
def test_invalid_data_is_rejected_naming_the_field(
    data: Any, cls: Any, field: str, reason: str
) -> None:
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(data, cls)
    assert info.value.details, "a ValidationError must say what failed"
    matching = [r for f, r in info.value.details if f == field]
    assert matching, info.value.details
    assert any(reason in r for r in matching), info.value.details
    assert field in str(info.value)


def test_nested_failures_name_the_full_path() -> None:
    data = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "1", "name": "n", "input": {}, "extra": 0},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": 5}]},
        ],
        "tools": [{"name": "n", "description": "d", "input_schema": "nope"}],
    }
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(data, t.InferenceRequest)
    assert set(_fields(info)) == {
        "$.messages[1].content[1].extra",
        "$.messages[2].content[0].text",
        "$.tools[0].input_schema",
    }


def test_every_failure_is_reported_not_just_the_first() -> None:
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(
            {
                "type": "done",
                "usage": {"input_tokens": "1"},
                "steps": "2",
                "response": 3,
                "tool_calls": {},
                "stop_reason": None,
            },
            t.StreamEvent,
        )
    assert set(_fields(info)) == {
        "$.usage.input_tokens",
        "$.steps",
        "$.response",
        "$.tool_calls",
        "$.stop_reason",
    }


def test_loads_rejects_malformed_json() -> None:
    with pytest.raises(wingspan.ValidationError) as info:
        wire.loads('{"type": "ping"', t.StreamEvent)
    assert _fields(info) == ["$"]


def test_unknown_content_block_head_is_rejected() -> None:
    data = {"type": "content_block_start", "index": 0, "content_block": {"type": "image"}}
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(data, t.StreamEvent)
    assert _fields(info) == ["$.content_block"]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ({"type": "image"}, {("$.content_block", 'must be one of "text", "tool_use"')}),
        ("text", {("$.content_block", "expected an object, got a string")}),
        (
            {"type": "tool_use"},
            {
                ("$.content_block.id", "required field missing"),
                ("$.content_block.name", "required field missing"),
            },
        ),
        (
            {"type": "text", "id": "x", "name": "y"},
            {("$.content_block.id", "unknown field"), ("$.content_block.name", "unknown field")},
        ),
    ],
    ids=["unknown-tag", "not-an-object", "tool_use-without-id", "text-with-extras"],
)
def test_content_block_heads_are_dispatched_on_their_tag(
    head: Any, expected: set[tuple[str, str]]
) -> None:
    data = {"type": "content_block_start", "index": 0, "content_block": head}
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(data, t.StreamEvent)
    found = set(info.value.details)
    for field, reason in expected:
        assert any(f == field and reason in r for f, r in found), found
    assert len(found) == len(expected), found


# --- strictness: any one wrong-typed field is rejected ----------------------------------------

Path = tuple[str | int, ...]
#: (path, the JSON kinds allowed there, whether it is a "type" tag)
Position = tuple[Path, set[str], bool]
KINDS = ("null", "boolean", "integer", "float", "string", "array", "object")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _tag_of(cls: type) -> str | None:
    tag = getattr(cls, "type", None)
    if isinstance(tag, str) and "type" not in attrs.fields_dict(cls):
        return tag
    return None


def _allowed_kinds(tp: Any) -> set[str]:
    """The JSON kinds a value of type ``tp`` may have."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return set(KINDS)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_allowed_kinds(a) for a in args))
    if tp is type(None):
        return {"null"}
    if origin is typing.Literal:
        return {{str: "string", int: "integer", bool: "boolean"}[type(a)] for a in args}
    simple = {str: "string", int: "integer", bool: "boolean", datetime: "string"}
    if tp in simple:
        return {simple[tp]}
    if tp is float:
        return {"integer", "float"}
    if origin is tuple:
        return {"array"}
    if origin is Mapping or origin is dict or (isinstance(tp, type) and attrs.has(tp)):
        return {"object"}
    raise AssertionError(f"unexpected type in a wire class: {tp!r}")


def _positions(value: Any, tp: Any, path: Path, out: list[Position]) -> None:
    """Every place in ``value`` (JSON of type ``tp``) whose JSON kind is fixed by the type."""
    out.append((path, _allowed_kinds(tp), False))
    _descend(value, tp, path, out)


def _descend(value: Any, tp: Any, path: Path, out: list[Position]) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            _descend(value, members[0], path, out)
            return
        # A tagged union: follow the member the tag names.
        (cls,) = [m for m in members if _tag_of(m) == value["type"]]
        _descend(value, cls, path, out)
        return
    if origin is tuple:
        for i, item in enumerate(value):
            _positions(item, args[0], (*path, i), out)
        return
    if isinstance(tp, type) and attrs.has(tp):
        hints = _hints(tp)
        if _tag_of(tp) is not None and "type" in value:
            out.append(((*path, "type"), {"string"}, True))
        for field in attrs.fields(tp):
            if field.name in value:
                _positions(value[field.name], hints[field.name], (*path, field.name), out)


def _value_of_kind(kind: str) -> st.SearchStrategy[Any]:
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "integer": st.integers(),
        # a whole float is the integer it equals (JSON has one number type)
        "float": st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda number: not number.is_integer()),
        "string": st.text(max_size=5),
        "array": st.lists(s.json_scalars, max_size=2),
        "object": st.dictionaries(st.text(max_size=4), s.json_scalars, max_size=2),
    }[kind]


def _show(path: Path) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _replace(data: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    data = copy.deepcopy(data)
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return data


MUTATION_TARGETS: list[Any] = [*ALL_TYPES, t.StreamEvent, t.ContentBlock]


def _strategy_for(target: Any) -> st.SearchStrategy[Any]:
    if target == t.StreamEvent:
        return s.stream_events
    if target == t.ContentBlock:
        return s.content_blocks
    return s.WIRE_TYPES[target]


@pytest.mark.parametrize(
    "target", MUTATION_TARGETS, ids=lambda c: getattr(c, "__name__", None) or str(c)
)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_wrong_typed_field_is_always_rejected(target: Any, data: st.DataObject) -> None:
    value = data.draw(_strategy_for(target), label="valid value")
    valid = _json_round_trip(wire.unstructure(value))
    positions: list[Position] = []
    _positions(valid, target, (), positions)
    path, allowed, is_tag = data.draw(st.sampled_from(positions), label="position")
    kind = data.draw(st.sampled_from([k for k in KINDS if k not in allowed]), label="kind")
    wrong = data.draw(_value_of_kind(kind), label="wrong value")
    mutated = _replace(valid, path, wrong)

    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(mutated, target)
    # A wrong tag is reported at its object; anything else at the field itself.
    expected = _show(path[:-1] if is_tag else path)
    assert expected in _fields(info), info.value.details


@settings(max_examples=60)
@given(
    target=st.sampled_from(MUTATION_TARGETS),
    data=st.data(),
)
def test_an_unknown_key_anywhere_typed_is_rejected(target: Any, data: st.DataObject) -> None:
    value = data.draw(_strategy_for(target), label="valid value")
    valid = _json_round_trip(wire.unstructure(value))
    positions: list[Position] = []
    _positions(valid, target, (), positions)
    # Objects of attrs classes (not free JSON objects such as ``input``).
    objects = [
        path
        for path, allowed, _ in positions
        if allowed == {"object"} or allowed == {"object", "null"}
    ]
    objects = [p for p in objects if _is_class_object(valid, target, p)]
    path = data.draw(st.sampled_from(objects), label="object")
    key = data.draw(st.sampled_from(["extra", "Type", "_", "text2"]), label="key")
    target_object = valid
    for step in path:
        target_object = target_object[step]
    if key in target_object:
        return
    mutated = _replace(valid, (*path, key), 1)
    with pytest.raises(wingspan.ValidationError) as info:
        wire.structure(mutated, target)
    assert _show((*path, key)) in _fields(info), info.value.details


def _is_class_object(valid: Any, target: Any, path: Path) -> bool:
    """Whether the object at ``path`` is an attrs class's JSON (rather than free JSON)."""
    tp = target
    value = valid
    for step in path:
        tp = _resolve(value, tp)
        tp = typing.get_args(tp)[0] if isinstance(step, int) else _hints(tp)[step]
        value = value[step]
    if value is None:
        return False
    tp = _resolve(value, tp)
    return isinstance(tp, type) and attrs.has(tp)


def _resolve(value: Any, tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return members[0]
        return next(m for m in members if _tag_of(m) == value["type"])
    return tp


def test_mutation_walker_sees_nested_fields() -> None:
    """The property above is only as good as the positions it can pick."""
    request = t.InferenceRequest(
        messages=(
            t.Message(role="user", content=(t.ToolResultBlock(tool_use_id="a", content="b"),)),
        ),
        options={"temperature": 0.5},
    )
    positions: list[Position] = []
    _positions(_json_round_trip(wire.unstructure(request)), t.InferenceRequest, (), positions)
    found = {path: allowed for path, allowed, _ in positions}
    assert found[("messages", 0, "content", 0, "is_error")] == {"boolean"}
    assert found[("messages", 0, "content", 0, "type")] == {"string"}
    assert found[("instructions",)] == {"string", "null"}
    assert found[("options",)] == {"object"}
    assert ("options", "temperature") not in found


def _mutations(payload: Any) -> list[Any]:
    """Every payload made from ``payload`` by replacing one value (with a value of each JSON
    type), adding one key to an object, or dropping one key or item."""
    results: list[Any] = []

    def places(node: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        found = [path]
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            child = node[key]
            if isinstance(child, dict | list):
                found += places(child, (*path, key))
            else:
                found.append((*path, key))
        return found

    def at(root: Any, path: tuple[Any, ...]) -> Any:
        for key in path:
            root = root[key]
        return root

    for path in places(payload, ()):
        if not path:
            continue
        for value in (None, True, 1, 1.5, "x", [], {}, [1], {"type": "text"}):
            copied = copy.deepcopy(payload)
            at(copied, path[:-1])[path[-1]] = value
            results.append(copied)
        copied = copy.deepcopy(payload)
        parent = at(copied, path[:-1])
        del parent[path[-1]]
        results.append(copied)
        node = at(payload, path)
        if isinstance(node, dict):
            for key in ("x", "type", "text", "id", "is_error"):
                copied = copy.deepcopy(payload)
                at(copied, path)[key] = 1
                results.append(copied)
    return results


@settings(max_examples=40)
@given(message=s.messages)
def test_the_fast_message_path_is_exactly_as_strict_as_the_general_one(
    message: t.Message,
) -> None:
    """Messages are structured by a fast path (every store load goes through it, as
    ``wire.structure_messages``); given any one-place change of a valid payload, it must
    answer exactly as the general path does."""
    general = wire.make_converter()
    general.register_structure_hook(t.Message, wire._attrs_structure_factory(t.Message, general))
    payload = _json_round_trip(wire.unstructure(message))
    for candidate in [payload, *_mutations(payload)]:
        try:
            expected: Any = wire.structure(candidate, t.Message, general)
        except wingspan.ValidationError as exc:
            expected = exc.details
        try:
            got: Any = wire.structure(candidate, t.Message)
        except wingspan.ValidationError as exc:
            got = exc.details
        assert got == expected, candidate
        try:  # the direct decoder of a history's rows
            (decoded,) = wire.structure_messages([candidate])
            got = decoded
        except wingspan.ValidationError as exc:
            got = exc.details
        assert got == expected, candidate
        if not isinstance(got, list):
            assert repr(got) == repr(expected)


def test_message_content_may_be_given_as_a_string_or_a_list() -> None:
    assert t.Message(role="user", content="hi").content == (t.TextBlock(text="hi"),)
    block = t.TextBlock(text="a")
    assert t.Message(role="user", content=[block]).content == (block,)
    with pytest.raises(TypeError, match="tuple of blocks or a string"):
        t.Message(role="user", content=5)  # type: ignore[arg-type]


def test_a_whole_number_is_an_integer_however_it_is_written() -> None:
    # JSON has one number type, and JSON Schema counts 1.0 as an integer: so does the wire.
    usage = wire.structure({"input_tokens": 3.0, "output_tokens": 4}, t.Usage)
    assert usage == t.Usage(input_tokens=3, output_tokens=4)
    assert type(usage.input_tokens) is int
    for bad in (3.5, True, "3", float("inf"), float("nan")):
        with pytest.raises(wingspan.ValidationError, match="input_tokens"):
            wire.structure({"input_tokens": bad, "output_tokens": 4}, t.Usage)


@attrs.frozen(kw_only=True)
class _Tally:
    by_model: Mapping[str, t.Usage]


@pytest.mark.parametrize(("value", "field", "reason"), [
    ([], "$.by_model", "expected an object, got an array"),
    ("x", "$.by_model", "expected an object, got a string"),
    ({"m": []}, "$.by_model['m']", "expected an object, got an array"),
])
def test_a_mapping_comes_from_an_object_only(value: Any, field: str, reason: str) -> None:
    with pytest.raises(wingspan.ValidationError) as caught:
        wire.structure({"by_model": value}, _Tally, wire.make_converter())
    assert caught.value.details == ((field, reason),)
    tally = wire.structure({"by_model": {"m": {"input_tokens": 1, "output_tokens": 2}}}, _Tally,
                           wire.make_converter())
    assert tally.by_model == {"m": t.Usage(input_tokens=1, output_tokens=2)}


# --- compact JSON -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(value=JSON_VALUES, sort_keys=st.booleans())
def test_json_encoder_writes_what_json_dumps_writes(value: Any, sort_keys: bool) -> None:
    # Its C encoder is built once; the text is json.dumps's, NaN and lone surrogates included.
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    assert wire.json_encoder(sort_keys=sort_keys)(value) == expected


def test_json_encoder_uses_its_default_and_refuses_what_it_cannot_write() -> None:
    encode = wire.json_encoder(sort_keys=True, default=str)
    assert encode({"b": datetime(2026, 1, 2), "a": [1]}) == '{"a":[1],"b":"2026-01-02 00:00:00"}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        wire.compact_json({"x": object()})
    with pytest.raises(TypeError, match="keys must be str"):
        wire.compact_json({(1, 2): 3})
