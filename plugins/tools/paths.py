"""Confinement: every path a tool touches is resolved inside the session's work dir.

Implemented once, here, and used by every file tool. A path is joined to the work dir,
every symbolic link in it is resolved (``os.path.realpath``, which applies ``..`` after
resolving the link before it, as the kernel does), and the result must be the work dir or
below it. Walks over a tree never descend into symlinked directories and skip symlinked
files whose target lies outside.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from wingspan import ToolContext, ToolError

#: Version-control folders that glob and grep never enter.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", ".jj", "_darcs", "CVS", ".fossil"})


class WorkDir:
    """The work dir of one call, and the paths inside it."""

    __slots__ = ("_prefix", "root")

    def __init__(self, work_dir: Path | str) -> None:
        #: The work dir with every symlink resolved.
        self.root = os.path.realpath(work_dir)
        self._prefix = self.root.rstrip(os.sep) + os.sep

    @classmethod
    def of(cls, context: ToolContext) -> WorkDir:
        """The context's work dir. :raises ToolError: when the session has none."""
        return cls(context.require_work_dir())

    def contains(self, real_path: str) -> bool:
        """Whether an already resolved path is the work dir or inside it."""
        return real_path == self.root or real_path.startswith(self._prefix)

    def resolve(self, path: str) -> str:
        """The absolute, symlink-free form of ``path`` (relative to the work dir, or
        absolute inside it).

        :raises ToolError: when it is malformed or resolves outside the work dir.
        """
        if "\0" in path:
            raise ToolError(f"the path {path!r} contains a NUL character; pass a real path")
        if path.startswith("~"):
            raise ToolError(
                f"the path {path!r} starts with '~', which is not expanded: use a path "
                f"relative to the work dir {self.root}"
            )
        joined = os.path.join(self.root, path or ".")
        real = os.path.realpath(joined)
        if self.contains(real):
            if self._unresolved(real):
                raise ToolError(
                    f"the path {path!r} goes through a symbolic link loop; use a path that "
                    "does not pass through it"
                )
            return real
        if self.contains(os.path.normpath(joined)):
            raise ToolError(
                f"the path {path!r} goes through a symbolic link that points outside the work "
                f"dir {self.root}; tools may only touch files inside it"
            )
        raise ToolError(
            f"the path {path!r} is outside the work dir {self.root}; tools may only touch "
            "files inside it: use a path relative to the work dir (without leading '..')"
        )

    def _unresolved(self, real: str) -> bool:
        """Whether ``realpath`` left a symlink or ``..`` in ``real``: it stops resolving
        at a link loop and returns the rest as it was."""
        current = self.root
        for part in real[len(self._prefix):].split(os.sep) if real != self.root else ():
            if part in ("..", "."):
                return True
            current = os.path.join(current, part)
            try:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    return True
            except (FileNotFoundError, NotADirectoryError):
                return False  # the rest does not exist yet, so holds no link
            except OSError:
                return True
        return False

    def show(self, real_path: str) -> str:
        """How a path inside the work dir is shown to the model: relative to the work dir."""
        if real_path == self.root:
            return "."
        return real_path[len(self._prefix):] if real_path.startswith(self._prefix) else real_path

    def walk_files(
        self, top: str, stop: threading.Event, *, max_depth: int | None = None
    ) -> Iterator[os.DirEntry[str]]:
        """Every file under the resolved directory ``top``, depth first, names sorted.

        Skips :data:`VCS_DIRS`, does not descend into symlinked directories (no loops, no
        duplicates), skips symlinked files that point outside the work dir and unreadable
        directories, and ends early once ``stop`` is set. ``max_depth`` 1 lists ``top``'s own
        files only.
        """
        stack: list[tuple[str, int]] = [(top, 1)]
        while stack:
            if stop.is_set():
                return
            directory, depth = stack.pop()
            try:
                with os.scandir(directory) as scan:
                    entries = sorted(scan, key=_name)
            except OSError:
                continue
            subdirs: list[str] = []
            for entry in entries:
                try:
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        if self.contains(target) and os.path.isfile(target):
                            yield entry
                    elif entry.is_dir(follow_symlinks=False):
                        if entry.name not in VCS_DIRS and (max_depth is None or depth < max_depth):
                            subdirs.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        yield entry
                except OSError:
                    continue
            stack.extend((path, depth + 1) for path in reversed(subdirs))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name
