"""Tools: the protocol, the context a call gets, and ``@wingspan.tool``.

A tool has a ``name``, a ``description``, an ``input_schema`` (JSON Schema) and an async
``call(input, context)``. Input is validated against the schema before the call; invalid
input, unknown tools and exceptions become ``is_error`` results for the model, never crashes.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import cattrs

from .errors import ConfigError, ToolError
from .hookspecs import hookimpl
from .schema import SchemaValidator, compile_validator

if TYPE_CHECKING:
    from .types import ToolDefinition

__all__ = [
    "FunctionTool",
    "Tool",
    "ToolContext",
    "ToolInvocation",
    "ToolOutcome",
    "encodable",
    "tool",
]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@runtime_checkable
class Tool(Protocol):
    """What the loop needs of a tool. Plugins may implement it with any class.

    A tool may also have a ``subject`` attribute (it is optional, so not part of the
    protocol): a function ``subject(input: dict, context: ToolContext | None) -> str``
    naming what a person judges of a call (the command, the path, the URL), which
    permission rules match (:func:`wingspan.permissions.subject_of`). It is called before
    the call runs, on the event loop, so it must be cheap and must not raise. Without it
    (or when it is ``None``) the subject is the input as compact JSON.
    """

    @property
    def name(self) -> str:
        """Unique name, 1-64 characters of ``[a-zA-Z0-9_-]``."""

    @property
    def description(self) -> str:
        """What the model is told: what it does, when to use it, its limits."""

    @property
    def input_schema(self) -> Mapping[str, Any]:
        """JSON Schema of the input object."""

    async def call(self, input: dict[str, Any], context: ToolContext) -> str | ToolOutcome:
        """Run the tool with validated input.

        :returns: the output shown to the model (or a :class:`ToolOutcome`).
        :raises ToolError: for failures the model should see and can act on.
        """


def encodable(text: str) -> str:
    """``text``, made encodable as UTF-8 when it is not: a lone surrogate that stands for a
    byte (what ``os.fsdecode`` and ``surrogateescape`` make of bytes that are not UTF-8, in a
    file name or a command's output) shows as ``\\xNN``, any other as ``\\udXXX``.

    A model's request, a store and a JSON response all encode the text as UTF-8, which a
    lone surrogate makes fail: far from the tool that produced it, and after the call. The
    usual text is returned as it is, for the cost of ``str.isascii`` (constant time) or of
    one encoding when it is not ASCII.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no byte made: escape each one by itself
        return _SURROGATE.sub(_escape_surrogate, text)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _content(value: str) -> str:
    # A str subclass (or a tool breaking its protocol with another type) becomes plain text.
    return encodable(value) if type(value) is str else encodable(str(value))


@attrs.frozen(kw_only=True)
class ToolOutcome:
    """A tool's answer: ``content`` for the model, flagged when it reports a failure.

    ``content`` is always encodable as UTF-8 (see :func:`encodable`): whoever builds the
    outcome — the loop from a tool's return value or exception, a tool, a plugin's
    ``wingspan_tool_call`` wrapper — a stray surrogate cannot reach the store or the model.
    """

    content: str = attrs.field(converter=_content)
    is_error: bool = False


@attrs.frozen(kw_only=True)
class ToolContext:
    """What a tool call knows about where it runs.

    :ivar work_dir: the session's work dir (absolute), or ``None`` when it has none.
    :ivar session_id: the session running the tool.
    :ivar run_id: the run the call belongs to.
    :ivar tool_use_id: the id of this call.
    :ivar settings: the runtime's tool settings (limits, allowances), read-only.

    What a ``wingspan_tool_call`` wrapper needs besides (a permission policy, an audit):

    :ivar agent: the agent running the call (its ``permissions``, its id).
    :ivar store: the session's store, ``None`` for a session kept in memory only.
    :ivar emit: sends an event on the run's streams (and its event log) while the call runs,
        e.g. a :class:`~wingspan.PermissionRequested`; ``None`` for a call no wrapper wraps.
    :ivar approve: the run's approval callback (``session.run(..., approve=...)``), if any.
    :ivar answerable: whether a request can be answered outside ``approve``: the run was
        started in the store (:meth:`wingspan.Session.start`), where any process sharing it
        can answer (the HTTP server's runs are).
    :ivar run_data: a mapping the run's calls share, for a plugin's per-run state (key it
        by the plugin's name).
    :ivar session_data: a mapping the session's runs share while the :class:`Session` object
        lives (in memory only), for a plugin's per-session state (key it likewise).

    Cancelling the run cancels the task running the tool: long work must await (or run in a
    subprocess it kills on :class:`asyncio.CancelledError`) so that cancellation reaches it.
    """

    work_dir: Path | None
    session_id: str
    run_id: str
    tool_use_id: str
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    agent: Any = None
    store: Any = None
    emit: Callable[[Any], None] | None = None
    approve: Any = None
    answerable: bool = False
    run_data: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    session_data: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    def require_work_dir(self) -> Path:
        """The work dir, or a :class:`ToolError` the model can read when there is none."""
        if self.work_dir is None:
            raise ToolError(
                "this session has no work dir, so tools cannot touch files or run commands; "
                "create the session with a work_dir"
            )
        return self.work_dir


@attrs.frozen(kw_only=True)
class ToolInvocation:
    """A validated tool call about to run (given to :func:`wingspan_tool_call` wrappers)."""

    tool: Tool
    tool_use_id: str
    input: Mapping[str, Any]


def definition_of(tool: Tool) -> ToolDefinition:
    from .types import ToolDefinition

    return ToolDefinition(
        name=tool.name, description=tool.description, input_schema=tool.input_schema
    )


# -------------------------------------------------------------------------------------------
# Calling a tool
# -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _validator_for(schema_json: str) -> SchemaValidator:
    return compile_validator(json.loads(schema_json))


def validator_of(tool: Tool) -> SchemaValidator:
    """The compiled validator of ``tool``'s input schema (cached)."""
    own = getattr(tool, "validator", None)
    if own is not None:
        return typing.cast(SchemaValidator, own)
    return _validator_for(json.dumps(tool.input_schema, sort_keys=True))


def check_input(tool: Tool, input: Any) -> str | None:
    """Why ``input`` does not fit ``tool``'s schema, or ``None`` when it does."""
    if not isinstance(input, dict):
        return f"invalid input for tool {tool.name!r}: expected a JSON object"
    errors = validator_of(tool)(input)
    if not errors:
        return None
    shown = "; ".join(f"{path}: {reason}" for path, reason in errors[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return f"invalid input for tool {tool.name!r}: {shown}{more}. Fix the input and call it again."


async def run_tool(tool: Tool, input: dict[str, Any], context: ToolContext) -> ToolOutcome:
    """Call ``tool`` with already validated input, turning failures into error outcomes.

    Cancellation propagates; every other exception becomes an ``is_error`` outcome.
    """
    try:
        output = await tool.call(input, context)
    except ToolError as exc:
        return ToolOutcome(
            content=_text_of(exc) or f"tool {tool.name!r} failed", is_error=True
        )
    except Exception as exc:
        return ToolOutcome(
            content=f"tool {tool.name!r} raised {type(exc).__name__}: {_text_of(exc)}",
            is_error=True,
        )
    if isinstance(output, ToolOutcome):
        return output
    if isinstance(output, str):
        return ToolOutcome(content=output)
    # A third-party tool may break its protocol; tell the model rather than crash.
    return ToolOutcome(  # type: ignore[unreachable]
        content=f"tool {tool.name!r} returned {type(output).__name__}, not text", is_error=True
    )


def _text_of(exc: BaseException) -> str:
    """An exception's message (its ``__str__`` may itself fail: then its type says it)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


class KernelToolCall:
    """The innermost ``wingspan_tool_call``: what the wrappers of plugins wrap."""

    @hookimpl(trylast=True)
    def wingspan_tool_call(
        self, invocation: ToolInvocation, context: ToolContext
    ) -> Awaitable[ToolOutcome]:
        return run_tool(invocation.tool, dict(invocation.input), context)


# -------------------------------------------------------------------------------------------
# @wingspan.tool
# -------------------------------------------------------------------------------------------

# Field aliases are the JSON names (an attrs field `_x` is `x`), as in the schemas built here.
_plain_converter = cattrs.Converter(use_alias=True)


@attrs.frozen(kw_only=True)
class FunctionTool:
    """A tool made from a typed Python function by :func:`tool`.

    The function stays callable as it was: ``add(2, 3)`` still returns 5.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]
    function: Callable[..., Any]
    #: Parameters whose values need converting from JSON (attrs classes, enums, tuples...).
    _converted: Mapping[str, Any] = attrs.field(alias="converted", factory=dict)
    _context_parameter: str | None = attrs.field(alias="context_parameter", default=None)
    _is_async: bool = attrs.field(alias="is_async", default=False)
    #: Whether a sync function may block (then it runs in a worker thread).
    blocking: bool = True
    #: What permission rules match of a call (see :class:`Tool`); ``None``: its input as JSON.
    subject: Callable[[Mapping[str, Any], ToolContext | None], str] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    validator: SchemaValidator = attrs.field(eq=False, repr=False)

    @validator.default
    def _compile(self) -> SchemaValidator:
        return compile_validator(self.input_schema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    @property
    def takes_context(self) -> bool:
        """Whether the function takes a :class:`ToolContext` (the loop builds one only then)."""
        return self._context_parameter is not None

    async def call(
        self, input: dict[str, Any], context: ToolContext | None
    ) -> str | ToolOutcome:
        kwargs = input
        if self._converted:
            kwargs = dict(input)
            for name, hint in self._converted.items():
                if name in kwargs:
                    kwargs[name] = _plain_converter.structure(kwargs[name], hint)
        if self._context_parameter is not None:
            kwargs = {**kwargs, self._context_parameter: context}
        if self._is_async:
            value = await self.function(**kwargs)
        elif self.blocking:
            # A sync function may block; keep the event loop free.
            value = await asyncio.to_thread(self.function, **kwargs)
        else:
            value = self.function(**kwargs)  # it said it does not block: no thread hop
        return _to_text(value)


def _to_text(value: Any) -> str | ToolOutcome:
    if isinstance(value, str | ToolOutcome):
        return value
    if value is None:
        return ""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        return json.dumps(value)
    return json.dumps(_plain_converter.unstructure(value), ensure_ascii=False, default=str)


@typing.overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...
@typing.overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = True,
    subject: Callable[[Mapping[str, Any], ToolContext | None], str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = True,
    subject: Callable[[Mapping[str, Any], ToolContext | None], str] | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a typed function (sync or async) into a :class:`Tool`.

    The input schema comes from the type hints (``int``, ``float``, ``str``, ``bool``,
    ``Optional``/``X | None``, ``Literal``, enums, lists, tuples, dicts, nested attrs classes,
    ``Annotated[X, "description"]``); defaults make a parameter optional. The description is
    the docstring's text and each parameter's description comes from its ``:param name:``
    line (or a Google-style ``Args:`` section). A parameter annotated :class:`ToolContext`
    receives the call's context and is not part of the schema. Sync functions run in a worker
    thread, so that one that blocks (on a file, a subprocess, the network) does not stall the
    event loop.

    :param name: the tool's name (default: the function's name).
    :param description: the description (default: the docstring).
    :param blocking: ``False`` says a sync function never blocks (it computes, quickly): it
        is called on the event loop, without the thread hop that costs most of a short
        call. An async function never runs in a thread, whatever this says.
    :param subject: ``subject(input: dict, context: ToolContext | None) -> str``, what a
        person judges of a call, which permission rules match (``{"tool": "deploy",
        "match": "prod*", "action": "ask"}``); it gets the validated input and is called
        on the event loop before the call runs, so it must be cheap and must not raise.
        Default: the input as compact JSON, keys sorted.
    :raises ConfigError: for a parameter whose type has no JSON Schema form, or a
        ``blocking`` or ``subject`` of the wrong kind.
    """

    if not isinstance(blocking, bool):
        raise ConfigError(f"tool(blocking=...) must be True or False, got {blocking!r}")
    if subject is not None and not callable(subject):
        raise ConfigError(
            "tool(subject=...) must be a function (input, context) -> str or None, got "
            f"{subject!r}"
        )

    def make(fn: Callable[..., Any]) -> FunctionTool:
        return _make_function_tool(
            fn, name=name, description=description, blocking=blocking, subject=subject
        )

    if function is not None:
        return make(function)
    return make


def _make_function_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    blocking: bool = True,
    subject: Callable[[Mapping[str, Any], ToolContext | None], str] | None = None,
) -> FunctionTool:
    tool_name = fn.__name__ if name is None else name
    if not _NAME.fullmatch(tool_name):
        raise ConfigError(
            f"tool name {tool_name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
        )
    summary, param_docs = parse_docstring(inspect.getdoc(fn) or "")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {tool_name!r}: cannot resolve its type hints: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    converted: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(
                f"tool {tool_name!r}: *args and **kwargs cannot be described to a model; "
                "name every parameter"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"tool {tool_name!r}: parameter {parameter.name!r} is positional-only; "
                "tools are called with keyword arguments"
            )
        hint = hints.get(parameter.name, Any)
        if _strip_annotated(hint)[0] is ToolContext:
            context_parameter = parameter.name
            continue
        where = f"tool {tool_name!r}, parameter {parameter.name!r}"
        prop = schema_of(hint, where)
        if parameter.name in param_docs and _strip_annotated(hint)[1] is None:
            prop = {**prop, "description": param_docs[parameter.name]}
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _jsonable(parameter.default):
            prop = {**prop, "default": _plain_converter.unstructure(parameter.default)}
        properties[parameter.name] = prop
        if _needs_conversion(hint):
            converted[parameter.name] = hint
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    text = description if description is not None else summary
    if not text:
        raise ConfigError(
            f"tool {tool_name!r} has no description: give the function a docstring saying "
            "what it does, or pass description=..."
        )
    is_async = inspect.iscoroutinefunction(fn)
    result = FunctionTool(
        name=tool_name,
        description=text,
        input_schema=schema,
        function=fn,
        converted=converted,
        context_parameter=context_parameter,
        is_async=is_async,
        blocking=blocking,
        subject=subject,
    )
    return result


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(_plain_converter.unstructure(value))
    except (TypeError, ValueError):
        return False
    return True


def _strip_annotated(hint: Any) -> tuple[Any, str | None]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        text = next((e for e in extras if isinstance(e, str)), None)
        return base, text
    return hint, None


def _needs_conversion(hint: Any) -> bool:
    hint, _ = _strip_annotated(hint)
    if isinstance(hint, type) and (issubclass(hint, enum.Enum) or attrs.has(hint)):
        return True
    origin = typing.get_origin(hint)
    if origin in (tuple, set, frozenset):
        return True
    return any(_needs_conversion(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)


_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
    dict: {"type": "object"},
    list: {"type": "array"},
}


def schema_of(hint: Any, where: str = "value") -> dict[str, Any]:
    """The JSON Schema of a type hint.

    :raises ConfigError: naming ``where`` when the type has no JSON form.
    """
    hint, text = _strip_annotated(hint)
    schema = _schema_of(hint, where)
    if text:
        schema = {**schema, "description": text}
    return schema


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    if hint in _PRIMITIVES:
        return dict(_PRIMITIVES[hint])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        schema: dict[str, Any] = {"enum": list(args)}
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and (kind := next(iter(kinds))) in _PRIMITIVES:
            schema = {**_PRIMITIVES[kind], **schema}
        return schema
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        options = [schema_of(a, where) for a in members]
        if len(members) < len(args):
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        return {"enum": values}
    if isinstance(hint, type) and attrs.has(hint):
        return _attrs_schema(hint, where)
    if origin in (list, set, frozenset) or origin is typing.get_origin(typing.Sequence[int]):
        return {"type": "array", "items": schema_of(args[0], where) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_of(args[0], where)}
        raise ConfigError(f"{where}: fixed-length tuples are not supported; use tuple[X, ...]")
    if origin in (dict, typing.get_origin(typing.Mapping[str, int])):
        if args and args[0] is not str:
            raise ConfigError(f"{where}: JSON object keys are strings; use dict[str, ...]")
        value_schema = schema_of(args[1], where) if args else {}
        return {"type": "object", "additionalProperties": value_schema}
    raise ConfigError(f"{where}: type {hint!r} has no JSON Schema form")


def _attrs_schema(cls: type, where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    summary, field_docs = parse_docstring(inspect.getdoc(cls) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        prop = schema_of(hints.get(field.name, Any), f"{where}, field {field.name!r}")
        if field.name in field_docs and "description" not in prop:
            prop = {**prop, "description": field_docs[field.name]}
        key = field.alias or field.name
        if field.default is attrs.NOTHING:
            required.append(key)
        elif not isinstance(field.default, attrs.Factory) and _jsonable(field.default):  # type: ignore[arg-type]
            prop = {**prop, "default": _plain_converter.unstructure(field.default)}
        properties[key] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if summary:
        schema["description"] = summary
    return schema


_SPHINX_FIELD = re.compile(r"^:(param|parameter|arg|argument|ivar|var)\s+(?:\S+\s+)?(\w+):\s*(.*)$")
_SPHINX_OTHER = re.compile(r"^:\w+")
_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Attributes):\s*$")
_GOOGLE_ENTRY = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into its description and per-parameter texts.

    Understands Sphinx field lists (``:param name: text``) and Google-style ``Args:``
    sections; continuation lines are joined.
    """
    description: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    in_google = False
    google_indent = entry_indent = 0
    for raw in doc.splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if m := _SPHINX_FIELD.match(line):
            current, in_google = m.group(2), False
            params[current] = m.group(3).strip()
            continue
        if _SPHINX_OTHER.match(line):
            current, in_google = None, False
            continue
        if _GOOGLE_SECTION.match(line):
            in_google, current, google_indent = True, None, indent
            continue
        if in_google:
            if not line:
                continue
            if indent <= google_indent:
                in_google, current = False, None
            elif (m := _GOOGLE_ENTRY.match(line)) and (
                current is None or indent <= entry_indent
            ):
                current, entry_indent = m.group(1), indent
                params[current] = m.group(2).strip()
                continue
            elif current is not None:
                params[current] = f"{params[current]} {line}".strip()
                continue
        if current is not None:
            if line:
                params[current] = f"{params[current]} {line}".strip()
                continue
            current = None
            continue
        if not params and not in_google:
            description.append(line)
    return "\n".join(description).strip(), params


AsyncToolFunction = Callable[..., Awaitable[Any]]
