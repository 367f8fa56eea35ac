"""The one place where JSON shapes are defined.

:func:`make_converter` builds a strict cattrs converter: no silent coercion (``1`` never
becomes ``"1"``, ``true`` is not an integer, ``1.5`` is not one either though ``1.0``, the
same JSON number as ``1``, is), unknown keys rejected, tagged unions on
``"type"``, and failures reported as :class:`~wingspan.errors.ValidationError` naming the
failing field. Types defined by plugins are registered on the same converter.
"""

from __future__ import annotations

import collections.abc
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Literal, TypeVar, get_args

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, make_mapping_structure_fn
from cattrs.preconf.json import make_converter as _make_json_converter

from . import types as t
from .errors import ValidationError

__all__ = [
    "compact_json",
    "dumps",
    "format_timestamp",
    "loads",
    "make_converter",
    "register_tagged",
    "structure",
    "structure_messages",
    "unstructure",
]

T = TypeVar("T")

#: The classes whose JSON carries a ``"type"`` tag.
TAGGED: tuple[type, ...] = (
    t.TextBlock,
    t.ToolUseBlock,
    t.ToolResultBlock,
    t.TextStart,
    t.ToolUseStart,
    t.MessageStart,
    t.ContentBlockStart,
    t.TextDelta,
    t.InputJsonDelta,
    t.ContentBlockStop,
    t.MessageDelta,
    t.MessageStop,
    t.Ping,
    t.ErrorEvent,
    t.ToolResultEvent,
    t.PermissionRequested,
    t.PermissionResolved,
    t.Done,
    t.RunQueued,
    t.RunStarted,
    t.RunFinished,
    t.Resync,
)
#: Unions dispatched on their members' ``"type"`` tags.
UNIONS: tuple[Any, ...] = (
    t.ContentBlock, t.StreamEvent, t.LogEvent, t.LogEvent | t.Resync,
    t.TextStart | t.ToolUseStart,
)


class _WireError(ValueError):
    """Raised inside hooks: its message is the reason shown to the user as is."""


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        tp, getattr(tp, "__name__", repr(tp))
    )


def _strict_primitive(tp: type) -> Callable[[Any, Any], Any]:
    def check(value: Any, _: Any) -> Any:
        # bool is a subclass of int; JSON true is never an integer.
        if type(value) is tp or (tp is float and type(value) is int):
            return value
        # JSON has one number type: 1.0 is the integer 1 (as JSON Schema says), 1.5 is not.
        if tp is int and type(value) is float and value.is_integer():
            return int(value)
        raise _WireError(f"expected {_type_name(tp)}, got {_json_type(value)}")

    return check


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _structure_json_object(value: Any, _: Any) -> Any:
    if isinstance(value, dict):
        return value
    raise _WireError(f"expected an object, got {_json_type(value)}")


def _structure_optional_json_object(value: Any, _: Any) -> Any:
    return None if value is None else _structure_json_object(value, _)


def register_tagged(converter: cattrs.Converter, cls: type, tag: str | None = None) -> None:
    """Give ``cls`` a JSON shape carrying ``"type": tag`` (default: ``cls.type``).

    Plugins that add their own tagged types call this on the runtime's converter.
    """
    tag = tag or cls.type  # type: ignore[attr-defined]
    unstructure_fields: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, converter)
    structure_fields: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True
    )

    def unstructure_tagged(obj: Any) -> dict[str, Any]:
        return {"type": tag, **unstructure_fields(obj)}

    def structure_tagged(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _WireError(f"expected an object, got {_json_type(value)}")
        found = value.get("type", tag)
        if found != tag:
            raise _WireError(f'"type" must be "{tag}", got {json.dumps(found)}')
        return structure_fields({k: v for k, v in value.items() if k != "type"}, cls)

    converter.register_unstructure_hook(cls, unstructure_tagged)
    converter.register_structure_hook(cls, structure_tagged)


def _register_union(converter: cattrs.Converter, union: Any) -> None:
    members: dict[str, type] = {m.type: m for m in get_args(union)}
    allowed = ", ".join(f'"{tag}"' for tag in members)

    def structure_union(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _WireError(f"expected an object, got {_json_type(value)}")
        tag = value.get("type")
        cls = members.get(tag) if isinstance(tag, str) else None
        if cls is None:
            raise _WireError(f'"type" must be one of {allowed}, got {json.dumps(tag)}')
        return converter.structure(value, cls)

    converter.register_structure_hook(union, structure_union)
    converter.register_unstructure_hook(union, lambda obj: converter.unstructure(obj, type(obj)))


def _strict_tuple(converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    def structure_tuple(value: Any, tp: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _WireError(f"expected an array, got {_json_type(value)}")
        (item_type, *_) = get_args(tp) or (Any,)
        items, errors = [], []
        for i, item in enumerate(value):
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    IterableValidationNote(f"Structuring index {i}", i, item_type),
                ]
                errors.append(exc)
        if errors:
            raise IterableValidationError("while structuring an array", errors, tp)
        return tuple(items)

    return structure_tuple


def _is_mapping(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) in (collections.abc.Mapping, dict)


def _strict_mapping(converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Mappings only from JSON objects: cattrs's own hook would call ``.items()`` on an
    array and report Python's ``AttributeError`` instead of what is wrong."""
    hooks: dict[Any, Callable[[Any, Any], Any]] = {}

    def structure_mapping(value: Any, tp: Any) -> Any:
        if not isinstance(value, dict):
            raise _WireError(f"expected an object, got {_json_type(value)}")
        hook = hooks.get(tp)
        if hook is None:
            hook = hooks[tp] = make_mapping_structure_fn(tp, converter)
        return hook(value, tp)

    return structure_mapping


def _literal_hook(value: Any, tp: Any) -> Any:
    allowed = get_args(tp)
    # ``type(value) is type(a)`` keeps True from matching 1.
    if any(value == a and type(value) is type(a) for a in allowed):
        return value
    shown = ", ".join(json.dumps(a) for a in allowed)
    raise _WireError(f"must be one of {shown}, got {_json_dump_short(value)}")


def _json_dump_short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _attrs_structure_factory(cls: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    structure_fields = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

    def structure_attrs(value: Any, tp: Any) -> Any:
        if not isinstance(value, dict):
            raise _WireError(f"expected an object, got {_json_type(value)}")
        return structure_fields(value, tp)

    return structure_attrs


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-24T13:11:02.123Z``."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _structure_timestamp(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        raise _WireError(f"expected an RFC 3339 timestamp string, got {_json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _WireError(f"expected an RFC 3339 timestamp, got {_json_dump_short(value)}") from None
    if parsed.tzinfo is None:
        raise _WireError(f"timestamp {value!r} has no time zone; add 'Z' for UTC")
    return parsed.astimezone(UTC)


class _NotFast(Exception):
    """The fast path declines: the general path decides (and names any failure)."""




def _setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The slot setter of field ``name`` of frozen, slotted ``cls``: for values already
    checked and in their final types (no converter or validator to run), setting the
    slots directly costs half of ``cls(...)``, which counts on a history's load."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


_new = object.__new__
_TEXT = _setter(t.TextBlock, "text")
_USE_ID, _USE_NAME, _USE_INPUT = (_setter(t.ToolUseBlock, n) for n in ("id", "name", "input"))
_RESULT_ID, _RESULT_CONTENT, _RESULT_ERROR = (
    _setter(t.ToolResultBlock, n) for n in ("tool_use_id", "content", "is_error"))
_ROLE, _CONTENT = _setter(t.Message, "role"), _setter(t.Message, "content")


def _message_fast(value: Any) -> t.Message:
    """Build a message from well-formed JSON with direct checks, as strict as the general
    path; anything unusual is left to it. Histories are loaded a message at a time, so this
    is on the path of every store load. (A block's keys are checked by their number: the
    keys it must have were each found with the right type, so one more is one too many.)"""
    if type(value) is not dict or len(value) != 2:
        raise _NotFast
    role = value.get("role")
    content = value.get("content")
    if (role != "user" and role != "assistant") or type(role) is not str:
        raise _NotFast
    if type(content) is not list:
        raise _NotFast
    blocks: list[t.ContentBlock] = []
    for block in content:
        if type(block) is not dict:
            raise _NotFast
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if type(text) is not str or len(block) != 2:  # "type" and "text", nothing else
                raise _NotFast
            built: t.ContentBlock = _new(t.TextBlock)
            _TEXT(built, text)
        elif kind == "tool_use":
            id_, name, input_ = block.get("id"), block.get("name"), block.get("input")
            if (type(id_) is not str or type(name) is not str or type(input_) is not dict
                    or len(block) != 4):
                raise _NotFast
            built = _new(t.ToolUseBlock)
            _USE_ID(built, id_)
            _USE_NAME(built, name)
            _USE_INPUT(built, input_)
        elif kind == "tool_result":
            use_id, text = block.get("tool_use_id"), block.get("content")
            is_error = block.get("is_error", False)
            if (type(use_id) is not str or type(text) is not str or type(is_error) is not bool
                    or not (len(block) == 3 or (len(block) == 4 and "is_error" in block))):
                raise _NotFast
            built = _new(t.ToolResultBlock)
            _RESULT_ID(built, use_id)
            _RESULT_CONTENT(built, text)
            _RESULT_ERROR(built, is_error)
        else:
            raise _NotFast
        blocks.append(built)
    message = _new(t.Message)
    _ROLE(message, role)
    _CONTENT(message, tuple(blocks))
    return message


def _register_fast_message(converter: cattrs.Converter) -> None:
    general = _attrs_structure_factory(t.Message, converter)

    def structure_message(value: Any, tp: Any) -> t.Message:
        try:
            return _message_fast(value)
        except _NotFast:
            return general(value, tp)  # type: ignore[no-any-return]

    converter.register_structure_hook(t.Message, structure_message)


def make_converter() -> cattrs.Converter:
    """Build a new strict JSON converter knowing every kernel wire type."""
    converter = _make_json_converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_unstructure_hook(datetime, format_timestamp)
    converter.register_structure_hook(datetime, _structure_timestamp)
    converter.register_structure_hook_factory(
        attrs.has, lambda cls: _attrs_structure_factory(cls, converter)
    )
    converter.register_structure_hook_func(
        lambda tp: getattr(tp, "__origin__", None) is Literal, _literal_hook
    )
    for primitive in (str, int, float, bool):
        converter.register_structure_hook(primitive, _strict_primitive(primitive))
    converter.register_structure_hook_func(_is_mapping, _strict_mapping(converter))
    converter.register_structure_hook_func(
        lambda tp: tp == t.JSONObject, _structure_json_object
    )
    converter.register_structure_hook_func(
        lambda tp: tp == (t.JSONObject | None), _structure_optional_json_object
    )
    converter.register_structure_hook_func(
        lambda tp: getattr(tp, "__origin__", None) is tuple, _strict_tuple(converter)
    )
    # Unions first: a class's structure function binds its fields' hooks when it is made.
    for union in UNIONS:
        _register_union(converter, union)
    for cls in TAGGED:
        register_tagged(converter, cls)
    _register_fast_message(converter)
    return converter


@functools.cache
def default_converter() -> cattrs.Converter:
    """The converter of the kernel's own types, built once (it is never modified)."""
    return make_converter()


_UNKNOWN_FIELDS = "unknown fields: "


def _format(exc: BaseException, tp: type | None) -> str:
    if isinstance(exc, _WireError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return _UNKNOWN_FIELDS + ", ".join(sorted(exc.extra_fields))
    if isinstance(exc, ValueError | TypeError) and tp is not None:
        return f"invalid value, expected {_type_name(tp)}"
    return str(exc) or type(exc).__name__


def _details(exc: BaseException) -> list[tuple[str, str]]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        messages = cattrs.transform_error(exc, "$", _format)
    else:
        messages = [f"{_format(exc, None)} @ $"]
    details = []
    for message in messages:
        reason, _, path = message.rpartition(" @ ")
        path, reason = path or "$", reason or message
        if reason.startswith(_UNKNOWN_FIELDS):
            # Name each unknown field by its own path.
            for name in reason.partition(": ")[2].split(", "):
                details.append((f"{path}.{name}", "unknown field"))
        else:
            details.append((path, reason))
    return details


def structure(
    data: Any, cls: type[T], converter: cattrs.Converter | None = None, *, what: str = ""
) -> T:
    """Build a ``cls`` from JSON data, strictly.

    :raises ValidationError: naming every failing field.
    """
    try:
        return (converter or default_converter()).structure(data, cls)
    except (
        ClassValidationError,
        IterableValidationError,
        ForbiddenExtraKeysError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        details = _details(exc)
        shown = "; ".join(f"{field}: {reason}" for field, reason in details)
        name = what or getattr(cls, "__name__", str(cls))
        raise ValidationError(f"invalid {name}: {shown}", details) from None


def structure_messages(values: list[Any]) -> list[t.Message]:
    """Messages from JSON data (a history's rows), each exactly as :func:`structure` would
    build it or fail: the direct decoder of the stored shapes, every value it does not take
    left to the strict converter.

    :raises ValidationError: for the first value that is not a message.
    """
    fast = _message_fast
    messages: list[t.Message] = []
    append = messages.append
    for value in values:
        try:
            append(fast(value))
        except _NotFast:
            append(structure(value, t.Message))
    return messages


def unstructure(obj: Any, converter: cattrs.Converter | None = None) -> Any:
    """The JSON-ready form of ``obj`` (dicts, lists, strings, numbers, booleans, null)."""
    return (converter or default_converter()).unstructure(obj)


def json_encoder(
    *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """A function giving the JSON text of plain data, compact and UTF-8 (not ``\\u``
    escapes), as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False, ...)`` does.

    Its C encoder is built once, where ``json.dumps`` with options builds a
    :class:`json.JSONEncoder` a call and ``JSONEncoder.encode`` a C encoder a call: three
    quarters of the time of a small value. The data must be a tree, as parsed JSON is (a
    cycle raises :class:`RecursionError`, not ``ValueError``: nothing keeps the containers
    seen, which is the other quarter).
    """
    python = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                              sort_keys=sort_keys, default=default)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return python.encode
    chunks = c_make_encoder(None, python.default, encode_basestring, None, ":", ",",
                            sort_keys, False, True)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


#: JSON text of plain data, compact and UTF-8 (:func:`json_encoder`).
compact_json: Callable[[Any], str] = json_encoder()


def dumps(obj: Any, converter: cattrs.Converter | None = None) -> str:
    """``obj`` as compact JSON text."""
    return compact_json(unstructure(obj, converter))


def loads(text: str | bytes, cls: type[T], converter: cattrs.Converter | None = None) -> T:
    """Parse JSON text into a ``cls``.

    :raises ValidationError: when the text is not JSON or does not match ``cls``.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"malformed JSON: {exc}", [("$", f"malformed JSON: {exc}")]) from None
    return structure(data, cls, converter)

