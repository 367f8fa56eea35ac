"""glob and grep: matching, ordering, bounds, skipping, and their error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import wingspan
from wingspan.plugins.tools.search import GlobMatcher, expand_braces

from .conftest import call


def make_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for index, (name, content) in enumerate(sorted(files.items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        os.utime(path, (1_000_000 + index, 1_000_000 + index))


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),
        ("**/*.py", "a.py", True),
        ("**/*.py", "src/deep/a.py", True),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/a.py", True),
        ("src/**/*.py", "lib/src/a.py", False),
        ("src/**", "src/x/y", True),
        ("**/test_?.py", "t/test_1.py", True),
        ("**/test_?.py", "t/test_12.py", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("*.{ts,tsx}", "a.tsx", True),
        ("*.{ts,tsx}", "a.js", False),
        ("a*b", "a/b", False),
        ("**/.env", ".env", True),
        ("a+b(c).txt", "a+b(c).txt", True),
    ],
)
def test_glob_patterns_have_real_double_star_semantics(
    pattern: str, path: str, matches: bool
) -> None:
    assert GlobMatcher(pattern).matches(path) is matches


def test_braces_expand_nested() -> None:
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("{x}") == ["{x}"]


async def test_glob_lists_newest_first_skipping_vcs_folders(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    make_tree(work_dir, {"a.py": "", "src/b.py": "", "src/c/d.py": "", ".git/e.py": "",
                         "node/.hg/f.py": "", "g.txt": ""})
    out = await call(runtime, "glob", {"pattern": "**/*.py"}, work_dir)
    assert out.content.splitlines() == ["src/c/d.py", "src/b.py", "a.py"]
    sub = await call(runtime, "glob", {"pattern": "*.py", "path": "src"}, work_dir)
    assert sub.content == "src/b.py"
    none = await call(runtime, "glob", {"pattern": "*.rs"}, work_dir)
    assert not none.is_error and "No files match" in none.content and "**/" in none.content


async def test_glob_stops_at_1000_and_says_how_many_more(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    for i in range(1003):
        (work_dir / f"f{i:04d}.txt").write_text("")
    out = await call(runtime, "glob", {"pattern": "*.txt"}, work_dir)
    lines = out.content.splitlines()
    assert len(lines) == 1001
    assert "3 more files matched but not shown (1003 in all)" in lines[-1]


async def test_glob_errors_are_actionable(runtime: wingspan.Runtime, work_dir: Path) -> None:
    (work_dir / "f.txt").write_text("")
    up = await call(runtime, "glob", {"pattern": "../*"}, work_dir)
    assert up.is_error and "set `path`" in up.content
    not_dir = await call(runtime, "glob", {"pattern": "*", "path": "f.txt"}, work_dir)
    assert not_dir.is_error and "is a file" in not_dir.content
    absolute = await call(runtime, "glob", {"pattern": f"{work_dir}/*.txt"}, work_dir)
    assert absolute.content == "f.txt"


async def test_grep_searches_every_text_file_and_skips_binaries(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    make_tree(work_dir, {
        "Makefile": "build:\n\tcc TODO\n",
        "src/a.weird-extension": "x\nTODO: one\r\n",
        "src/b.py": "# todo lower\n",
        "blob.bin": b"TODO\0\0\0",
        ".git/config": "TODO",
    })
    out = await call(runtime, "grep", {"pattern": "TODO"}, work_dir)
    assert out.content.splitlines() == [
        "Makefile:2: \tcc TODO", "src/a.weird-extension:2: TODO: one"
    ]
    ignore_case = await call(runtime, "grep", {"pattern": "(?i)^# todo"}, work_dir)
    assert ignore_case.content == "src/b.py:1: # todo lower"
    only_py = await call(runtime, "grep", {"pattern": "o", "include": "*.{py,txt}"}, work_dir)
    assert only_py.content == "src/b.py:1: # todo lower"
    by_path = await call(runtime, "grep", {"pattern": "TODO", "include": "src/*"}, work_dir)
    assert by_path.content == "src/a.weird-extension:2: TODO: one"
    one_file = await call(runtime, "grep", {"pattern": "cc", "path": "Makefile"}, work_dir)
    assert one_file.content == "Makefile:2: \tcc TODO"


async def test_grep_matches_line_by_line(runtime: wingspan.Runtime, work_dir: Path) -> None:
    (work_dir / "f.txt").write_text("foo\nbar\nfoo bar\n")
    out = await call(runtime, "grep", {"pattern": r"foo\s+bar"}, work_dir)
    assert out.content == "f.txt:3: foo bar"  # not "foo\nbar" across lines
    anchored = await call(runtime, "grep", {"pattern": "^bar$"}, work_dir)
    assert anchored.content == "f.txt:2: bar"


async def test_grep_output_is_bounded_with_a_count_of_the_rest(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    (work_dir / "a.txt").write_text("hit\n" * 200)
    (work_dir / "b.txt").write_text("hit " + "x" * 1000 + "\n" + "hit\n" * 99)
    out = await call(runtime, "grep", {"pattern": "hit"}, work_dir)
    lines = out.content.splitlines()
    assert len(lines) == 251
    assert lines[200].startswith("b.txt:1: hit xxx") and "[line cut:" in lines[200]
    assert "50 more matching lines not shown (300 in 2 files)" in lines[-1]


async def test_grep_reads_big_files_in_blocks(runtime: wingspan.Runtime, work_dir: Path) -> None:
    filler = "x" * 99 + "\n"
    (work_dir / "big.log").write_text(filler * 60_000 + "needle\n" + filler * 10 + "needle")
    out = await call(runtime, "grep", {"pattern": "needle"}, work_dir)
    assert out.content.splitlines() == ["big.log:60001: needle", "big.log:60012: needle"]


async def test_grep_errors_are_actionable(runtime: wingspan.Runtime, work_dir: Path) -> None:
    bad = await call(runtime, "grep", {"pattern": "foo(bar"}, work_dir)
    assert bad.is_error and "invalid regular expression 'foo(bar'" in bad.content
    assert "backslash" in bad.content
    missing = await call(runtime, "grep", {"pattern": "x", "path": "nowhere"}, work_dir)
    assert missing.is_error and "no file or directory" in missing.content
    none = await call(runtime, "grep", {"pattern": "zzz"}, work_dir)
    assert not none.is_error and none.content == "No matches for 'zzz' in the work dir."
