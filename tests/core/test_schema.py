"""Tool-input validation: the compiled subset agrees with ``jsonschema`` (Draft 2020-12)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingspan import schema as schema_module
from wingspan.schema import compile_validator, json_equal

from .. import strategies as s

# --- schemas from the compiled subset ---------------------------------------------------------

TYPE_NAMES = ["null", "boolean", "integer", "number", "string", "array", "object"]
#: Property names from a small pool, so instances and schemas talk about the same keys.
NAMES = ["a", "b", "c", "d"]
PATTERNS = ["^a", "b$", "[0-9]+", "^$", "x.*y", "^[a-c]*$"]

numbers = st.integers(min_value=-5, max_value=5) | st.sampled_from([-2.5, -0.5, 0.5, 1.5, 3.0])
small_json = st.recursive(
    st.none() | st.booleans() | numbers | st.sampled_from(["", "a", "b", "ab"]),
    lambda children: (
        st.lists(children, max_size=2)
        | st.dictionaries(st.sampled_from(NAMES), children, max_size=2)
    ),
    max_leaves=4,
)
types_keyword = st.sampled_from(TYPE_NAMES) | st.lists(
    st.sampled_from(TYPE_NAMES), min_size=1, max_size=3, unique=True
)

LEAF_KEYWORDS: dict[str, st.SearchStrategy[Any]] = {
    "type": types_keyword,
    "enum": st.lists(small_json, min_size=1, max_size=4),
    "const": small_json,
    "minimum": numbers,
    "maximum": numbers,
    "exclusiveMinimum": numbers,
    "exclusiveMaximum": numbers,
    "minLength": st.integers(min_value=0, max_value=3),
    "maxLength": st.integers(min_value=0, max_value=3),
    "minItems": st.integers(min_value=0, max_value=3),
    "maxItems": st.integers(min_value=0, max_value=3),
    "pattern": st.sampled_from(PATTERNS),
    "description": st.just("annotations never change a verdict"),
    "default": small_json,
}


def _leaf_schema(keywords: st.SearchStrategy[list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    return keywords.flatmap(
        lambda names: st.fixed_dictionaries({name: LEAF_KEYWORDS[name] for name in names})
    )


leaf_schemas = _leaf_schema(
    st.lists(st.sampled_from(sorted(LEAF_KEYWORDS)), max_size=3, unique=True)
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    structural: dict[str, st.SearchStrategy[Any]] = {
        "properties": st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
        "required": st.lists(st.sampled_from(NAMES), max_size=3, unique=True),
        "additionalProperties": st.booleans() | children,
        "items": children,
        "anyOf": st.lists(children, min_size=1, max_size=3),
        "allOf": st.lists(children, min_size=1, max_size=2),
    }
    keywords = st.lists(st.sampled_from(sorted(structural)), min_size=1, max_size=3, unique=True)
    return st.tuples(
        keywords.flatmap(
            lambda names: st.fixed_dictionaries({name: structural[name] for name in names})
        ),
        leaf_schemas,
    ).map(lambda pair: {**pair[1], **pair[0]})


compiled_schemas: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | leaf_schemas, _extend, max_leaves=6
)


# --- instances near a schema ------------------------------------------------------------------


def _draw_instance(data: st.DataObject, schema: Any, depth: int = 0) -> Any:
    """An instance shaped by ``schema``, with some of its parts wrong."""
    if depth > 4 or not isinstance(schema, dict) or data.draw(st.integers(0, 7)) == 0:
        return data.draw(small_json)
    if "const" in schema and data.draw(st.booleans()):
        return schema["const"]
    if "enum" in schema and data.draw(st.booleans()):
        return data.draw(st.sampled_from(schema["enum"]))
    for combinator in ("anyOf", "allOf"):
        if combinator in schema and data.draw(st.booleans()):
            return _draw_instance(data, data.draw(st.sampled_from(schema[combinator])), depth + 1)
    names = schema.get("type", data.draw(st.sampled_from(TYPE_NAMES)))
    if isinstance(names, list):
        names = data.draw(st.sampled_from(names))
    if names == "object" or (
        names not in TYPE_NAMES and ("properties" in schema or "required" in schema)
    ):
        properties = schema.get("properties", {})
        keys = data.draw(
            st.lists(st.sampled_from(NAMES), max_size=4, unique=True)
            | st.just(sorted(set(properties) | set(schema.get("required", ()))))
        )
        extra = schema.get("additionalProperties", True)
        return {key: _draw_instance(data, properties.get(key, extra), depth + 1) for key in keys}
    if names == "array":
        size = data.draw(st.integers(0, 4))
        return [_draw_instance(data, schema.get("items", True), depth + 1) for _ in range(size)]
    if names == "string":
        return data.draw(
            st.sampled_from(["", "a", "ab", "abc", "ba", "b", "x-y", "123", "a1b"])
            | st.text(max_size=4)
        )
    if names == "integer":
        return data.draw(st.integers(-6, 6) | st.sampled_from([2.0, -3.0]))
    if names == "number":
        bounds = [
            schema[k]
            for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
            if k in schema
        ]
        return data.draw(numbers | st.sampled_from(bounds or [0]) | st.floats(-6, 6))
    if names == "boolean":
        return data.draw(st.booleans())
    if names == "null":
        return None
    return data.draw(small_json)


def _library_says_valid(schema: Any, instance: Any) -> bool:
    return bool(jsonschema.Draft202012Validator(schema).is_valid(instance))


# --- agreement --------------------------------------------------------------------------------


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(schema=compiled_schemas, data=st.data())
def test_compiled_validator_agrees_with_jsonschema(schema: Any, data: st.DataObject) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    # The point is to test the compiled path, not the fallback.
    assert schema_module._compilable(schema)
    validate = compile_validator(schema)
    instance = _draw_instance(data, schema)
    errors = validate(instance)
    assert (not errors) == _library_says_valid(schema, instance), errors
    assert all(path.startswith("input") for path, _ in errors)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(schema=compiled_schemas, instance=s.json_values)
def test_compiled_validator_agrees_on_arbitrary_json(schema: Any, instance: Any) -> None:
    errors = compile_validator(schema)(instance)
    assert (not errors) == _library_says_valid(schema, instance), errors


@pytest.mark.parametrize(
    ("schema", "instance", "valid"),
    [
        ({"type": "integer"}, 1.0, True),
        ({"type": "integer"}, 1.5, False),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"type": ["string", "null"]}, None, True),
        ({"enum": [1, "a"]}, 1.0, True),
        ({"enum": [1]}, True, False),
        ({"enum": [[1, {"a": True}]]}, [1.0, {"a": True}], True),
        ({"const": False}, 0, False),
        ({"const": {"a": 1}}, {"a": 1, "b": 2}, False),
        ({"minimum": 2}, "1", True),
        ({"exclusiveMaximum": 2}, 2, False),
        ({"exclusiveMaximum": 2}, 1.999, True),
        ({"minLength": 2}, "é€", True),
        ({"maxItems": 1}, [1, 2], False),
        ({"pattern": "b"}, "abc", True),
        ({"pattern": "^b"}, "abc", False),
        ({"required": ["a"]}, [], True),
        ({"properties": {"a": False}}, {"a": 1}, False),
        ({"properties": {"a": False}}, {"b": 1}, True),
        ({"additionalProperties": {"type": "string"}, "properties": {"a": True}}, {"a": 1}, True),
        ({"additionalProperties": {"type": "string"}}, {"b": 1}, False),
        ({"items": {"type": "string"}}, ["a", 1], False),
        ({"anyOf": [{"type": "string"}, {"minimum": 3}]}, 2, False),
        ({"anyOf": [{"type": "string"}, {"minimum": 3}]}, True, True),
        ({"allOf": [{"minimum": 0}, {"maximum": 1}]}, 2, False),
        (False, None, False),
        (True, {"anything": [1]}, True),
        ({}, 0, True),
    ],
)
def test_edge_cases_agree_with_jsonschema(schema: Any, instance: Any, valid: bool) -> None:
    assert _library_says_valid(schema, instance) is valid
    assert (not compile_validator(schema)(instance)) is valid


# --- the fallback -----------------------------------------------------------------------------

DEFS_SCHEMA = {
    "type": "object",
    "$defs": {
        "file": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    },
    "properties": {"files": {"type": "array", "items": {"$ref": "#/$defs/file"}}},
}
FALLBACK_SCHEMAS: list[Any] = [
    DEFS_SCHEMA,
    {"type": "object", "patternProperties": {"^a": {"type": "integer"}}},
    {"not": {"type": "string"}},
    {"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string"}},
    {"type": "array", "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
    {"type": "object", "minProperties": 1, "maxProperties": 2},
    {"multipleOf": 2},
    {"oneOf": [{"type": "integer"}, {"minimum": 0}]},
    {"type": "object", "properties": {"a": {"dependentRequired": {"b": ["c"]}}}},
    {"items": {"contains": {"const": 1}}},
    {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/n"}], "$defs": {"n": {"type": "null"}}},
]


@pytest.mark.parametrize("schema", FALLBACK_SCHEMAS, ids=str)
def test_other_keywords_fall_back_to_jsonschema(schema: Any) -> None:
    assert not schema_module._compilable(schema)
    compile_validator(schema)  # does not raise


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.sampled_from(FALLBACK_SCHEMAS), instance=s.json_values | small_json)
def test_fallback_validators_agree_with_jsonschema(schema: Any, instance: Any) -> None:
    errors = compile_validator(schema)(instance)
    assert (not errors) == _library_says_valid(schema, instance), errors
    assert all(path.startswith("input") for path, _ in errors)


def test_an_invalid_schema_beyond_the_subset_is_refused() -> None:
    with pytest.raises(jsonschema.SchemaError):
        compile_validator({"type": "object", "minProperties": -1})


# --- error paths ------------------------------------------------------------------------------

FILES_SCHEMA = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        }
    },
}


@pytest.mark.parametrize("schema", [FILES_SCHEMA, DEFS_SCHEMA], ids=["compiled", "fallback"])
def test_errors_name_the_path_from_input(schema: Any) -> None:
    instance = {"files": [{"name": "a"}, {"name": "b"}, {"name": 3}]}
    ((path, reason),) = compile_validator(schema)(instance)
    assert path == "input.files[2].name"
    assert reason


def test_compiled_errors_name_each_failing_field() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 2}},
        "required": ["a", "c"],
        "additionalProperties": False,
    }
    errors = dict(compile_validator(schema)({"a": "1", "b": "long", "z": 0}))
    assert set(errors) == {"input.a", "input.b", "input.c", "input.z"}
    assert "integer" in errors["input.a"]
    assert "missing" in errors["input.c"]
    assert "unknown" in errors["input.z"]


def test_a_valid_input_has_no_errors() -> None:
    assert compile_validator(FILES_SCHEMA)({"files": [{"name": "a"}]}) == []
    assert compile_validator(DEFS_SCHEMA)({"files": [{"name": "a"}]}) == []


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        ([1], [1.0], True),
        ({"a": 0}, {"a": False}, False),
        (None, None, True),
        ("1", 1, False),
        ({"a": 1}, {"a": 1, "b": 1}, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal
