"""Confinement: every path a tool touches is resolved inside the session's work dir.

Implemented once, here, and used by every file tool. Checking a path string and then
opening it is a race: between the two, another process (a command the agent started, say)
can swap a directory for a symbolic link to somewhere else. So nothing is opened by its
full path. The work dir is opened at the start of each lookup, and each component of a
path is looked up relative to the directory opened before it, with ``O_NOFOLLOW``: a
directory is opened (``O_DIRECTORY | O_NOFOLLOW``) and becomes the base of the next step,
and a symbolic link is read (``readlink``) and its target resolved the same way, under the
same rules, ``..`` applying after the link as the kernel does. What was checked is therefore
what is opened: a directory swapped after its lookup is still the directory that was looked
up, and a link that appears in its place is never followed by the kernel.

Walks over a tree (:meth:`WorkDir.walk_files`) open each directory relative to its parent's
descriptor the same way, never descend into symlinked directories, and skip symlinked files
whose target lies outside.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from wingspan import ToolContext, ToolError, encodable

#: Version-control folders that glob and grep never enter.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", ".jj", "_darcs", "CVS", ".fossil"})
#: Symbolic links followed in one path at most (the kernel's limit), beyond it a loop.
MAX_HOPS = 40
#: Lookups retried when a component changes kind between two system calls.
MAX_RETRIES = 100

#: Directories opened to look names up in them: never through a link; ``O_PATH`` (Linux)
#: needs no read permission and cannot block.
_LOOKUP = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)
#: Directories opened to list them.
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: Files opened to read them: a FIFO or a device must not block the open.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_DIR, _FILE, _MISSING = "dir", "file", "missing"
#: A byte that is not ASCII as :func:`display` shows it.
_SHOWN_BYTE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def display(name: str) -> str:
    """A file name (or any text) as the model sees it: :func:`wingspan.encodable` (bytes
    that are not UTF-8, which ``os.fsdecode`` keeps as surrogates, shown as ``\\xNN``)."""
    return encodable(name)


def undisplay(name: str) -> str:
    """The file name that :func:`display` shows as ``name``: each ``\\xNN`` of a byte
    that is not ASCII back to the surrogate ``os.fsdecode`` makes of it. So a name the
    model copies from glob's (or ls's) output finds the file."""
    return _SHOWN_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), name)


def kind_of(mode: int) -> str:
    """What a file that is neither a regular file nor a directory is, for messages."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


class Location:
    """Where a path leads inside the work dir: an open directory and a name in it.

    Holds file descriptors until closed (it is a context manager). ``name`` is ``"."``
    for the work dir itself; ``missing`` are the directories between ``directory`` and
    ``name`` that do not exist yet (see :meth:`make_parents`).
    """

    __slots__ = ("_fds", "directory", "missing", "name", "real", "target")

    def __init__(
        self, fds: list[int], directory: int, name: str, missing: tuple[str, ...],
        target: int | None, real: str,
    ) -> None:
        self._fds = fds
        #: A descriptor of the directory that holds ``name``.
        self.directory = directory
        self.name = name
        self.missing = missing
        #: A lookup descriptor of the target when it is a directory, else ``None``.
        self.target = target
        #: The absolute, symlink-free path (for locks and messages; never opened).
        self.real = real

    def __enter__(self) -> Location:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def is_dir(self) -> bool:
        return self.target is not None

    def lstat(self) -> os.stat_result | None:
        """The target's own status (a link is not followed), ``None`` when it is missing."""
        if self.missing:
            return None
        try:
            return os.stat(self.name, dir_fd=self.directory, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_directory(self) -> int:
        """A new descriptor for listing the target directory (the caller closes it)."""
        assert self.target is not None
        return os.open(".", _LIST, dir_fd=self.target)

    def open_file(self) -> tuple[int, os.stat_result]:
        """Open the target for reading, without following a link and without blocking,
        and return the descriptor (the caller closes it) with its status. A regular file
        is switched back to blocking reads; anything else is returned as it is, for the
        caller to refuse.

        :raises OSError: ``FileNotFoundError`` when the file does not exist.
        """
        if self.missing:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        try:
            fd = os.open(self.name, _READ, dir_fd=self.directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # became a link after it was looked up
                raise OSError(
                    errno.ELOOP, "it was replaced by a symbolic link while being opened; "
                    "try again"
                ) from None
            raise
        try:
            status = os.fstat(fd)
            if stat.S_ISREG(status.st_mode):
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, status

    def make_parents(self) -> None:
        """Create the missing directories, each inside the one before (never through a
        link), and make the last one :attr:`directory`.

        :raises OSError: when one cannot be created or is not a directory.
        """
        for name in self.missing:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=self.directory)
            fd = os.open(name, _LOOKUP, dir_fd=self.directory)
            self._fds.append(fd)
            self.directory = fd
        self.missing = ()


class WalkEntry:
    """A file found by :meth:`WorkDir.walk_files`: its path, and how to open it."""

    __slots__ = ("_directory", "_link", "_work_dir", "name", "path")

    def __init__(
        self, work_dir: WorkDir, directory: int, name: str, path: str, link: bool
    ) -> None:
        self._work_dir = work_dir
        self._directory = directory
        self._link = link
        #: The file's name and its path as found (a link's own path, not its target's).
        self.name = name
        self.path = path

    def stat(self) -> os.stat_result:
        """The file's status (a link's target's, resolved inside the work dir)."""
        if self._link:
            with self._work_dir.locate(self._work_dir.relative(self.path)) as location:
                status = location.lstat()
                if status is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
                return status
        return os.stat(self.name, dir_fd=self._directory, follow_symlinks=False)

    def open_regular(self) -> int | None:
        """A descriptor to read the file, or ``None`` when it is no longer a regular file
        (a FIFO or device is skipped, never waited on). Valid during the walk only.

        :raises OSError: when it cannot be opened.
        """
        if self._link:
            with self._work_dir.locate(self._work_dir.relative(self.path)) as location:
                fd, status = location.open_file()
        else:
            fd = os.open(self.name, _READ, dir_fd=self._directory)
            status = os.fstat(fd)
            if stat.S_ISREG(status.st_mode):
                os.set_blocking(fd, True)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return None
        return fd


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
        absolute inside it). For messages and locks: open through :meth:`locate`.

        :raises ToolError: when it is malformed or resolves outside the work dir.
        """
        with self.locate(path) as location:
            return location.real

    def locate(self, path: str) -> Location:
        """Resolve ``path`` one component at a time from the work dir's descriptor (see
        the module's docstring) and return where it leads, with the descriptors to reach it.

        :raises ToolError: when it is malformed or resolves outside the work dir.
        """
        if "\0" in path:
            raise ToolError(f"the path {path!r} contains a NUL character; pass a real path")
        if path.startswith("~"):
            raise ToolError(
                f"the path {path!r} starts with '~', which is not expanded: use a path "
                f"relative to the work dir {display(self.root)}"
            )
        try:
            os.fsencode(path)
        except UnicodeEncodeError:
            raise ToolError(
                f"the path {display(path)!r} cannot be encoded as a file name; use a path "
                "of the work dir as glob shows it"
            ) from None
        try:
            root = os.open(self.root, _LOOKUP)
        except OSError as exc:
            raise ToolError(
                f"cannot open the work dir {display(self.root)}: {exc.strerror or exc}"
            ) from None
        fds = [root]
        try:
            return self._walk(path, root, fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _walk(self, path: str, root: int, fds: list[int]) -> Location:
        # The chain from the work dir: (name, lookup descriptor or None, kind). Names below
        # a missing component or a file are missing too, as os.path.realpath has it.
        chain: list[tuple[str, int | None, str]] = []
        pending = deque(path.split(os.sep))
        #: Set while a lexical position lies above the work dir (an absolute path, or
        #: ``..`` at the top): only the way back down into the work dir is allowed.
        outside: str | None = os.sep if path.startswith(os.sep) else None
        hops = 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if outside is not None:
                # Above or beside the work dir, on the way back into it (or not): nothing
                # out there is opened, only its real path computed, and the walk goes on
                # from the work dir's descriptor as soon as that path is inside it.
                if part == "..":
                    outside = os.path.dirname(outside)
                else:
                    outside = os.path.realpath(os.path.join(outside, part))
                if self.contains(outside):
                    pending.extendleft(reversed(outside[len(self.root):].split(os.sep)))
                    outside = None
                continue
            if part == "..":
                if chain:
                    chain.pop()
                else:
                    outside = os.path.dirname(self.root)
                continue
            parent = chain[-1] if chain else ("", root, _DIR)
            if parent[2] != _DIR:
                chain.append((part, None, _MISSING))
                continue
            assert parent[1] is not None
            kind, fd, target = self._step(parent[1], part, path)
            if kind == _MISSING and "\\x" in part and (raw := undisplay(part)) != part:
                # Not there by that name: perhaps it is a name as display() shows it.
                found = self._step(parent[1], raw, path)
                if found[0] != _MISSING:
                    part, (kind, fd, target) = raw, found
            if target is not None:
                hops += 1
                if hops > MAX_HOPS:
                    raise ToolError(
                        f"the path {path!r} goes through a symbolic link loop; use a path "
                        "that does not pass through it"
                    )
                if target.startswith(os.sep):
                    chain.clear()
                    outside = os.sep
                pending.extendleft(reversed(target.split(os.sep)))
                continue
            if fd is not None:
                fds.append(fd)
            chain.append((part, fd, kind))
        if outside is not None:
            raise self._outside(path)
        real = os.path.join(self.root, *(name for name, _, _ in chain))
        if not chain:
            return Location(fds, root, ".", (), root, real)
        name, fd, _ = chain[-1]
        directory, at = root, 0
        for index, (_, parent_fd, _) in enumerate(chain[:-1]):
            if parent_fd is None:
                break
            directory, at = parent_fd, index + 1
        missing = tuple(entry[0] for entry in chain[at:-1])
        return Location(fds, directory, name, missing, fd, real)

    def _step(self, parent: int, name: str, path: str) -> tuple[str, int | None, str | None]:
        """Look ``name`` up in the directory ``parent``: ``(kind, descriptor of a directory,
        target of a link)``."""
        for _ in range(MAX_RETRIES):
            try:
                status = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return _MISSING, None, None
            except OSError as exc:
                raise ToolError(
                    f"cannot look up {display(name)!r} of {display(path)!r} in the work dir: "
                    f"{exc.strerror or exc}"
                ) from None
            try:
                if stat.S_ISLNK(status.st_mode):
                    return _FILE, None, os.readlink(name, dir_fd=parent)
                if stat.S_ISDIR(status.st_mode):
                    return _DIR, os.open(name, _LOOKUP, dir_fd=parent), None
            except OSError as exc:
                # Changed kind between the two calls (a directory swapped for a link, a link
                # for a file): look again; whatever it is then is checked again.
                if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.ENOENT):
                    continue
                raise ToolError(
                    f"cannot open {display(name)!r} of {display(path)!r} in the work dir: "
                    f"{exc.strerror or exc}"
                ) from None
            return _FILE, None, None
        raise ToolError(
            f"the path {display(path)!r} keeps changing while it is looked up in the work "
            "dir; try again"
        )

    def _outside(self, path: str) -> ToolError:
        if self.contains(os.path.normpath(os.path.join(self.root, path or "."))):
            return ToolError(
                f"the path {display(path)!r} goes through a symbolic link that points outside "
                f"the work dir {display(self.root)}; tools may only touch files inside it"
            )
        return ToolError(
            f"the path {display(path)!r} is outside the work dir {display(self.root)}; tools "
            "may only touch files inside it: use a path relative to the work dir (without "
            "leading '..')"
        )

    def relative(self, real_path: str) -> str:
        """A path inside the work dir relative to it (``"."`` for the work dir itself)."""
        if real_path == self.root:
            return "."
        return real_path[len(self._prefix):] if real_path.startswith(self._prefix) else real_path

    def show(self, real_path: str) -> str:
        """How a path inside the work dir is shown to the model: relative to the work dir."""
        return display(self.relative(real_path))

    def walk_files(
        self, top: Location, stop: threading.Event, *, max_depth: int | None = None
    ) -> Iterator[WalkEntry]:
        """Every file under the located directory ``top``, depth first, names sorted.

        Opens each directory relative to its parent's descriptor without following links.
        Skips :data:`VCS_DIRS`, does not descend into symlinked directories (no loops, no
        duplicates), skips symlinked files that point outside the work dir (or at anything
        but a regular file) and unreadable directories, and ends early once ``stop`` is set.
        ``max_depth`` 1 lists ``top``'s own files only. An entry can be opened while the walk
        is at it.
        """
        if stop.is_set():
            return
        try:
            first = top.open_directory()
        except OSError:
            return
        # The open directories from ``top`` down: (descriptor, path, depth, subdirectories
        # still to enter).
        frames: list[tuple[int, str, int, Iterator[str]]] = []
        try:
            yield from self._files_of(first, top.real, 1, max_depth, frames, stop)
            while frames:
                if stop.is_set():
                    return
                fd, path, depth, subdirs = frames[-1]
                name = next(subdirs, None)
                if name is None:
                    frames.pop()
                    os.close(fd)
                    continue
                try:
                    child = os.open(name, _LIST, dir_fd=fd)
                except OSError:  # gone, unreadable, or swapped for a link meanwhile
                    continue
                yield from self._files_of(
                    child, os.path.join(path, name), depth + 1, max_depth, frames, stop
                )
        finally:
            for fd, *_ in frames:
                os.close(fd)

    def _files_of(
        self, fd: int, path: str, depth: int, max_depth: int | None,
        frames: list[tuple[int, str, int, Iterator[str]]], stop: threading.Event,
    ) -> Iterator[WalkEntry]:
        """The files of the open directory ``fd``; pushes its frame (which owns ``fd``)."""
        try:
            with os.scandir(fd) as scan:
                entries = sorted(scan, key=_name)
        except OSError:
            os.close(fd)
            return
        subdirs: list[str] = []
        frames.append((fd, path, depth, iter(subdirs)))
        for entry in entries:
            if stop.is_set():
                return
            try:
                if entry.is_symlink():
                    if self._links_to_a_file(os.path.join(path, entry.name)):
                        yield WalkEntry(self, fd, entry.name, os.path.join(path, entry.name),
                                        True)
                elif entry.is_dir(follow_symlinks=False):
                    if entry.name not in VCS_DIRS and (max_depth is None or depth < max_depth):
                        subdirs.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    yield WalkEntry(self, fd, entry.name, os.path.join(path, entry.name), False)
            except OSError:
                continue

    def _links_to_a_file(self, path: str) -> bool:
        try:
            with self.locate(self.relative(path)) as location:
                status = location.lstat()
        except ToolError:
            return False
        return status is not None and stat.S_ISREG(status.st_mode)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name
