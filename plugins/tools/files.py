"""The file tools: read, write and edit, all confined to the work dir.

Blocking file I/O runs in worker threads. Writes replace files atomically (a temporary file
in the same directory, then a rename), so a crash never leaves half a file; write and edit
hold a per-file lock so that two calls of one batch never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import secrets
import stat
import threading
import weakref
from typing import Any

from wingspan import ToolContext, ToolError

from .base import BuiltinTool, cut_line, plural, run_blocking
from .paths import WorkDir

DEFAULT_LIMIT = 2000
MAX_LINE = 2000
#: Characters of numbered lines one read returns at most, whatever the limit.
MAX_READ_OUTPUT = 100_000
MAX_LISTING = 1000
MAX_DIFF_LINES = 80
#: Bytes looked at to tell a binary file from a text file.
SNIFF = 8192
#: Beyond this many remaining bytes, read says that more remains without counting lines.
MAX_COUNTED = 32 * 1024 * 1024


class FileLocks:
    """One lock per file path, shared by write and edit (threads, so loop-agnostic)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def lock_for(self, real_path: str) -> Any:
        with self._guard:
            lock = self._locks.get(real_path)
            if lock is None:
                lock = self._locks[real_path] = _Lock()
            return lock


class _Lock:
    """A ``threading.Lock`` that a weak reference can point at."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


# -------------------------------------------------------------------------------------------
# read
# -------------------------------------------------------------------------------------------

READ_DESCRIPTION = f"""\
Read a text file from the work dir and return its lines, numbered.

Usage:
- `path` is relative to the work dir (an absolute path is accepted only if it lies inside the \
work dir). Paths that leave the work dir — `..`, absolute paths elsewhere, symbolic links that \
point outside — are refused.
- By default it returns up to {DEFAULT_LIMIT} lines from the start of the file. For longer files \
pass `offset` (the 1-based line number to start at) and `limit` (how many lines); when more \
lines remain, the output ends with a note saying which `offset` reads the next part.
- Output is in `cat -n` format: the line number, a tab, then the line. The number and the tab \
are not part of the file: never copy them into `old_string` of the edit tool.
- Lines longer than {MAX_LINE} characters are cut, with a marker saying how much was cut; one \
call returns at most {MAX_READ_OUTPUT:,} characters.
- Text is decoded as UTF-8; undecodable bytes show as U+FFFD.
- Binary files are not shown (you get a note with their size). A directory gives the list of \
its entries (use glob to find files by pattern).
- Read a file before editing it. Several reads may be issued at once."""

READ_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "The file to read, relative to the work dir."},
        "offset": {
            "type": "integer",
            "minimum": 1,
            "description": "The line number to start reading at (1-based). Default: 1.",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "description": f"How many lines to read. Default: {DEFAULT_LIMIT}.",
        },
    },
    "required": ["path"],
    "additionalProperties": False,
}


async def read(input: dict[str, Any], context: ToolContext) -> str:
    work_dir = WorkDir.of(context)
    path: str = input["path"]
    offset: int = input.get("offset", 1)
    limit: int = input.get("limit", DEFAULT_LIMIT)
    return await run_blocking(lambda stop: _read(work_dir, path, offset, limit, stop))


def _read(work_dir: WorkDir, path: str, offset: int, limit: int, stop: threading.Event) -> str:
    real = work_dir.resolve(path)
    shown = work_dir.show(real)
    if os.path.isdir(real):
        return _list_directory(work_dir, real)
    try:
        with open(real, "rb") as file:
            head = file.read(SNIFF)
            size = os.fstat(file.fileno()).st_size
            if b"\0" in head:
                return (
                    f"{shown} is a binary file ({size:,} bytes); read shows text files only."
                )
            file.seek(0)
            lines: list[str] = []
            chars = 0
            number = 0
            full = False
            for raw in file:
                number += 1
                if number < offset:
                    continue
                if len(lines) >= limit or chars >= MAX_READ_OUTPUT:
                    full = True
                    break
                if stop.is_set():
                    break
                text = raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
                line = f"{number:>6}\t{cut_line(text, MAX_LINE)}"
                lines.append(line)
                chars += len(line) + 1
            total = number if not full else _count_rest(file, size, number)
    except FileNotFoundError:
        raise ToolError(
            f"there is no file {shown!r} in the work dir {work_dir.root}; check the name, or "
            "use glob to find it"
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    if size == 0:
        return f"{shown} is empty (0 bytes)."
    if not lines:
        raise ToolError(
            f"offset {offset} is past the end of {shown}, which has {plural(number, 'line')}; "
            "use a smaller offset"
        )
    last = offset + len(lines) - 1
    if full:
        of = f"of {total:,} " if total is not None else ""
        lines.append(
            f"\n[Showing lines {offset}-{last} {of}in {shown}. More lines follow: call read "
            f"with offset={last + 1} to continue.]"
        )
    return "\n".join(lines)


def _count_rest(file: Any, size: int, counted: int) -> int | None:
    """The file's total line count, from the line just read on, or ``None`` when the rest
    is too large to count quickly."""
    if size - file.tell() > MAX_COUNTED:
        return None
    newlines = 0
    last = b"\n"
    while chunk := file.read(1 << 20):
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    return counted + newlines + (0 if last == b"\n" else 1)


def _list_directory(work_dir: WorkDir, real: str) -> str:
    shown = work_dir.show(real)
    try:
        with os.scandir(real) as scan:
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in scan)
    except OSError as exc:
        raise ToolError(f"cannot list the directory {shown!r}: {exc.strerror or exc}") from None
    if not names:
        return f"{shown} is an empty directory."
    listing = "\n".join(names[:MAX_LISTING])
    more = (
        f"\n[{len(names) - MAX_LISTING} more entries not shown; use glob to narrow down.]"
        if len(names) > MAX_LISTING else ""
    )
    entries = "1 entry" if len(names) == 1 else f"{len(names)} entries"
    return (
        f"{shown} is a directory, not a file; its {entries} (directories end with '/'):\n"
        f"{listing}{more}"
    )


# -------------------------------------------------------------------------------------------
# write
# -------------------------------------------------------------------------------------------

WRITE_DESCRIPTION = """\
Write a file in the work dir, replacing it if it exists.

Usage:
- `path` is relative to the work dir; paths outside it (`..`, absolute paths elsewhere, \
symbolic links pointing outside) are refused. Missing parent directories are created.
- `content` is written exactly as given, encoded as UTF-8: include the final newline if the \
file should end with one.
- The file is replaced atomically: readers see the old or the new content, never half of it. \
An existing file keeps its permissions.
- Answers with the number of bytes written.
- Prefer the edit tool to change part of an existing file; use write for new files or full \
rewrites, and read an existing file before overwriting it."""

WRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "The file to write, relative to the work dir."},
        "content": {"type": "string", "description": "The complete new content of the file."},
    },
    "required": ["path", "content"],
    "additionalProperties": False,
}


def make_write(locks: FileLocks) -> Any:
    async def write(input: dict[str, Any], context: ToolContext) -> str:
        work_dir = WorkDir.of(context)
        path: str = input["path"]
        data = input["content"].encode("utf-8", "replace")
        return await run_blocking(lambda stop: _write(work_dir, locks, path, data))

    return write


def _write(work_dir: WorkDir, locks: FileLocks, path: str, data: bytes) -> str:
    real = work_dir.resolve(path)
    shown = work_dir.show(real)
    if real == work_dir.root or os.path.isdir(real):
        raise ToolError(f"{shown!r} is a directory; give the path of a file to write")
    with locks.lock_for(real):
        try:
            previous = os.stat(real).st_size if os.path.exists(real) else None
            os.makedirs(os.path.dirname(real), exist_ok=True)
            replace_atomically(real, data)
        except OSError as exc:
            raise ToolError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    if previous is None:
        return f"Wrote {len(data):,} bytes to {shown} (new file)."
    return f"Wrote {len(data):,} bytes to {shown} (replaced {previous:,} bytes)."


def replace_atomically(real: str, data: bytes) -> None:
    """Write ``data`` to a new file beside ``real``, flush it to disk, rename it over ``real``.

    A new file gets the usual permissions (0666 less the umask); an existing one keeps its own.
    """
    directory, name = os.path.split(real)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = None
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -------------------------------------------------------------------------------------------
# edit
# -------------------------------------------------------------------------------------------

EDIT_DESCRIPTION = """\
Replace exact text in a file of the work dir.

Usage:
- Read the file first. `old_string` must match the file's text exactly, including \
indentation and whitespace; copy it from the read output *without* the line-number prefix \
(the number and the tab before each line).
- By default `old_string` must occur exactly once: include enough surrounding lines to make \
it unique. Set `replace_all` to true to replace every occurrence (e.g. to rename a variable).
- `new_string` must differ from `old_string`; an empty `new_string` deletes the text.
- Line endings (LF or CRLF) and the encoding (UTF-8, with or without BOM, UTF-16 with BOM, \
or single-byte) are preserved: write `old_string` and `new_string` with plain newlines.
- When `old_string` is not found the error shows the closest lines of the file; when it \
occurs more than once the error gives the count and line numbers.
- Answers with a short diff of the change. The file is replaced atomically.
- To create a file, use the write tool. Paths outside the work dir are refused."""

EDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "The file to edit, relative to the work dir."},
        "old_string": {"type": "string", "description": "The exact text to replace."},
        "new_string": {
            "type": "string",
            "description": "The text to replace it with (must differ from old_string).",
        },
        "replace_all": {
            "type": "boolean",
            "description": "Replace every occurrence of old_string. Default: false.",
        },
    },
    "required": ["path", "old_string", "new_string"],
    "additionalProperties": False,
}

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_LINE_NUMBER_PREFIX = re.compile(r"^\s*\d+\t", re.MULTILINE)


def make_edit(locks: FileLocks) -> Any:
    async def edit(input: dict[str, Any], context: ToolContext) -> str:
        work_dir = WorkDir.of(context)
        old: str = input["old_string"]
        new: str = input["new_string"]
        if old == new:
            raise ToolError(
                "old_string and new_string are the same, so there is nothing to change; "
                "give the new text in new_string"
            )
        if not old:
            raise ToolError(
                "old_string is empty; give the exact text to replace (use write to create a "
                "file or replace all of it)"
            )
        replace_all: bool = input.get("replace_all", False)
        path: str = input["path"]
        return await run_blocking(
            lambda stop: _edit(work_dir, locks, path, old, new, replace_all)
        )

    return edit


def _decode(data: bytes, shown: str) -> tuple[bytes, str, str]:
    """``(bom, encoding, text)`` of a file's bytes, such that encoding ``text`` with
    ``encoding`` after ``bom`` gives the same bytes back."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return bom, encoding, data[len(bom):].decode(encoding)
            except UnicodeDecodeError:
                break
    if b"\0" in data[:SNIFF]:
        raise ToolError(f"{shown} is a binary file; edit changes text files only")
    try:
        return b"", "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        # A single-byte encoding (latin-1, cp1252...): latin-1 maps every byte to one
        # character and back, so the bytes we do not touch stay exactly as they were.
        return b"", "latin-1", data.decode("latin-1")


def _edit(
    work_dir: WorkDir, locks: FileLocks, path: str, old: str, new: str, replace_all: bool
) -> str:
    real = work_dir.resolve(path)
    shown = work_dir.show(real)
    if os.path.isdir(real):
        raise ToolError(f"{shown!r} is a directory; give the path of a file to edit")
    with locks.lock_for(real):
        try:
            with open(real, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            raise ToolError(
                f"there is no file {shown!r} in the work dir; check the path (glob finds "
                "files), or use write to create it"
            ) from None
        except OSError as exc:
            raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
        bom, encoding, text = _decode(data, shown)
        count = text.count(old)
        if count == 0 and "\r\n" in text and "\r" not in old:
            # The model writes plain newlines; the file uses CRLF.
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            count = text.count(old)
        if count == 0:
            raise ToolError(_not_found(text, old, shown))
        if count > 1 and not replace_all:
            lines = _match_lines(text, old)
            raise ToolError(
                f"old_string occurs {count} times in {shown} (at lines {lines}); include "
                "more surrounding lines to make it unique, or set replace_all to true to "
                "replace every occurrence"
            )
        updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        try:
            encoded = bom + updated.encode(encoding)
        except UnicodeEncodeError:
            raise ToolError(
                f"{shown} is encoded as {encoding}, which cannot hold some characters of "
                "new_string; use characters that encoding has"
            ) from None
        try:
            replace_atomically(real, encoded)
        except OSError as exc:
            raise ToolError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    replaced = plural(count if replace_all else 1, "replacement")
    return f"Edited {shown}: {replaced}.\n{_diff(text, updated, shown)}"


def _match_lines(text: str, old: str, most: int = 10) -> str:
    numbers: list[str] = []
    start = text.find(old)
    while start != -1 and len(numbers) < most:
        numbers.append(str(text.count("\n", 0, start) + 1))
        start = text.find(old, start + 1)
    return ", ".join(numbers) + (", ..." if start != -1 else "")


def _not_found(text: str, old: str, shown: str) -> str:
    message = f"old_string was not found in {shown}."
    if _LINE_NUMBER_PREFIX.search(old):
        message += (
            " It seems to contain line-number prefixes from read's output (a number and a "
            "tab): remove them."
        )
    elif " ".join(old.split()) in " ".join(text.split()):
        message += (
            " It matches only if whitespace is ignored: copy the exact indentation and line "
            "breaks from the file."
        )
    closest = _closest(text, old)
    if closest:
        message += f" The closest lines of the file are:\n{closest}\n"
    return message + "Read the file again and copy old_string exactly."


def _closest(text: str, old: str, window_limit: int = 20) -> str:
    """The lines of ``text`` most like ``old``, numbered like read's output."""
    lines = text.splitlines()
    wanted = [line.strip() for line in old.splitlines() if line.strip()]
    if not lines or not wanted:
        return ""
    first = wanted[0]
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(first)
    best, best_ratio = -1, 0.0
    for i, line in enumerate(lines[:50_000]):
        candidate = line.strip()
        if not candidate:
            continue
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    if best < 0 or best_ratio < 0.5:
        return ""
    span = min(max(len(old.splitlines()), 1), window_limit)
    return "\n".join(
        f"{n + 1:>6}\t{cut_line(lines[n], 200)}" for n in range(best, min(best + span, len(lines)))
    )


def _diff(before: str, after: str, shown: str) -> str:
    diff = list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), f"a/{shown}", f"b/{shown}",
            n=2, lineterm="",
        )
    )
    if len(diff) > MAX_DIFF_LINES:
        cut = len(diff) - MAX_DIFF_LINES
        diff = [*diff[:MAX_DIFF_LINES], f"[... {cut} more diff lines not shown ...]"]
    return "\n".join(cut_line(line, 300) for line in diff)


def file_tools() -> list[BuiltinTool]:
    locks = FileLocks()
    return [
        BuiltinTool(name="read", description=READ_DESCRIPTION, input_schema=READ_SCHEMA,
                    body=read),
        BuiltinTool(name="write", description=WRITE_DESCRIPTION, input_schema=WRITE_SCHEMA,
                    body=make_write(locks)),
        BuiltinTool(name="edit", description=EDIT_DESCRIPTION, input_schema=EDIT_SCHEMA,
                    body=make_edit(locks)),
    ]
