"""The file tools: read, write and edit, all confined to the work dir.

Blocking file I/O runs in worker threads. Writes replace files atomically (a temporary file
in the same directory, then a rename), so a crash never leaves half a file; write and edit
hold a per-file lock so that two calls of one batch never lose each other's changes.
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import io
import os
import re
import secrets
import stat
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from wingspan import ToolContext, ToolError

from .base import (
    BuiltinTool,
    cut_line,
    given,
    path_subject,
    plural,
    run_blocking,
    setting,
    tool_timeout,
)
from .paths import Location, WorkDir, display, kind_of

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
#: Bytes of one line read at once; the rest of a longer line is read block by block.
LINE_BYTES = 64 * 1024
BLOCK = 1024 * 1024
#: Files larger than this are refused by edit (the ``edit_max_bytes`` setting).
DEFAULT_EDIT_MAX_BYTES = 10 * 1024 * 1024


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
its entries (use glob to find files by pattern). Named pipes, devices and sockets are refused.
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
    return await run_blocking(
        lambda stop: _read(work_dir, path, offset, limit, stop),
        limit=tool_timeout(context), name="read",
    )


def _read(work_dir: WorkDir, path: str, offset: int, limit: int, stop: threading.Event) -> str:
    with work_dir.locate(path) as location:
        shown = work_dir.show(location.real)
        if location.is_dir:
            return _list_directory(location, shown)
        try:
            fd, status = location.open_file()
        except FileNotFoundError:
            raise ToolError(
                f"there is no file {shown!r} in the work dir {display(work_dir.root)}; check "
                "the name, or use glob to find it"
            ) from None
        except OSError as exc:
            raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):  # a directory appeared where the file was
        os.close(fd)
        raise ToolError(f"{shown!r} changed into a directory while being read; try again")
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise ToolError(
            f"{shown} is {kind_of(status.st_mode)}, not a regular file; read reads regular "
            "files only"
        )
    try:
        with open(fd, "rb") as file:
            return _read_lines(file, shown, status.st_size, offset, limit, stop)
    except OSError as exc:
        raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None


def _read_lines(
    file: io.BufferedReader, shown: str, size: int, offset: int, limit: int, stop: threading.Event
) -> str:
    head = file.read(SNIFF)
    if b"\0" in head:
        return f"{shown} is a binary file ({size:,} bytes); read shows text files only."
    file.seek(0)
    lines: list[str] = []
    chars = 0
    number = 0
    full = False
    while True:
        if number + 1 >= offset and (len(lines) >= limit or chars >= MAX_READ_OUTPUT):
            full = bool(file.peek(1))
            break
        if stop.is_set():
            break
        raw = file.readline(LINE_BYTES)
        if not raw:
            break
        number += 1
        whole = raw.endswith(b"\n") or len(raw) < LINE_BYTES
        if number < offset:
            if not whole:
                _skip_line(file, stop)
            continue
        if whole:
            text = raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
            line = cut_line(text, MAX_LINE)
        else:
            text = raw.decode("utf-8", "replace")
            more = len(text) - MAX_LINE + _count_line(file, text, stop)
            line = f"{text[:MAX_LINE]}... [line cut: {more} more characters]"
        entry = f"{number:>6}\t{line}"
        lines.append(entry)
        chars += len(entry) + 1
    if size == 0 and not lines:
        return f"{shown} is empty (0 bytes)."
    if not lines:
        raise ToolError(
            f"offset {offset} is past the end of {shown}, which has {plural(number, 'line')}; "
            "use a smaller offset"
        )
    total = _count_rest(file, size, number) if full else number
    last = offset + len(lines) - 1
    if full:
        of = f"of {total:,} " if total is not None else ""
        lines.append(
            f"\n[Showing lines {offset}-{last} {of}in {shown}. More lines follow: call read "
            f"with offset={last + 1} to continue.]"
        )
    return "\n".join(lines)


def _skip_line(file: io.BufferedReader, stop: threading.Event) -> None:
    """Read past the rest of a long line, holding one block of it at a time."""
    while not stop.is_set():
        block = file.readline(BLOCK)
        if not block or block.endswith(b"\n"):
            return


def _count_line(file: io.BufferedReader, head: str, stop: threading.Event) -> int:
    """Characters in the rest of a long line whose first part decoded to ``head`` (the
    line end not counted), read block by block, never whole."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    count = 0
    last = head[-1:]
    while not stop.is_set():
        block = file.readline(BLOCK)
        ended = block.endswith(b"\n")
        text = decoder.decode(block[:-1] if ended else block, final=not block or ended)
        count += len(text)
        last = text[-1:] if text else last
        if not block or ended:
            break
    return count - 1 if last == "\r" else count


def _count_rest(file: io.BufferedReader, size: int, counted: int) -> int | None:
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


def _list_directory(location: Location, shown: str) -> str:
    try:
        fd = location.open_directory()
        try:
            with os.scandir(fd) as scan:
                names = sorted(
                    display(e.name) + ("/" if e.is_dir(follow_symlinks=False) else "")
                    for e in scan
                )
        finally:
            os.close(fd)
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
        return await run_blocking(
            lambda stop: _write(work_dir, locks, path, data),
            limit=tool_timeout(context), name="write",
        )

    return write


def _write(work_dir: WorkDir, locks: FileLocks, path: str, data: bytes) -> str:
    with work_dir.locate(path) as location:
        shown = work_dir.show(location.real)
        if location.is_dir:
            raise ToolError(f"{shown!r} is a directory; give the path of a file to write")
        with locks.lock_for(location.real):
            try:
                location.make_parents()
                status = location.lstat()
                if status is not None and stat.S_ISDIR(status.st_mode):
                    raise ToolError(f"{shown!r} is a directory; give the path of a file to write")
                if status is not None and not stat.S_ISREG(status.st_mode):
                    raise ToolError(
                        f"{shown} is {kind_of(status.st_mode)}, not a regular file; write "
                        "replaces regular files only"
                    )
                mode = stat.S_IMODE(status.st_mode) if status is not None else None
                replace_atomically(location, data, mode)
            except OSError as exc:
                raise ToolError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    if status is None:
        return f"Wrote {len(data):,} bytes to {shown} (new file)."
    return f"Wrote {len(data):,} bytes to {shown} (replaced {status.st_size:,} bytes)."


def replace_atomically(location: Location, data: bytes, mode: int | None) -> None:
    """Write ``data`` to a new file beside the location's target, flush it to disk, rename
    it over the target; all of it relative to the directory's descriptor, so the file lands
    in the directory that was checked even if its path changes meanwhile.

    A new file gets the usual permissions (0666 less the umask); an existing one keeps
    ``mode``, its own.
    """
    directory, name = location.directory, location.name
    temporary = f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
        dir_fd=directory,
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if mode is not None:
                os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
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
- To create a file, use the write tool. Paths outside the work dir are refused. Files over \
10 MiB (the server may set another limit) are refused: change those with bash."""

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
        max_size = setting(context, "edit_max_bytes", DEFAULT_EDIT_MAX_BYTES)
        return await run_blocking(
            lambda stop: _edit(work_dir, locks, path, old, new, replace_all, max_size),
            limit=tool_timeout(context), name="edit",
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
    work_dir: WorkDir, locks: FileLocks, path: str, old: str, new: str, replace_all: bool,
    max_size: int,
) -> str:
    with work_dir.locate(path) as location:
        shown = work_dir.show(location.real)
        if location.is_dir:
            raise ToolError(f"{shown!r} is a directory; give the path of a file to edit")
        with locks.lock_for(location.real):
            text, updated, count = _edit_file(location, shown, old, new, replace_all, max_size)
    replaced = plural(count if replace_all else 1, "replacement")
    return f"Edited {shown}: {replaced}.\n{_diff(text, updated, shown)}"


def _edit_file(
    location: Location, shown: str, old: str, new: str, replace_all: bool, max_size: int
) -> tuple[str, str, int]:
    try:
        fd, status = location.open_file()
    except FileNotFoundError:
        raise ToolError(
            f"there is no file {shown!r} in the work dir; check the path (glob finds "
            "files), or use write to create it"
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    with open(fd, "rb") as file:
        if not stat.S_ISREG(status.st_mode):
            what = "a directory" if stat.S_ISDIR(status.st_mode) else kind_of(status.st_mode)
            raise ToolError(f"{shown} is {what}, not a regular file; edit changes files only")
        if status.st_size > max_size:
            raise ToolError(_too_big(shown, status.st_size, max_size))
        try:
            data = file.read(max_size + 1)
        except OSError as exc:
            raise ToolError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    if len(data) > max_size:  # it grew since
        raise ToolError(_too_big(shown, len(data), max_size))
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
        replace_atomically(location, encoded, stat.S_IMODE(status.st_mode))
    except OSError as exc:
        raise ToolError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    return text, updated, count


def _too_big(shown: str, size: int, limit: int) -> str:
    return (
        f"{shown} is {_mib(size)} ({size:,} bytes), over edit's limit of {_mib(limit)} "
        f"({limit:,} bytes, the server's 'edit_max_bytes' setting); change it with bash "
        "(e.g. sed) or split the file"
    )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


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
                    body=read, subject=subject),
        BuiltinTool(name="write", description=WRITE_DESCRIPTION, input_schema=WRITE_SCHEMA,
                    body=make_write(locks), subject=subject),
        BuiltinTool(name="edit", description=EDIT_DESCRIPTION, input_schema=EDIT_SCHEMA,
                    body=make_edit(locks), subject=subject),
    ]


def subject(input: Mapping[str, Any], context: ToolContext | None) -> str:
    """What a permission rule on read, write or edit matches: the path, relative to the
    work dir with its links resolved (:func:`.base.path_subject`)."""
    return path_subject(given(input, "path"), context)
