"""read, write and edit: what the model sees, and what ends up on disk."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

import pytest

import wingspan

from .conftest import call

# --- read -------------------------------------------------------------------------------------


async def test_read_numbers_lines_and_pages_through_long_files(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "long.txt").write_text("".join(f"line {n}\n" for n in range(1, 2501)))
    first = await call(runtime, "read", {"path": "long.txt"}, work_dir)
    lines = first.content.splitlines()
    assert lines[0] == "     1\tline 1" and lines[1999] == "  2000\tline 2000"
    assert "lines 1-2000 of 2,500" in first.content and "offset=2001" in first.content
    rest = await call(runtime, "read", {"path": "long.txt", "offset": 2001}, work_dir)
    assert rest.content.splitlines()[0] == "  2001\tline 2001"
    assert rest.content.splitlines()[-1] == "  2500\tline 2500"  # the end: no note
    window = await call(runtime, "read", {"path": "long.txt", "offset": 10, "limit": 2},
                        work_dir)
    assert window.content.splitlines()[:2] == ["    10\tline 10", "    11\tline 11"]
    assert "offset=12" in window.content
    past = await call(runtime, "read", {"path": "long.txt", "offset": 9999}, work_dir)
    assert past.is_error and "2500 lines" in past.content


async def test_read_cuts_long_lines_and_replaces_bad_bytes(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "wide.txt").write_bytes(b"x" * 2500 + b"\r\nbad \xff byte\n")
    out = await call(runtime, "read", {"path": "wide.txt"}, work_dir)
    first, second = out.content.splitlines()
    assert first == "     1\t" + "x" * 2000 + "... [line cut: 500 more characters]"
    assert second == "     2\tbad \ufffd byte"


async def test_read_explains_binaries_directories_and_missing_files(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (work_dir / "pkg").mkdir()
    (work_dir / "pkg" / "a.py").write_text("")
    (work_dir / "pkg" / "sub").mkdir()
    (work_dir / "empty.txt").write_text("")
    binary = await call(runtime, "read", {"path": "image.png"}, work_dir)
    assert "binary file (11 bytes)" in binary.content
    listing = await call(runtime, "read", {"path": "pkg"}, work_dir)
    assert "is a directory" in listing.content and listing.content.endswith("a.py\nsub/")
    missing = await call(runtime, "read", {"path": "nope.txt"}, work_dir)
    assert missing.is_error and "glob" in missing.content
    empty = await call(runtime, "read", {"path": "empty.txt"}, work_dir)
    assert "empty" in empty.content and not empty.is_error


# --- write ------------------------------------------------------------------------------------


async def test_write_creates_parents_and_reports_bytes(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    out = await call(runtime, "write", {"path": "a/b/c.txt", "content": "héllo\n"}, work_dir)
    assert out.content == "Wrote 7 bytes to a/b/c.txt (new file)."
    assert (work_dir / "a/b/c.txt").read_bytes() == "héllo\n".encode()
    again = await call(runtime, "write", {"path": "a/b/c.txt", "content": ""}, work_dir)
    assert again.content == "Wrote 0 bytes to a/b/c.txt (replaced 7 bytes)."
    folder = await call(runtime, "write", {"path": "a", "content": "x"}, work_dir)
    assert folder.is_error and "directory" in folder.content


async def test_write_is_atomic_and_keeps_permissions(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    script = work_dir / "run.sh"
    script.write_text("old\n")
    script.chmod(0o750)
    before = os.stat(script).st_ino
    await call(runtime, "write", {"path": "run.sh", "content": "new\n"}, work_dir)
    after = os.stat(script)
    assert after.st_ino != before  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(after.st_mode) == 0o750
    assert sorted(os.listdir(work_dir)) == ["run.sh"]  # no temporary left
    fresh = work_dir / "fresh.txt"
    await call(runtime, "write", {"path": "fresh.txt", "content": "x"}, work_dir)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~umask


async def test_a_failed_write_leaves_the_old_file_whole(
    runtime: wingspan.Runtime, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = work_dir / "keep.txt"
    target.write_text("original\n")

    def disk_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)  # the disk fails half-way through the write
    out = await call(runtime, "write", {"path": "keep.txt", "content": "new"}, work_dir)
    assert out.is_error and "cannot write 'keep.txt': Input/output error" in out.content
    assert target.read_text() == "original\n"
    assert sorted(os.listdir(work_dir)) == ["keep.txt"]


# --- edit -------------------------------------------------------------------------------------


async def test_edit_replaces_one_exact_match_and_shows_a_diff(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "m.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")
    out = await call(runtime, "edit", {"path": "m.py", "old_string": "return 1",
                                       "new_string": "return 10"}, work_dir)
    assert not out.is_error
    assert out.content.startswith("Edited m.py: 1 replacement.")
    assert "-    return 1\n+    return 10" in out.content
    assert (work_dir / "m.py").read_text() == (
        "def f():\n    return 10\n\ndef g():\n    return 2\n"
    )


async def test_edit_refuses_ambiguous_missing_and_no_op_edits(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    source = "x = 1\nprint(x)\nx = 1\n"
    (work_dir / "m.py").write_text(source)
    twice = await call(runtime, "edit", {"path": "m.py", "old_string": "x = 1",
                                         "new_string": "x = 2"}, work_dir)
    assert twice.is_error and "occurs 2 times" in twice.content and "lines 1, 3" in twice.content
    missing = await call(runtime, "edit", {"path": "m.py", "old_string": "prnt(x)",
                                           "new_string": "print(y)"}, work_dir)
    assert missing.is_error and "not found" in missing.content
    assert "     2\tprint(x)" in missing.content  # the closest line, numbered
    same = await call(runtime, "edit", {"path": "m.py", "old_string": "x", "new_string": "x"},
                      work_dir)
    assert same.is_error and "the same" in same.content
    prefixed = await call(runtime, "edit", {"path": "m.py", "old_string": "     2\tprint(x)",
                                            "new_string": "print(y)"}, work_dir)
    assert "line-number prefixes" in prefixed.content
    assert (work_dir / "m.py").read_text() == source  # nothing changed
    every = await call(runtime, "edit", {"path": "m.py", "old_string": "x = 1",
                                         "new_string": "x = 2", "replace_all": True}, work_dir)
    assert "2 replacements" in every.content
    assert (work_dir / "m.py").read_text() == "x = 2\nprint(x)\nx = 2\n"


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"a = 1\r\nb = 2\r\n", b"a = 1\r\nb = 3\r\nc = 4\r\n"),  # CRLF kept
        ("\ufeffé = 1\nb = 2\n".encode(), "\ufeffé = 1\nb = 3\nc = 4\n".encode()),  # BOM kept
        ("é = 1\nb = 2\n".encode("utf-16"), "é = 1\nb = 3\nc = 4\n".encode("utf-16")),
        ("é = 1\nb = 2\n".encode("latin-1"), "é = 1\nb = 3\nc = 4\n".encode("latin-1")),
    ],
)
async def test_edit_preserves_line_endings_and_encoding(
    runtime: wingspan.Runtime, work_dir: Path, encoded: bytes, expected: bytes
) -> None:
    (work_dir / "f.txt").write_bytes(encoded)
    out = await call(runtime, "edit", {"path": "f.txt", "old_string": "b = 2\n",
                                       "new_string": "b = 3\nc = 4\n"}, work_dir)
    assert not out.is_error, out.content
    assert (work_dir / "f.txt").read_bytes() == expected


async def test_concurrent_edits_of_one_file_keep_both_changes(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "f.txt").write_text("".join(f"v{i} = 0\n" for i in range(20)))
    edits = [
        call(runtime, "edit", {"path": "f.txt", "old_string": f"v{i} = 0",
                               "new_string": f"v{i} = 1"}, work_dir)
        for i in range(20)
    ]
    outcomes = await asyncio.gather(*edits)
    assert not any(o.is_error for o in outcomes)
    assert (work_dir / "f.txt").read_text() == "".join(f"v{i} = 1\n" for i in range(20))
