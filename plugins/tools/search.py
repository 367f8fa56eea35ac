"""The search tools: glob (files by name) and grep (lines by content), confined to the
work dir. Both walk the tree in a worker thread that stops as soon as the call is cancelled.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Mapping
from typing import Any

from wingspan import ToolContext, ToolError

from .base import BuiltinTool, cut_line, given, path_subject, plural, run_blocking, tool_timeout
from .paths import Location, WorkDir, display, kind_of

MAX_GLOB_RESULTS = 1000
MAX_GREP_MATCHES = 250
MAX_GREP_LINE = 400
MAX_BRACE_EXPANSIONS = 64
#: Files are searched in blocks of this size, cut at line ends (big files never load whole).
BLOCK = 4 * 1024 * 1024
FIRST_READ = 64 * 1024
SNIFF = 8192
_MAGIC = frozenset("*?[")
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")

# -------------------------------------------------------------------------------------------
# Glob patterns
# -------------------------------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """``a.{js,ts}`` -> ``["a.js", "a.ts"]`` (nested braces too)."""
    depth, start = 0, -1
    for i, char in enumerate(pattern):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                options, level, begin = [], 0, start + 1
                for j in range(start + 1, i):
                    if pattern[j] == "{":
                        level += 1
                    elif pattern[j] == "}":
                        level -= 1
                    elif pattern[j] == "," and level == 0:
                        options.append(pattern[begin:j])
                        begin = j + 1
                options.append(pattern[begin:i])
                if len(options) == 1:
                    continue
                head, tail = pattern[:start], pattern[i + 1:]
                expanded: list[str] = []
                for option in options:
                    expanded.extend(expand_braces(head + option + tail))
                    if len(expanded) > MAX_BRACE_EXPANSIONS:
                        raise ToolError(
                            f"the pattern {pattern!r} expands to more than "
                            f"{MAX_BRACE_EXPANSIONS} alternatives; use fewer braces"
                        )
                return expanded
    return [pattern]


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = segment[i + 1:end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^/' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> str:
    """The regex (without anchors) of one brace-free glob over ``/``-separated relative
    paths: ``*``, ``?`` and ``[...]`` stay within a path segment; a ``**`` segment matches
    zero or more whole segments."""
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return "".join(parts)


class GlobMatcher:
    """A glob pattern (braces expanded) matched against paths relative to a directory."""

    def __init__(self, pattern: str) -> None:
        if "\0" in pattern:
            raise ToolError("the pattern contains a NUL character")
        alternatives = expand_braces(pattern)
        for alternative in alternatives:
            if ".." in alternative.split("/"):
                raise ToolError(
                    f"the pattern {pattern!r} contains '..'; patterns match below `path`: "
                    "set `path` to another directory inside the work dir instead"
                )
        self._regex = re.compile(
            "|".join(f"(?:{glob_regex(a)})" for a in alternatives), re.DOTALL
        )
        segments = [[s for s in a.split("/") if s not in ("", ".")] for a in alternatives]
        #: How deep a match can be (None: any depth, with ``**``).
        self.max_depth: int | None = None
        if not any("**" in s for a in segments for s in a):
            self.max_depth = max(len(a) for a in segments)
        #: The literal directory a single alternative starts with (walk only that).
        literal: list[str] = []
        if len(segments) == 1:
            for segment in segments[0][:-1]:
                if _MAGIC & set(segment) or segment == "**":
                    break
                literal.append(segment)
        self.prefix = "/".join(literal)

    def matches(self, relative: str) -> bool:
        """Whether the path matches, as it is or as the model sees it (its bytes that are
        not UTF-8 shown as ``\\xNN``, see :func:`.paths.display`)."""
        if self._regex.fullmatch(relative) is not None:
            return True
        shown = display(relative)
        return shown is not relative and self._regex.fullmatch(shown) is not None


# -------------------------------------------------------------------------------------------
# glob
# -------------------------------------------------------------------------------------------

GLOB_DESCRIPTION = f"""\
Find files by name pattern in the work dir; returns their paths, most recently modified first.

Usage:
- Pattern syntax: `*` matches any characters within one path segment, `?` one character, \
`[abc]` one of a set, `{{a,b}}` either alternative, and a `**` segment matches zero or more \
directories. `*.py` matches only files directly in `path`; use `**/*.py` to search all \
subdirectories, `src/**/*.{{ts,tsx}}` for TypeScript under src.
- The pattern is matched against paths relative to `path` (default: the work dir); `path` \
must be a directory inside the work dir.
- Returns files only, one path per line, relative to the work dir, sorted by modification \
time (newest first). At most {MAX_GLOB_RESULTS} paths; beyond that it says how many more \
matched — narrow the pattern or path.
- Skips version-control folders (`.git`, `.hg`, `.svn`, ...). Hidden files and \
directories are included. Symbolic links to directories are not followed; links to files \
outside the work dir are skipped.
- Use grep to search file contents."""

GLOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pattern": {
            "type": "string",
            "description": "The glob pattern, e.g. `**/*.py` or `src/**/test_*.{js,ts}`.",
        },
        "path": {
            "type": "string",
            "description": "The directory to search in, relative to the work dir. Default: "
            "the work dir.",
        },
    },
    "required": ["pattern"],
    "additionalProperties": False,
}


async def glob(input: dict[str, Any], context: ToolContext) -> str:
    work_dir = WorkDir.of(context)
    pattern: str = input["pattern"]
    path: str = input.get("path", ".")
    return await run_blocking(
        lambda stop: _glob(work_dir, pattern, path, stop),
        limit=tool_timeout(context), name="glob",
    )


def _search_dir(work_dir: WorkDir, path: str) -> Location:
    location = work_dir.locate(path)
    if not location.is_dir:
        try:
            what = "not found" if location.lstat() is None else "a file"
        except OSError as exc:
            what = f"not readable ({exc.strerror or exc})"
        finally:
            location.close()
        raise ToolError(
            f"`path` {path!r} is {what}; give a directory inside the work dir (or leave it out "
            "to search the whole work dir)"
        )
    return location


def _glob(work_dir: WorkDir, pattern: str, path: str, stop: threading.Event) -> str:
    with _search_dir(work_dir, path) as location:
        base = location.real
        if os.path.isabs(pattern):
            prefix = base.rstrip("/") + "/"
            if not pattern.startswith(prefix):
                raise ToolError(
                    f"the pattern {pattern!r} is absolute and not under {display(base)}; use a "
                    "pattern relative to `path`"
                )
            pattern = pattern[len(prefix):]
        matcher = GlobMatcher(pattern)
        found = _glob_walk(work_dir, location, matcher, stop)
    if stop.is_set():
        return ""
    if found is None or not found:
        return _no_glob_match(pattern, _where(work_dir, base))
    found.sort()
    shown = [work_dir.show(p) for _, p in found[:MAX_GLOB_RESULTS]]
    text = "\n".join(shown)
    if len(found) > MAX_GLOB_RESULTS:
        more = len(found) - MAX_GLOB_RESULTS
        text += (
            f"\n[{plural(more, 'more file')} matched but not shown ({len(found)} in all); "
            "narrow the pattern or path.]"
        )
    return text


def _glob_walk(
    work_dir: WorkDir, base: Location, matcher: GlobMatcher, stop: threading.Event
) -> list[tuple[float, str]] | None:
    """``(-mtime, path)`` of the matching files, or ``None`` when the pattern's literal
    directory does not exist."""
    top = base
    if matcher.prefix:
        top = work_dir.locate(os.path.join(work_dir.relative(base.real), matcher.prefix))
        if not top.is_dir:
            top.close()
            return None
    base_prefix = base.real.rstrip("/") + "/"
    depth = None
    if matcher.max_depth is not None:
        depth = matcher.max_depth - (matcher.prefix.count("/") + 1 if matcher.prefix else 0)
    found: list[tuple[float, str]] = []
    try:
        for entry in work_dir.walk_files(top, stop, max_depth=depth):
            relative = entry.path[len(base_prefix):]
            if matcher.matches(relative):
                try:
                    mtime = entry.stat().st_mtime
                except (OSError, ToolError):
                    continue
                found.append((-mtime, entry.path))
    finally:
        if top is not base:
            top.close()
    return found


def _no_glob_match(pattern: str, shown_base: str) -> str:
    hint = "" if "**" in pattern else " (to search subdirectories too, start it with `**/`)"
    return f"No files match {pattern!r} in {shown_base}{hint}."


def _where(work_dir: WorkDir, real: str) -> str:
    return "the work dir" if real == work_dir.root else work_dir.show(real)


# -------------------------------------------------------------------------------------------
# grep
# -------------------------------------------------------------------------------------------

GREP_DESCRIPTION = f"""\
Search file contents in the work dir with a regular expression; returns the matching lines.

Usage:
- `pattern` is a Python regular expression (`re` syntax), matched against each line: `^` \
and `$` anchor at line boundaries, e.g. `def \\w+_test`, `TODO|FIXME`, `^import `. Escape \
special characters (`.`, `(`, `[`, `*`, `+`, `?`, `{{`, `\\`, `|`) with a backslash to match \
them literally. Matching is case-sensitive; start the pattern with `(?i)` to ignore case.
- `path` is a directory (searched recursively) or a single file, relative to the work dir \
(default: the whole work dir).
- `include` keeps only files whose name matches a glob, e.g. `*.py` or `*.{{ts,tsx}}` (a glob \
containing `/` is matched against the path relative to `path`).
- Every text file is searched, whatever its extension; binary files (with NUL bytes) are \
skipped, as are version-control folders (`.git`, ...). Files are read as UTF-8.
- Output: one line per match, `path:line: text`, paths relative to the work dir, in path \
order. At most {MAX_GREP_MATCHES} matching lines are shown (each cut at {MAX_GREP_LINE} \
characters); beyond that it says how many more there are — narrow the pattern, path or include.
- Use glob to find files by name, and read to see a match in context."""

GREP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pattern": {
            "type": "string",
            "description": "The regular expression (Python syntax) to search for.",
        },
        "path": {
            "type": "string",
            "description": "The directory or file to search, relative to the work dir. "
            "Default: the work dir.",
        },
        "include": {
            "type": "string",
            "description": "Only search files whose name matches this glob, e.g. `*.py`.",
        },
    },
    "required": ["pattern"],
    "additionalProperties": False,
}


async def grep(input: dict[str, Any], context: ToolContext) -> str:
    work_dir = WorkDir.of(context)
    pattern: str = input["pattern"]
    try:
        regex = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ToolError(
            f"invalid regular expression {pattern!r}: {display(str(exc))}. Use Python `re` "
            "syntax; escape special characters such as ( [ { . * + ? | \\ with a backslash "
            "to match them literally"
        ) from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise ToolError(
            f"cannot use the regular expression {pattern!r}: {display(str(exc))}"
        ) from None
    include = input.get("include")
    include_matcher = None
    if include:
        include_matcher = GlobMatcher(include)
    path: str = input.get("path", ".")
    search = Grep(work_dir, regex, include_matcher, include is not None and "/" in include)
    return await run_blocking(
        lambda stop: search.run(path, stop), limit=tool_timeout(context), name="grep"
    )


class Grep:
    """One grep call: the pattern, the filter, and the matches found so far."""

    def __init__(
        self,
        work_dir: WorkDir,
        regex: re.Pattern[str],
        include: GlobMatcher | None,
        include_by_path: bool,
    ) -> None:
        self.work_dir = work_dir
        self.regex = regex
        self.include = include
        self.include_by_path = include_by_path
        # A pattern without regex syntax is a plain string: skip files without its bytes
        # before decoding them (most files, in a typical search).
        literal = regex.pattern
        self.literal: bytes | None = None
        if literal and not (_REGEX_SPECIAL & set(literal)):
            # A lone surrogate (from the model's JSON) has no UTF-8 bytes: no shortcut.
            with contextlib.suppress(UnicodeEncodeError):
                self.literal = literal.encode()
        self.lines: list[str] = []
        self.matches = 0
        self.files = 0
        self.unreadable = 0

    def run(self, path: str, stop: threading.Event) -> str:
        work_dir = self.work_dir
        with work_dir.locate(path) as location:
            real = location.real
            if location.is_dir:
                prefix = real.rstrip("/") + "/"
                include, by_path = self.include, self.include_by_path
                for entry in work_dir.walk_files(location, stop):
                    if include is not None and not include.matches(
                        entry.path[len(prefix):] if by_path else entry.name
                    ):
                        continue
                    try:
                        fd = entry.open_regular()
                    except (OSError, ToolError):
                        self.unreadable += 1
                        continue
                    if fd is not None:
                        self.search_file(fd, entry.path, stop)
            else:
                try:
                    fd, status = location.open_file()
                except FileNotFoundError:
                    raise ToolError(
                        f"there is no file or directory {path!r} in the work dir; check the "
                        "path (or leave it out to search the whole work dir)"
                    ) from None
                except OSError as exc:
                    raise ToolError(
                        f"cannot read {work_dir.show(real)!r}: {exc.strerror or exc}"
                    ) from None
                if not stat.S_ISREG(status.st_mode):
                    os.close(fd)
                    raise ToolError(
                        f"{work_dir.show(real)} is {kind_of(status.st_mode)}, not a regular "
                        "file; grep searches regular files only"
                    )
                self.search_file(fd, real, stop)
        if stop.is_set():
            return ""
        if not self.matches:
            return f"No matches for {self.regex.pattern!r} in {_where(work_dir, real)}."
        text = "\n".join(self.lines)
        if self.matches > len(self.lines):
            more = self.matches - len(self.lines)
            text += (
                f"\n[{plural(more, 'more matching line')} not shown ({self.matches} in "
                f"{plural(self.files, 'file')}); narrow the pattern, path or include.]"
            )
        if self.unreadable:
            text += f"\n[{plural(self.unreadable, 'file')} could not be read.]"
        return text

    def search_file(self, fd: int, real: str, stop: threading.Event) -> None:
        """Search the open file ``fd`` (found at ``real``), and close it."""
        before = self.matches
        try:
            # A small first read: allocating a large buffer for every small file costs more
            # than reading a big file in two steps.
            block = os.read(fd, FIRST_READ)
            if b"\0" in block[:SNIFF]:
                return
            if len(block) < FIRST_READ:  # the whole file: the usual case
                if self.literal is None or self.literal in block:
                    self._search(real, block, 1)
                return
            line = 1
            carry = b""
            while block and not stop.is_set():
                data = carry + block
                end = data.rfind(b"\n") + 1
                if end == 0:  # one giant line so far: search what we have
                    end = len(data)
                data, carry = data[:end], data[end:]
                if self.literal is None or self.literal in data:
                    self._search(real, data, line)
                line += data.count(b"\n")
                block = os.read(fd, BLOCK)
            if carry and (self.literal is None or self.literal in carry):
                self._search(real, carry, line)
        except OSError:
            self.unreadable += 1
        finally:
            os.close(fd)
            if self.matches > before:
                self.files += 1

    def _search(self, real: str, data: bytes, first_line: int) -> None:
        text = data.decode("utf-8", "replace")
        search = self.regex.search
        match = search(text)
        if match is None:
            return
        lines = self.lines
        size = len(text)
        found = 0
        number, counted = first_line, 0
        while match is not None:
            at = match.start()
            end = text.find("\n", at)
            if end == -1:
                end = size
            # A match may run past the end of its line (`\s` matches newlines); what counts
            # is a match within one line, as for grep.
            if match.end() <= end or search(text[text.rfind("\n", 0, at) + 1:end]):
                found += 1
                if len(lines) < MAX_GREP_MATCHES:
                    start = text.rfind("\n", 0, at) + 1
                    number += text.count("\n", counted, start)
                    counted = start
                    line = cut_line(text[start:end].removesuffix("\r"), MAX_GREP_LINE)
                    lines.append(f"{self.work_dir.show(real)}:{number}: {line}")
            if end >= size:
                break
            match = search(text, end + 1)
        self.matches += found


def search_tools() -> list[BuiltinTool]:
    return [
        BuiltinTool(name="glob", description=GLOB_DESCRIPTION, input_schema=GLOB_SCHEMA,
                    body=glob, subject=subject),
        BuiltinTool(name="grep", description=GREP_DESCRIPTION, input_schema=GREP_SCHEMA,
                    body=grep, subject=subject),
    ]


def subject(input: Mapping[str, Any], context: ToolContext | None) -> str:
    """What a permission rule on glob or grep matches: ``"<pattern> in <path>"``, the
    pattern as given and the path searched relative to the work dir (``.`` for the work
    dir itself; :func:`.base.path_subject`)."""
    return f"{given(input, 'pattern')} in {path_subject(given(input, 'path', '.'), context)}"
