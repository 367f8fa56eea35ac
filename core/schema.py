"""Tool-input validation against JSON Schema, compiled once per tool.

The schemas tools declare use a small part of JSON Schema (types, properties, required,
items, enums, bounds). :func:`compile_validator` turns such a schema into nested closures that
accept a valid input in a microsecond or two, where a general validator takes ten or more; the
loop validates every tool call, so this is on its hot path. A schema using any other keyword
(``$ref``, ``patternProperties``, ``if``...) is validated by the ``jsonschema`` library,
imported only then. Both give the same verdicts (a property test checks it).

Why not a library (``bench/.venv/bin/python bench/validators.py``, four tool schemas): this
is 18-35x faster than a cached ``jsonschema`` validator on valid input and 4.6-7.9x on
invalid input, both collecting every error. ``fastjsonschema`` (generated code) takes 0.9-1.5x
this code's time on valid input, the case of almost every call; on invalid input it is faster
(0.4-0.7x stopping at the first error, 0.8-2.0x collecting every error), where a model's
mistake costs a few microseconds more here. Close on the hot path, this saves a dependency
and keeps the messages the model is shown ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SchemaValidator", "compile_validator", "json_equal"]

#: Errors found: (path, reason) pairs. Empty when the input is valid.
Errors = list[tuple[str, str]]
SchemaValidator = Callable[[Any], Errors]
_Check = Callable[[Any, str, Errors], None]

#: Keywords that only annotate a schema; validation ignores them.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "$schema", "$id", "format",
     "readOnly", "writeOnly", "deprecated"}
)
_COMPILED = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const",
     "anyOf", "allOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
     "minLength", "maxLength", "minItems", "maxItems", "pattern"}
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    kind = _json_type(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":
        return kind == "integer" or (kind == "number" and float(value).is_integer())
    return kind == name


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema defines it: ``true`` is not ``1``, ``1`` is ``1.0``."""
    ka, kb = _json_type(a), _json_type(b)
    numeric = ("integer", "number")
    if ka in numeric and kb in numeric:
        return bool(a == b)
    if ka != kb:
        return False
    if ka == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ka == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _compilable(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, sub in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key not in _COMPILED:
            return False
        if key == "properties" and not (
            isinstance(sub, Mapping) and all(_compilable(s) for s in sub.values())
        ):
            return False
        if key in ("items", "additionalProperties") and not _compilable(sub):
            return False
        if key in ("anyOf", "allOf") and not (
            isinstance(sub, list) and sub and all(_compilable(s) for s in sub)
        ):
            return False
        if key == "type" and not (
            isinstance(sub, str) or (isinstance(sub, list) and all(isinstance(x, str) for x in sub))
        ):
            return False
        if key == "pattern":
            try:
                re.compile(sub)
            except (re.error, TypeError):
                return False
    return True


def _compile(schema: Any) -> _Check:
    if schema is True or schema == {}:
        return lambda value, path, errors: None
    if schema is False:
        return lambda value, path, errors: errors.append((path, "no value is allowed here"))
    checks: list[_Check] = []

    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        wanted = " or ".join(names)

        def check_type(value: Any, path: str, errors: Errors) -> None:
            if not any(_is_type(value, n) for n in names):
                errors.append((path, f"expected {wanted}, got {_json_type(value)}"))

        checks.append(check_type)
        # The type check decides alone whether the other keywords apply to this value.

    if "enum" in schema:
        options = list(schema["enum"])

        def check_enum(value: Any, path: str, errors: Errors) -> None:
            if not any(json_equal(value, o) for o in options):
                shown = ", ".join(_short(o) for o in options)
                errors.append((path, f"{_short(value)} is not one of {shown}"))

        checks.append(check_enum)
    if "const" in schema:
        const = schema["const"]

        def check_const(value: Any, path: str, errors: Errors) -> None:
            if not json_equal(value, const):
                errors.append((path, f"must be {_short(const)}"))

        checks.append(check_const)

    checks.extend(_numeric_checks(schema))
    checks.extend(_string_checks(schema))
    checks.extend(_array_checks(schema))
    checks.extend(_object_checks(schema))

    if "anyOf" in schema:
        options_checks = [_compile(s) for s in schema["anyOf"]]

        def check_any_of(value: Any, path: str, errors: Errors) -> None:
            best: Errors | None = None
            for option in options_checks:
                found: Errors = []
                option(value, path, found)
                if not found:
                    return
                if best is None or len(found) < len(best):
                    best = found
            errors.extend(best or [(path, "matches none of the allowed forms")])

        checks.append(check_any_of)
    if "allOf" in schema:
        all_checks = [_compile(s) for s in schema["allOf"]]

        def check_all_of(value: Any, path: str, errors: Errors) -> None:
            for check in all_checks:
                check(value, path, errors)

        checks.append(check_all_of)

    if len(checks) == 1:
        return checks[0]

    def check_all(value: Any, path: str, errors: Errors) -> None:
        for check in checks:
            check(value, path, errors)

    return check_all


def _numeric_checks(schema: Mapping[str, Any]) -> list[_Check]:
    checks: list[_Check] = []
    bounds = [
        ("minimum", lambda v, b: v >= b, "at least"),
        ("maximum", lambda v, b: v <= b, "at most"),
        ("exclusiveMinimum", lambda v, b: v > b, "greater than"),
        ("exclusiveMaximum", lambda v, b: v < b, "less than"),
    ]
    for key, ok, words in bounds:
        if key in schema:
            bound = schema[key]

            def check(value: Any, path: str, errors: Errors, bound: Any = bound, ok: Any = ok,
                      words: str = words) -> None:
                if _is_type(value, "number") and not (math.isnan(value) or ok(value, bound)):
                    errors.append((path, f"must be {words} {bound}, got {value}"))
                elif _is_type(value, "number") and math.isnan(value):
                    errors.append((path, f"must be {words} {bound}, got NaN"))

            checks.append(check)
    return checks


def _string_checks(schema: Mapping[str, Any]) -> list[_Check]:
    checks: list[_Check] = []
    if "minLength" in schema or "maxLength" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength", math.inf)

        def check_length(value: Any, path: str, errors: Errors) -> None:
            if isinstance(value, str) and not low <= len(value) <= high:
                errors.append((path, f"length must be between {low} and {high}, got {len(value)}"))

        checks.append(check_length)
    if "pattern" in schema:
        pattern = re.compile(schema["pattern"])

        def check_pattern(value: Any, path: str, errors: Errors) -> None:
            if isinstance(value, str) and not pattern.search(value):
                errors.append((path, f"does not match the pattern {pattern.pattern!r}"))

        checks.append(check_pattern)
    return checks


def _array_checks(schema: Mapping[str, Any]) -> list[_Check]:
    checks: list[_Check] = []
    if "items" in schema:
        item_check = _compile(schema["items"])

        def check_items(value: Any, path: str, errors: Errors) -> None:
            if isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    item_check(item, f"{path}[{i}]", errors)

        checks.append(check_items)
    if "minItems" in schema or "maxItems" in schema:
        low, high = schema.get("minItems", 0), schema.get("maxItems", math.inf)

        def check_count(value: Any, path: str, errors: Errors) -> None:
            if isinstance(value, list | tuple) and not low <= len(value) <= high:
                errors.append((path, f"must hold between {low} and {high} items, got {len(value)}"))

        checks.append(check_count)
    return checks


def _object_checks(schema: Mapping[str, Any]) -> list[_Check]:
    checks: list[_Check] = []
    properties = {name: _compile(s) for name, s in schema.get("properties", {}).items()}
    required = list(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_check = None if extra is True or extra is False else _compile(extra)
    if not properties and not required and extra is True:
        return checks

    def check_object(value: Any, path: str, errors: Errors) -> None:
        if not isinstance(value, dict):
            return
        for name in required:
            if name not in value:
                errors.append((f"{path}.{name}", "required field missing"))
        for name, item in value.items():
            check = properties.get(name)
            if check is not None:
                check(item, f"{path}.{name}", errors)
            elif extra is False:
                errors.append((f"{path}.{name}", "unknown field"))
            elif extra_check is not None:
                extra_check(item, f"{path}.{name}", errors)

    checks.append(check_object)
    return checks


def _library_validator(schema: Mapping[str, Any]) -> SchemaValidator:
    import jsonschema  # imported only for schemas beyond the compiled subset

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)

    def validate(value: Any) -> Errors:
        errors: Errors = []
        for error in validator.iter_errors(value):
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
            errors.append((f"input{path}", error.message))
        return errors

    return validate


# --- the fast path: a yes/no answer, with no paths or messages built -----------------------

_Test = Callable[[Any], bool]


def _is_integer(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and value.is_integer()) or (
        isinstance(value, int) and kind is not bool
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and type(value) is not bool


_TYPE_TESTS: dict[str, _Test] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: v is True or v is False,
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list | tuple),
    "object": lambda v: isinstance(v, dict),
}


def _all(tests: list[_Test]) -> _Test:
    if not tests:
        return lambda value: True
    if len(tests) == 1:
        return tests[0]

    def test_all(value: Any) -> bool:
        for test in tests:  # noqa: SIM110 (a plain loop is the fast path here)
            if not test(value):
                return False
        return True

    return test_all


def _fast(schema: Any) -> _Test:
    """A yes/no test agreeing with :func:`_compile` (the property tests hold both to the
    ``jsonschema`` library's verdicts)."""
    if schema is True or schema == {}:
        return lambda value: True
    if schema is False:
        return lambda value: False
    # Cheap checks first: the type, then everything else.
    tests: list[_Test] = []
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        type_tests = [_TYPE_TESTS[n] for n in names if n in _TYPE_TESTS]
        if len(type_tests) == 1:
            tests.append(type_tests[0])
        else:
            tests.append(lambda value: any(test(value) for test in type_tests))
    tests.extend(_fast_values(schema))
    # The remaining keywords reuse the error-collecting checks: they only run on the rare
    # schemas that have them, while objects and arrays (every tool input), enums and bounds
    # get their own.
    rest = {k: v for k, v in schema.items() if k not in _FAST}
    if any(k not in _ANNOTATIONS for k in rest):
        check = _compile(rest)

        def test_rest(value: Any) -> bool:
            errors: Errors = []
            check(value, "", errors)
            return not errors

        tests.append(test_rest)
    if "items" in schema:
        item_test = _fast(schema["items"])
        tests.append(
            lambda value: not isinstance(value, list | tuple) or all(map(item_test, value))
        )
    if {"properties", "required", "additionalProperties"} & schema.keys():
        tests.append(_fast_object(schema))
    return _all(tests)


#: Keywords :func:`_fast` tests itself.
_FAST = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum",
                   "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                   "maxLength"})
_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": lambda value, bound: value >= bound,
    "maximum": lambda value, bound: value <= bound,
    "exclusiveMinimum": lambda value, bound: value > bound,
    "exclusiveMaximum": lambda value, bound: value < bound,
}


def _fast_values(schema: Mapping[str, Any]) -> list[_Test]:
    """Tests of an enum, a number's bounds and a string's length (NaN is out of every
    bound, as the comparisons say)."""
    tests: list[_Test] = []
    if "enum" in schema:
        options = list(schema["enum"])
        if all(isinstance(option, str) for option in options):
            strings = frozenset(options)
            tests.append(lambda value: isinstance(value, str) and value in strings)
        else:
            tests.append(lambda value: any(json_equal(value, o) for o in options))
    for key, within in _BOUNDS.items():
        if key in schema:
            tests.append(_bounded(within, schema[key]))
    if "minLength" in schema or "maxLength" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength", math.inf)
        tests.append(lambda value: not isinstance(value, str) or low <= len(value) <= high)
    return tests


def _bounded(within: Callable[[Any, Any], bool], bound: Any) -> _Test:
    return lambda value: not _is_number(value) or within(value, bound)


def _fast_object(schema: Mapping[str, Any]) -> _Test:
    properties = {name: _fast(s) for name, s in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_test = None if extra is True or extra is False else _fast(extra)
    closed = extra is False

    def test_object(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            test = properties.get(name)
            if test is not None:
                if not test(item):
                    return False
            elif closed or (extra_test is not None and not extra_test(item)):
                return False
        return True

    return test_object


def compile_validator(schema: Mapping[str, Any] | bool) -> SchemaValidator:
    """Compile ``schema`` into a function returning the errors of an input.

    Paths start at ``input`` (``input.files[2].name``).
    """
    if not _compilable(schema):
        assert not isinstance(schema, bool)
        return _library_validator(schema)
    fast = _fast(schema)
    check = _compile(schema)

    def validate(value: Any) -> Errors:
        errors: Errors = []
        if not fast(value):
            # Only now build the paths and messages.
            check(value, "input", errors)
            if not errors:  # the two paths disagree: never let the input through
                errors.append(("input", "does not match the tool's input schema"))
        return errors

    return validate
