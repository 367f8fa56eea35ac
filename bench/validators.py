"""Validators and ids: wingspan's own code next to the libraries it could have used.

wingspan validates every tool call's input with :func:`wingspan.schema.compile_validator`
(hand-written closures for the subset of JSON Schema that tool schemas use) and names
sessions, runs and messages with :func:`wingspan.ids.new_id` (a hand-written ULID). This
benchmark times both, per call and on the same inputs, against:

- ``jsonschema``: the validator class for the schema, built once
  (``jsonschema.validators.validator_for(schema)(schema)``), timing ``iter_errors`` drained
  to a list (every error, the work ours does) and ``is_valid`` (a yes/no, for reference);
- ``fastjsonschema``: ``fastjsonschema.compile(schema)``, compiled once, which raises on the
  first error, and the same with ``fast_fail=False``, which collects every error. Both with
  ``use_default=False``: by default the compiled function writes the schema's defaults into
  the input dict it is given, which is not validation and would change the input;
- ``python-ulid``: ``ulid.ULID()`` (the object) and ``str(ulid.ULID())`` (the same 26
  characters ``new_id()`` returns).

The schemas are four tool input schemas: ``add(a: int, b: int)`` and a ``search_notes``
function with a list, a ``Literal`` and an optional parameter, both made by ``@wingspan.tool``
from their type hints, and the built-in ``read`` and ``edit`` tools' (``wingspan.get_tools``).
Each has a valid and an invalid input; before timing, every validator's verdict is checked
against the others. Ratios are the library's time over wingspan's, measured in the same run
(the candidates of a row take turns, one sample each). Libraries that are not installed are
reported as such (``pip install -r bench/requirements.txt`` into ``bench/.venv``). Run from
the repository root::

    bench/.venv/bin/python bench/validators.py
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import platform
import statistics
import sys
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import wingspan
from wingspan.ids import new_id
from wingspan.schema import compile_validator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

RESULTS = Path(__file__).resolve().parent / "results" / "validators.md"


# -------------------------------------------------------------------------------------------
# The schemas and their inputs
# -------------------------------------------------------------------------------------------


@wingspan.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@wingspan.tool
def search_notes(
    query: str,
    tags: list[str],
    limit: int = 20,
    mode: Literal["any", "all"] = "any",
    since: str | None = None,
) -> str:
    """Search the notes carrying some tags."""
    return query


OLD_TEXT = '''def new_id() -> str:
    """Return a new ULID."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000
'''
NEW_TEXT = OLD_TEXT.replace("Return a new ULID.", "Return a new ULID (26 characters).")


@dataclass(frozen=True, slots=True)
class Case:
    """One schema: where it comes from, a valid input and an invalid one."""

    name: str
    schema: Mapping[str, Any]
    valid: Any
    invalid: Any


def cases() -> list[Case]:
    builtin = {t.name: t.input_schema for t in wingspan.get_tools(["read", "edit"])}
    return [
        Case(
            "add (`@wingspan.tool`)",
            add.input_schema,
            valid={"a": 2, "b": 3},
            invalid={"a": 2, "b": "3"},
        ),
        Case(
            "search_notes (`@wingspan.tool`)",
            search_notes.input_schema,
            valid={"query": "retry budget", "tags": ["infra", "http"], "mode": "all",
                   "limit": 5},
            invalid={"query": "retry budget", "tags": ["infra", 7], "mode": "some"},
        ),
        Case(
            "read (built-in)",
            builtin["read"],
            valid={"path": "core/schema.py", "offset": 120, "limit": 40},
            invalid={"path": "core/schema.py", "offset": 0, "limit": "40"},
        ),
        Case(
            "edit (built-in)",
            builtin["edit"],
            valid={"path": "core/ids.py", "old_string": OLD_TEXT, "new_string": NEW_TEXT,
                   "replace_all": False},
            invalid={"path": "core/ids.py", "old_string": OLD_TEXT, "new_text": NEW_TEXT,
                     "replace_all": "yes"},
        ),
    ]


# -------------------------------------------------------------------------------------------
# The candidates: a statement to time, and the number of errors it reports
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to validate an input of one schema.

    :ivar statement: what ``timeit`` runs, with ``value`` bound to the input.
    :ivar namespace: the names the statement uses.
    :ivar errors: the number of errors reported for an input (0: valid).
    """

    statement: str
    namespace: dict[str, Any]
    errors: Callable[[Any], int]


@dataclass(frozen=True, slots=True)
class Library:
    name: str
    distribution: str | None
    #: the candidate for a schema; raises ImportError when the library is missing.
    build: Callable[[Mapping[str, Any]], Candidate]
    #: the row is ours: every ratio is taken to it.
    ours: bool = False


def build_wingspan(schema: Mapping[str, Any]) -> Candidate:
    validate = compile_validator(schema)
    return Candidate("validate(value)", {"validate": validate}, lambda v: len(validate(v)))


def build_jsonschema_iter_errors(schema: Mapping[str, Any]) -> Candidate:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    iter_errors = validator.iter_errors
    return Candidate(
        "list(iter_errors(value))",
        {"iter_errors": iter_errors},
        lambda v: len(list(iter_errors(v))),
    )


def build_jsonschema_is_valid(schema: Mapping[str, Any]) -> Candidate:
    import jsonschema

    is_valid = jsonschema.validators.validator_for(schema)(schema).is_valid
    return Candidate("is_valid(value)", {"is_valid": is_valid}, lambda v: 0 if is_valid(v) else 1)


FASTJSONSCHEMA_STATEMENT = """\
try:
    validate(value)
except JsonSchemaException:
    pass"""


def build_fastjsonschema(schema: Mapping[str, Any], fast_fail: bool = True) -> Candidate:
    import fastjsonschema

    validate = fastjsonschema.compile(dict(schema), use_default=False, fast_fail=fast_fail)

    def errors(value: Any) -> int:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValuesException as error:  # fast_fail=False
            return len(error.errors)
        except fastjsonschema.JsonSchemaValueException:
            return 1
        return 0

    namespace = {"validate": validate, "JsonSchemaException": fastjsonschema.JsonSchemaException}
    return Candidate(FASTJSONSCHEMA_STATEMENT, namespace, errors)


def build_fastjsonschema_all(schema: Mapping[str, Any]) -> Candidate:
    return build_fastjsonschema(schema, fast_fail=False)


LIBRARIES = (
    Library("wingspan", "wingspan", build_wingspan, ours=True),
    Library("jsonschema `iter_errors`", "jsonschema", build_jsonschema_iter_errors),
    Library("jsonschema `is_valid`", "jsonschema", build_jsonschema_is_valid),
    Library("fastjsonschema (first error)", "fastjsonschema", build_fastjsonschema),
    Library("fastjsonschema `fast_fail=False`", "fastjsonschema", build_fastjsonschema_all),
)


def ulid_candidates() -> list[tuple[str, str | None, str, dict[str, Any]]]:
    """(label, distribution, statement, namespace) of each id maker; ours first."""
    rows: list[tuple[str, str | None, str, dict[str, Any]]] = [
        ("wingspan `new_id()`", "wingspan", "new_id()", {"new_id": new_id}),
    ]
    try:
        import ulid
    except ImportError:
        rows.append(("python-ulid `ULID()`", None, "", {}))
        rows.append(("python-ulid `str(ULID())`", None, "", {}))
        return rows
    rows.append(("python-ulid `ULID()`", "python-ulid", "ULID()", {"ULID": ulid.ULID}))
    rows.append(("python-ulid `str(ULID())`", "python-ulid", "str(ULID())", {"ULID": ulid.ULID}))
    return rows


# -------------------------------------------------------------------------------------------
# Measuring
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    #: timed samples per cell; the cell's value is their median.
    samples: int
    #: about how long one sample runs.
    sample_seconds: float


def calibrate(timer: timeit.Timer, seconds: float) -> int:
    """Calls per sample so that one sample takes about ``seconds`` (this is the warm-up)."""
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= seconds / 10:
            return max(1, round(number * seconds / elapsed))
        number *= 10 if elapsed < seconds / 100 else 2


def measure_row(timers: list[timeit.Timer | None], settings: Settings) -> list[float | None]:
    """Median nanoseconds per call of each timer (``None``: skipped). The timers take
    turns, one sample each, so a slower moment of the machine slows them alike.

    ``timeit`` turns the garbage collector off while it times.
    """
    numbers = [None if t is None else calibrate(t, settings.sample_seconds) for t in timers]
    samples: list[list[float]] = [[] for _ in timers]
    for _ in range(settings.samples):
        for timer, number, found in zip(timers, numbers, samples, strict=True):
            if timer is not None and number is not None:
                found.append(timer.timeit(number) / number * 1e9)
    return [statistics.median(found) if found else None for found in samples]


@dataclass(slots=True)
class Row:
    case: str
    kind: str
    #: errors each installed candidate reported, by library name.
    errors: dict[str, int] = field(default_factory=dict)
    #: nanoseconds per call by library name; None: not installed.
    ns: dict[str, float | None] = field(default_factory=dict)


def installed(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def measure_validators(settings: Settings) -> list[Row]:
    rows = []
    for case in cases():
        candidates: dict[str, Candidate | None] = {}
        for library in LIBRARIES:
            try:
                candidates[library.name] = library.build(case.schema)
            except ImportError:
                candidates[library.name] = None
        for kind, value in (("valid", case.valid), ("invalid", case.invalid)):
            print(f"measuring {case.name}, {kind} input...", file=sys.stderr, flush=True)
            row = Row(case.name, kind)
            timers: list[timeit.Timer | None] = []
            for name, candidate in candidates.items():
                if candidate is None:
                    timers.append(None)
                    continue
                # Each candidate gets its own copy: none can see what another did to it.
                own = copy.deepcopy(value)
                row.errors[name] = candidate.errors(own)
                namespace = {**candidate.namespace, "value": own}
                timers.append(timeit.Timer(candidate.statement, globals=namespace))
            verdicts = {name: count > 0 for name, count in row.errors.items()}
            if set(verdicts.values()) != {kind == "invalid"}:
                raise RuntimeError(f"{case.name}: the validators disagree on the {kind} input: "
                                   f"{row.errors}")
            row.ns = dict(zip(candidates, measure_row(timers, settings), strict=True))
            rows.append(row)
    return rows


def measure_ids(settings: Settings) -> list[tuple[str, str | None, float | None]]:
    print("measuring ids...", file=sys.stderr, flush=True)
    makers = ulid_candidates()
    timers = [
        timeit.Timer(statement, globals=namespace) if statement else None
        for _, _, statement, namespace in makers
    ]
    timings = measure_row(timers, settings)
    return [
        (label, installed(distribution), ns)
        for (label, distribution, _, _), ns in zip(makers, timings, strict=True)
    ]


# -------------------------------------------------------------------------------------------
# The table
# -------------------------------------------------------------------------------------------


def cell(ns: float | None, ours: float) -> str:
    if ns is None:
        return "not installed"
    return f"{ns:,.0f} ({ns / ours:.1f}x)"


def span(values: list[float]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:.1f}x" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}x"


def render(
    rows: list[Row], ids: list[tuple[str, str | None, float | None]], settings: Settings
) -> str:
    others = [library.name for library in LIBRARIES if not library.ours]
    header = ["schema", "input", "errors found", "wingspan ns", *others]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---", "---:"] + ["---:"] * len(others)) + "|",
    ]
    for row in rows:
        ours = row.ns["wingspan"]
        assert ours is not None
        errors = " / ".join(str(row.errors[name]) for name in row.errors)
        cells = [cell(row.ns[name], ours) for name in others]
        lines.append(f"| {row.case} | {row.kind} | {errors} | {ours:,.0f} | "
                     + " | ".join(cells) + " |")
    error_order = " / ".join(name for name in row.errors) if rows else ""

    summary = []
    for name in others:
        for kind in ("valid", "invalid"):
            ratios = [
                ns / ours
                for row in rows
                if row.kind == kind
                and (ns := row.ns[name]) is not None
                and (ours := row.ns["wingspan"]) is not None
            ]
            if ratios:
                summary.append(f"- {name}, {kind} input: {span(ratios)} wingspan's time")

    ours_id = ids[0][2]
    assert ours_id is not None
    id_lines = ["| id maker | version | ns per id | x wingspan |", "|---|---|---:|---:|"]
    for label, version, ns in ids:
        if ns is None:
            id_lines.append(f"| {label} | — | not installed | |")
        else:
            id_lines.append(f"| {label} | {version} | {ns:,.0f} | {ns / ours_id:.2f} |")

    versions = ", ".join(
        f"{name} {installed(name) or 'not installed'}"
        for name in ("jsonschema", "fastjsonschema", "python-ulid")
    )
    return "\n".join(
        [
            "# Validators and ids",
            "",
            "Nanoseconds per call of each tool-input validator, compiled or built once, on the "
            "same input; in brackets, its time over wingspan's `compile_validator` (above 1: "
            f"wingspan is faster). Median of {settings.samples} samples (about "
            f"{settings.sample_seconds:g} s each) after warm-up, the candidates of a row taking "
            "turns; lower is better.",
            "",
            f"\"errors found\": how many errors each reported ({error_order}). The first-error "
            "fastjsonschema and `is_valid` stop at one; jsonschema reports all the unknown "
            "fields of an object as one error.",
            "",
            *lines,
            "",
            "Library time over wingspan's, across the schemas:",
            "",
            *summary,
            "",
            "wingspan's yes/no fast path knows `type`, `properties`, `required`, "
            "`additionalProperties`, `items`, `enum`, the numeric bounds and the string "
            "lengths; any other keyword (`pattern`, `anyOf`, ...) goes through the "
            "error-collecting checks. "
            "On an invalid input wingspan runs the fast path, then the error-collecting one.",
            "",
            "## Ids",
            "",
            "Nanoseconds per id, same method. python-ulid's `ULID()` is, like `new_id()`, "
            "monotonic within a millisecond (a lock and an increment); `str(ULID())` is the "
            "same 26 characters `new_id()` returns.",
            "",
            *id_lines,
            "",
            f"{versions}; Python {platform.python_version()} ({sys.implementation.name}) on "
            f"{platform.machine()}, {platform.system()}; measured {time.strftime('%Y-%m-%d')}. "
            "Command: `bench/.venv/bin/python bench/validators.py`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--samples", type=int, default=7, help="samples per cell (default 7)")
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=0.1,
        help="about how long each sample runs (default 0.1)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    settings = Settings(samples=args.samples, sample_seconds=args.sample_seconds)
    rows = measure_validators(settings)
    ids = measure_ids(settings)
    table = render(rows, ids, settings)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
