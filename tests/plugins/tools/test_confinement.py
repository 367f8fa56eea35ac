"""Confinement, proven on generated paths and symlink chains: nothing outside the work dir
is read, written, listed or searched, and paths inside keep working."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wingspan
from wingspan.plugins.tools.paths import WorkDir

from .conftest import build_runtime, call

SECRET = "TOP-SECRET-OUTSIDE"
RUNTIME = build_runtime()  # built once: hypothesis examples must not pay for it each time

#: Path segments: plain names (some exist), dots, and the names of the generated links.
SEGMENTS = st.sampled_from(
    ["..", ".", "a", "b", "sub", "file.txt", "new", "l0", "l1", "l2", "l3", "outside",
     "secret.txt", ""]
)
PATHS = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(SEGMENTS, min_size=0, max_size=7),
)
#: A link target: relative (possibly climbing out, possibly through other links) or absolute.
TARGETS = st.one_of(
    st.lists(st.sampled_from(["..", "sub", "l0", "l1", "l2", "l3", "outside", "file.txt",
                              "secret.txt", "."]), min_size=1, max_size=4).map("/".join),
    st.sampled_from(["{outside}", "{outside}/secret.txt", "{root}", "/", "/etc"]),
)


class Tree:
    """A temporary root with ``work/`` (files, a subdir and four generated symlinks, which
    may chain into each other and out of the work dir) and ``outside/`` holding a secret."""

    def __init__(self, targets: list[str]) -> None:
        self._temporary = tempfile.TemporaryDirectory(prefix="wingspan-confine-")
        root = Path(self._temporary.name)
        self.work = root / "work"
        self.outside = root / "outside"
        (self.work / "sub").mkdir(parents=True)
        self.outside.mkdir()
        (self.work / "file.txt").write_text("inside\n")
        (self.work / "sub" / "file.txt").write_text("inside too\n")
        (self.outside / "secret.txt").write_text(SECRET + "\n")
        for index, target in enumerate(targets):
            link = self.work / ("sub" if index % 2 else "") / f"l{index}"
            os.symlink(target.format(outside=self.outside, root=root), link)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, str]:
        found = {}
        for directory, _, names in os.walk(self.outside.parent / "outside"):
            for name in names:
                found[os.path.join(directory, name)] = Path(directory, name).read_text()
        return found

    def close(self) -> None:
        self._temporary.cleanup()


def run(coroutine: object) -> wingspan.ToolOutcome:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


@settings(max_examples=150)
@given(targets=st.lists(TARGETS, min_size=4, max_size=4), path=PATHS)
def test_resolve_never_leaves_the_work_dir(targets: list[str], path: str) -> None:
    tree = Tree(targets)
    try:
        work_dir = WorkDir(tree.work)
        try:
            resolved = work_dir.resolve(path)
        except wingspan.ToolError as exc:
            refusal = str(exc)
            assert "work dir" in refusal or "symbolic link loop" in refusal
            return
        real = os.path.realpath(resolved)
        assert real == resolved
        assert os.path.commonpath([real, str(tree.work)]) == str(tree.work)
    finally:
        tree.close()


@settings(max_examples=60)
@given(targets=st.lists(TARGETS, min_size=4, max_size=4), path=PATHS)
def test_no_tool_reads_writes_lists_or_searches_outside(targets: list[str], path: str) -> None:
    tree = Tree(targets)
    work = tree.work

    async def every_tool() -> list[wingspan.ToolOutcome]:
        return [
            await call(RUNTIME, "read", {"path": path}, work),
            await call(RUNTIME, "grep", {"pattern": "SECRET", "path": path}, work),
            await call(RUNTIME, "glob", {"pattern": "**/*", "path": path}, work),
            await call(RUNTIME, "glob", {"pattern": "**/secret*"}, work),
            await call(RUNTIME, "write", {"path": path + "/w.txt" if path else "w.txt",
                                          "content": "written"}, work),
            await call(RUNTIME, "write", {"path": path, "content": "written"}, work),
            await call(RUNTIME, "edit", {"path": path, "old_string": "TOP",
                                         "new_string": "written"}, work),
        ]

    try:
        outcomes = asyncio.run(every_tool())
        for outcome in outcomes:
            assert SECRET not in outcome.content
            assert "Traceback" not in outcome.content
        assert tree.snapshot() == tree.before  # nothing outside was written or changed
    finally:
        tree.close()


@settings(max_examples=60)
@given(parts=st.lists(st.sampled_from(["a", "b", "c.txt", "."]), min_size=1, max_size=5))
def test_paths_inside_work(parts: list[str]) -> None:
    tree = Tree(["sub", "l0", "file.txt", "../sub"])  # links that stay inside
    try:
        path = "/".join(parts)
        write = run(call(RUNTIME, "write", {"path": path + "/f.txt", "content": "x\n"},
                         tree.work))
        assert not write.is_error, write.content
        read = run(call(RUNTIME, "read", {"path": path + "/f.txt"}, tree.work))
        assert read.content == "     1\tx"
        through_links = run(call(RUNTIME, "read", {"path": "l0/l3/../file.txt"}, tree.work))
        assert through_links.content == "     1\tinside"
    finally:
        tree.close()


async def test_absolute_paths_inside_are_accepted(work_dir: Path) -> None:
    (work_dir / "a.txt").write_text("abs\n")
    out = await call(RUNTIME, "read", {"path": str(work_dir / "a.txt")}, work_dir)
    assert out.content == "     1\tabs"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside/secret.txt", "is outside the work dir"),
        ("/etc/passwd", "is outside the work dir"),
        ("escape/secret.txt", "symbolic link that points outside"),
        ("~/notes", "starts with '~'"),
        ("a\0b", "NUL"),
    ],
)
async def test_refusals_say_why(work_dir: Path, path: str, message: str) -> None:
    os.symlink(work_dir.parent / "outside", work_dir / "escape")
    for tool, extra in (("read", {}), ("write", {"content": "x"}), ("grep", {"pattern": "x"})):
        out = await call(RUNTIME, tool, {"path": path, **extra}, work_dir)
        assert out.is_error and message in out.content, (tool, out.content)


async def test_walks_skip_links_that_leave_and_do_not_follow_directory_links(
    work_dir: Path,
) -> None:
    (work_dir / "real").mkdir()
    (work_dir / "real" / "x.txt").write_text("needle\n")
    os.symlink(work_dir.parent / "outside" / "secret.txt", work_dir / "leak.txt")
    os.symlink(work_dir.parent / "outside", work_dir / "leakdir")
    os.symlink(work_dir / "real", work_dir / "again")  # inside, but a loop-prone dir link
    os.symlink(work_dir / "real" / "x.txt", work_dir / "alias.txt")  # inside: kept
    grep = await call(RUNTIME, "grep", {"pattern": "needle|SECRET"}, work_dir)
    assert grep.content.splitlines() == ["alias.txt:1: needle", "real/x.txt:1: needle"]
    glob = await call(RUNTIME, "glob", {"pattern": "**/*"}, work_dir)
    assert sorted(glob.content.splitlines()) == ["alias.txt", "real/x.txt"]
