"""``@wingspan.tool``: schemas from type hints, docstrings, calling, and failures as results."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import attrs
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wingspan
from wingspan import ConfigError, ToolContext, ToolError, ToolOutcome
from wingspan.tools import check_input, run_tool

if TYPE_CHECKING:
    from collections.abc import Callable

CONTEXT = ToolContext(work_dir=None, session_id="s1", run_id="r1", tool_use_id="toolu_1")
TIMEOUT = 5


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    """A point on the plane.

    :ivar x: across.
    :ivar y: up.
    """

    x: int
    y: int = 0


@attrs.frozen
class Shape:
    """A named polygon."""

    name: str
    corners: tuple[Point, ...]
    color: Color = Color.RED
    origin: Point | None = None


@attrs.frozen
class Secret:
    """Holds a private attribute, set through its alias."""

    _value: int


def _property(hint: Any, **default: Any) -> dict[str, Any]:
    """The schema ``@tool`` gives a parameter ``x`` annotated ``hint``."""

    def f(x):  # type: ignore[no-untyped-def]
        """Do it."""

    f.__annotations__ = {"x": hint}
    if default:
        f.__defaults__ = (default["default"],)
    schema = wingspan.tool(f).input_schema
    jsonschema.Draft202012Validator.check_schema(schema)
    return dict(schema["properties"]["x"])


async def _call(tool: wingspan.FunctionTool, input: dict[str, Any]) -> ToolOutcome:
    assert check_input(tool, input) is None, check_input(tool, input)
    return await asyncio.wait_for(run_tool(tool, input, CONTEXT), TIMEOUT)


# --- sync and async functions -----------------------------------------------------------------


@wingspan.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@wingspan.tool
async def add_later(a: int, b: int) -> int:
    """Add two integers, asynchronously."""
    await asyncio.sleep(0)
    return a + b


async def test_sync_and_async_functions_become_tools() -> None:
    for tool in (add, add_later):
        assert isinstance(tool, wingspan.Tool)
        assert tool.description.startswith("Add two integers")
        assert tool.input_schema == {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        }
        assert await _call(tool, {"a": 2, "b": 3}) == ToolOutcome(content="5")
    assert add.name == "add"
    assert add_later.name == "add_later"


async def test_the_decorated_function_stays_callable() -> None:
    assert add(2, 3) == 5
    assert add(a=2, b=3) == 5
    assert await add_later(2, 3) == 5


async def test_sync_functions_run_off_the_event_loop_thread() -> None:
    @wingspan.tool
    def where() -> int:
        """Say which thread runs this."""
        return threading.get_ident()

    outcome = await _call(where, {})
    assert int(outcome.content) != threading.get_ident()


async def test_a_sync_function_that_says_it_does_not_block_runs_inline() -> None:
    @wingspan.tool(blocking=False)
    def where() -> int:
        """Say which thread runs this."""
        return threading.get_ident()

    assert where.blocking is False
    outcome = await run_tool(where, {}, CONTEXT)
    assert int(outcome.content) == threading.get_ident()


@pytest.mark.parametrize("value", ["no", 0, None])
def test_blocking_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigError, match="blocking"):
        wingspan.tool(blocking=value)


def test_name_and_description_can_be_given() -> None:
    @wingspan.tool(name="plus-one", description="Adds one.")
    def increment(n: int) -> int:
        return n + 1

    assert increment.name == "plus-one"
    assert increment.description == "Adds one."
    assert increment(1) == 2


# --- schemas from type hints ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (Any, {}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (str | int, {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Color, {"enum": ["red", "blue"]}),
        (Level, {"enum": [1, 2]}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list[Color], {"type": "array", "items": {"enum": ["red", "blue"]}}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict[str, Any], {"type": "object", "additionalProperties": {}}),
        (Annotated[int, "how many"], {"type": "integer", "description": "how many"}),
        (
            Annotated[int | None, "maybe"],
            {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "maybe"},
        ),
    ],
    ids=str,
)
def test_schema_of_each_supported_hint(hint: Any, expected: dict[str, Any]) -> None:
    assert _property(hint) == expected


def test_nested_attrs_classes_become_closed_objects() -> None:
    point = {
        "type": "object",
        "properties": {
            "x": {"type": "integer", "description": "across."},
            "y": {"type": "integer", "description": "up.", "default": 0},
        },
        "required": ["x"],
        "additionalProperties": False,
        "description": "A point on the plane.",
    }
    assert _property(Point) == point
    assert _property(Shape) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "corners": {"type": "array", "items": point},
            "color": {"enum": ["red", "blue"], "default": "red"},
            "origin": {"anyOf": [point, {"type": "null"}], "default": None},
        },
        "required": ["name", "corners"],
        "additionalProperties": False,
        "description": "A named polygon.",
    }


def test_defaults_make_parameters_optional_and_appear_in_the_schema() -> None:
    @wingspan.tool
    def search(
        query: str,
        limit: int = 10,
        color: Color = Color.BLUE,
        where: Point = Point(x=1),
        tags: tuple[str, ...] = ("a",),
        maybe: int | None = None,
    ) -> None:
        """Search."""

    properties = search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"]
    assert "default" not in properties["query"]
    assert properties["limit"]["default"] == 10
    assert properties["color"]["default"] == "blue"
    assert properties["where"]["default"] == {"x": 1, "y": 0}
    assert properties["tags"]["default"] == ["a"]
    assert properties["maybe"]["default"] is None
    # The whole schema is JSON, defaults included.
    assert json.loads(json.dumps(search.input_schema)) == search.input_schema


def test_optional_without_default_is_required_but_nullable() -> None:
    @wingspan.tool
    def f(x: int | None) -> None:
        """F."""

    assert f.input_schema["required"] == ["x"]
    assert check_input(f, {"x": None}) is None
    assert check_input(f, {}) is not None


# --- descriptions from docstrings -------------------------------------------------------------


def test_sphinx_param_descriptions() -> None:
    @wingspan.tool
    def copy(source: str, target: str, overwrite: bool = False) -> None:
        """Copy a file.

        Both paths are relative to the work dir.

        :param source: the file to copy,
            which must exist.
        :param str target: where to put it.
        :param overwrite: replace an existing target.
        :returns: nothing.
        :raises ToolError: when the source is missing.
        """

    assert copy.description == "Copy a file.\n\nBoth paths are relative to the work dir."
    properties = copy.input_schema["properties"]
    assert properties["source"]["description"] == "the file to copy, which must exist."
    assert properties["target"]["description"] == "where to put it."
    assert properties["overwrite"] == {
        "type": "boolean",
        "description": "replace an existing target.",
        "default": False,
    }


def test_google_args_descriptions() -> None:
    @wingspan.tool
    def fetch(url: str, timeout: float = 30.0) -> str:
        """Fetch a URL.

        Args:
            url (str): the address,
                http or https only.
            timeout: seconds to wait.

        Returns:
            The page text.
        """
        return url

    assert fetch.description == "Fetch a URL."
    properties = fetch.input_schema["properties"]
    assert properties["url"]["description"] == "the address, http or https only."
    assert properties["timeout"]["description"] == "seconds to wait."


def test_annotated_description_wins_over_the_docstring() -> None:
    @wingspan.tool
    def f(x: Annotated[int, "from the hint"], y: int) -> None:
        """F.

        :param x: from the docstring.
        :param y: only here.
        """

    properties = f.input_schema["properties"]
    assert properties["x"]["description"] == "from the hint"
    assert properties["y"]["description"] == "only here."


# --- the context ------------------------------------------------------------------------------


async def test_a_tool_context_parameter_receives_the_context() -> None:
    seen: list[ToolContext] = []

    @wingspan.tool
    async def where(path: str, context: ToolContext) -> str:
        """Tell where a path would be."""
        seen.append(context)
        return f"{context.session_id}:{path}"

    assert where.input_schema["properties"] == {"path": {"type": "string"}}
    assert where.input_schema["required"] == ["path"]
    assert await _call(where, {"path": "a"}) == ToolOutcome(content="s1:a")
    assert seen == [CONTEXT]
    assert check_input(where, {"path": "a", "context": {}}) is not None


async def test_an_annotated_tool_context_is_injected_too() -> None:
    @wingspan.tool
    def sync_where(ctx: Annotated[ToolContext, "the call's context"]) -> str:
        """Tell the run id."""
        return ctx.run_id

    assert sync_where.input_schema["properties"] == {}
    assert await _call(sync_where, {}) == ToolOutcome(content="r1")


# --- conversion of validated input ------------------------------------------------------------


async def test_input_is_converted_to_the_annotated_types_before_the_call() -> None:
    received: dict[str, Any] = {}

    @wingspan.tool
    def draw(
        shape: Shape,
        color: Color,
        level: Level,
        points: list[Point],
        corners: tuple[int, ...],
        by_name: dict[str, Color],
        maybe: Color | None,
        described: Annotated[Color, "a colour"] = Color.RED,
        unique: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> str:
        """Draw."""
        received.update(locals())
        return "ok"

    outcome = await _call(
        draw,
        {
            "shape": {"name": "tri", "corners": [{"x": 1}, {"x": 2, "y": 3}], "origin": {"x": 0}},
            "color": "blue",
            "level": 2,
            "points": [{"x": 5}],
            "corners": [1, 2],
            "by_name": {"sky": "blue"},
            "maybe": None,
            "described": "blue",
            "unique": [3, 3],
        },
    )
    assert outcome == ToolOutcome(content="ok")
    assert received["shape"] == Shape(
        name="tri", corners=(Point(x=1), Point(x=2, y=3)), origin=Point(x=0)
    )
    assert received["color"] is Color.BLUE
    assert received["level"] is Level.HIGH
    assert received["points"] == [Point(x=5)]
    assert received["corners"] == (1, 2)
    assert received["by_name"] == {"sky": Color.BLUE}
    assert received["maybe"] is None
    assert received["described"] is Color.BLUE
    assert received["unique"] == {3}


async def test_defaults_are_used_for_absent_parameters() -> None:
    @wingspan.tool
    def f(color: Color = Color.RED, n: int = 7) -> str:
        """F."""
        return f"{color.name} {n}"

    assert await _call(f, {}) == ToolOutcome(content="RED 7")


async def test_attrs_fields_with_private_names_use_their_alias() -> None:
    @wingspan.tool
    def reveal(secret: Secret) -> int:
        """Reveal."""
        return secret._value

    schema = reveal.input_schema["properties"]["secret"]
    assert schema["required"] == ["value"]
    assert await _call(reveal, {"secret": {"value": 4}}) == ToolOutcome(content="4")


# --- return values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("as is", "as is"),
        ("", ""),
        (None, ""),
        (5, "5"),
        (1.5, "1.5"),
        (True, "true"),
        ([1, "a", None], '[1, "a", null]'),
        ({"é": "ü"}, '{"é": "ü"}'),
        (Point(x=1, y=2), '{"x": 1, "y": 2}'),
        (Color.RED, '"red"'),
        ((1, 2), "[1, 2]"),
    ],
    ids=repr,
)
async def test_return_values_become_text(value: Any, text: str) -> None:
    @wingspan.tool
    def give() -> Any:
        """Give."""
        return value

    assert await _call(give, {}) == ToolOutcome(content=text)


async def test_a_returned_tool_outcome_is_kept() -> None:
    @wingspan.tool
    async def refuse() -> ToolOutcome:
        """Refuse."""
        return ToolOutcome(content="no", is_error=True)

    assert await _call(refuse, {}) == ToolOutcome(content="no", is_error=True)


# --- bad declarations -------------------------------------------------------------------------


def _declare(hint: Any) -> Callable[..., Any]:
    def f(x):  # type: ignore[no-untyped-def]
        """F."""

    f.__annotations__ = {"x": hint}
    return f


class Opaque:
    pass


@pytest.mark.parametrize(
    ("hint", "words"),
    [
        (tuple[int, str], "fixed-length tuples"),
        (tuple[int], "fixed-length tuples"),
        (dict[int, str], "keys are strings"),
        (bytes, "no JSON Schema form"),
        (complex, "no JSON Schema form"),
        (set, "no JSON Schema form"),
        (datetime, "no JSON Schema form"),
        (Opaque, "no JSON Schema form"),
        (list[Opaque], "no JSON Schema form"),
        (Optional[bytes], "no JSON Schema form"),  # noqa: UP045
    ],
    ids=str,
)
def test_types_without_a_json_form_are_refused(hint: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        wingspan.tool(_declare(hint))
    assert "tool 'f'" in str(info.value)
    assert "parameter 'x'" in str(info.value)


def test_an_attrs_field_without_a_json_form_is_named() -> None:
    @attrs.frozen
    class Holder:
        data: bytes

    with pytest.raises(ConfigError, match=r"parameter 'x', field 'data'"):
        wingspan.tool(_declare(Holder))


def test_a_set_is_an_array() -> None:
    assert _property(set[int]) == {"type": "array", "items": {"type": "integer"}}


def test_no_docstring_is_refused() -> None:
    def bare(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match=r"tool 'bare' has no description.*docstring"):
        wingspan.tool(bare)


def test_star_args_and_kwargs_are_refused() -> None:
    def many(*paths: str) -> None:
        """Many."""

    def loose(**options: str) -> None:
        """Loose."""

    with pytest.raises(ConfigError, match=r"\*args and \*\*kwargs"):
        wingspan.tool(many)
    with pytest.raises(ConfigError, match=r"\*args and \*\*kwargs"):
        wingspan.tool(loose)


def test_positional_only_parameters_are_refused() -> None:
    def f(x: int, /) -> None:
        """F."""

    with pytest.raises(ConfigError, match="positional-only"):
        wingspan.tool(f)


@pytest.mark.parametrize("name", ["has space", "dot.ted", "x" * 65, "ünï", "-" * 65])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is invalid"):
        wingspan.tool(name=name)(_declare(int))


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="is invalid"):
        wingspan.tool(name="read\n")(_declare(int))


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="is invalid"):
        wingspan.tool(name="")(_declare(int))


def test_a_lambda_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="'<lambda>' is invalid"):
        wingspan.tool(lambda x: x)


def test_unresolvable_hints_are_refused() -> None:
    def f(x: int) -> None:
        """F."""

    f.__annotations__ = {"x": "NoSuchType"}
    with pytest.raises(ConfigError, match="cannot resolve its type hints"):
        wingspan.tool(f)


# --- check_input ------------------------------------------------------------------------------


@wingspan.tool
def book(room: Literal["a", "b"], people: int, note: str = "", when: Point | None = None) -> str:
    """Book a room."""
    return room


@pytest.mark.parametrize(
    ("input", "fragments"),
    [
        ([], ["expected a JSON object"]),
        ("room a", ["expected a JSON object"]),
        ({}, ["input.room: required field missing", "input.people: required field missing"]),
        ({"room": "c", "people": 1}, ["input.room"]),
        ({"room": "a", "people": "2"}, ["input.people: expected integer, got string"]),
        ({"room": "a", "people": 2.5}, ["input.people"]),
        ({"room": "a", "people": True}, ["input.people"]),
        ({"room": "a", "people": 1, "pets": 2}, ["input.pets: unknown field"]),
        ({"room": "a", "people": 1, "when": {"y": 1}}, ["input.when"]),
    ],
)
def test_check_input_explains_what_is_wrong(input: Any, fragments: list[str]) -> None:
    message = check_input(book, input)
    assert message is not None
    assert message.startswith("invalid input for tool 'book': ")
    for fragment in fragments:
        assert fragment in message
    if isinstance(input, dict):
        assert message.endswith("Fix the input and call it again.")


def test_check_input_accepts_valid_input() -> None:
    assert check_input(book, {"room": "a", "people": 2}) is None
    assert check_input(book, {"room": "b", "people": 2.0, "when": None}) is None
    assert check_input(book, {"room": "b", "people": 0, "when": {"x": 1}, "note": ""}) is None


def test_check_input_shows_at_most_ten_errors() -> None:
    @wingspan.tool
    def wide(
        a: int,
        b: int,
        c: int,
        d: int,
        e: int,
        f: int,
        g: int,
        h: int,
        i: int,
        j: int,
        k: int,
        m: int,
    ) -> None:
        """Wide."""

    message = check_input(wide, {})
    assert message is not None
    assert message.count("required field missing") == 10
    assert "(and 2 more)" in message


@attrs.frozen
class PlainTool:
    """A tool written without the decorator."""

    name: str = "plain"
    description: str = "Plain."
    input_schema: dict[str, Any] = attrs.field(
        factory=lambda: {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        }
    )
    output: Any = "fine"
    error: BaseException | None = None

    async def call(self, input: dict[str, Any], context: ToolContext) -> Any:
        if self.error is not None:
            raise self.error
        return self.output


def test_check_input_works_for_any_tool() -> None:
    tool = PlainTool()
    assert isinstance(tool, wingspan.Tool)
    assert check_input(tool, {"n": 1}) is None
    assert check_input(tool, {"n": 1, "other": "allowed by this schema"}) is None
    message = check_input(tool, {"n": "1"})
    assert message is not None
    assert "input.n" in message


@settings(max_examples=100, deadline=None)
@given(
    input=st.fixed_dictionaries(
        {"room": st.sampled_from(["a", "b"]), "people": st.integers()},
        optional={
            "note": st.text(max_size=5),
            "when": st.none()
            | st.builds(lambda x, y: {"x": x, "y": y}, st.integers(), st.integers()),
        },
    )
)
def test_valid_input_passes_check_and_reaches_the_function(input: dict[str, Any]) -> None:
    assert check_input(book, input) is None
    outcome = asyncio.run(run_tool(book, input, CONTEXT))
    assert outcome == ToolOutcome(content=input["room"])


# --- run_tool ---------------------------------------------------------------------------------


async def test_tool_errors_become_error_results() -> None:
    @wingspan.tool
    def fail(reason: str) -> None:
        """Fail."""
        raise ToolError(reason)

    assert await _call(fail, {"reason": "no such file: a.txt"}) == ToolOutcome(
        content="no such file: a.txt", is_error=True
    )
    assert await _call(fail, {"reason": ""}) == ToolOutcome(
        content="tool 'fail' failed", is_error=True
    )


async def test_other_exceptions_become_error_results() -> None:
    @wingspan.tool
    async def crash(n: int) -> int:
        """Crash."""
        return 1 // n

    outcome = await _call(crash, {"n": 0})
    assert outcome.is_error
    assert (
        outcome.content
        == "tool 'crash' raised ZeroDivisionError: integer division or modulo by zero"
    )

    plain = PlainTool(error=KeyError("k"))
    outcome = await run_tool(plain, {"n": 1}, CONTEXT)
    assert outcome.is_error
    assert "KeyError" in outcome.content


async def test_a_tool_returning_non_text_is_an_error_result() -> None:
    outcome = await run_tool(PlainTool(output=42), {"n": 1}, CONTEXT)
    assert outcome == ToolOutcome(content="tool 'plain' returned int, not text", is_error=True)
    assert await run_tool(PlainTool(output="ok"), {"n": 1}, CONTEXT) == ToolOutcome(content="ok")


async def test_cancellation_reaches_and_propagates_from_an_async_tool() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @wingspan.tool
    async def wait_forever() -> None:
        """Wait."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    task = asyncio.create_task(run_tool(wait_forever, {}, CONTEXT))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert cancelled.is_set()


async def test_a_cancelled_error_raised_by_a_tool_is_not_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError):
        await run_tool(PlainTool(error=asyncio.CancelledError()), {"n": 1}, CONTEXT)


async def test_cancelling_a_sync_tool_propagates() -> None:
    started = threading.Event()
    release = threading.Event()

    @wingspan.tool
    def block() -> str:
        """Block."""
        started.set()
        release.wait(TIMEOUT)
        return "done"

    task = asyncio.create_task(run_tool(block, {}, CONTEXT))
    try:
        await asyncio.wait_for(asyncio.to_thread(started.wait, TIMEOUT), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
    finally:
        release.set()
