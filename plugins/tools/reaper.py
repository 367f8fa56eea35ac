"""The reaper: bash's commands die with the process that started them, even on SIGKILL.

bash kills a command's process group when the call ends, times out or is cancelled. None of
that runs when the process is killed (``kill -9``, the out-of-memory killer), and the
commands live on: each is in a session of its own, which nothing else reaches.
``prctl(PR_SET_PDEATHSIG)`` would reach bash itself, not what bash starts.

So a process that runs commands has a small helper, its reaper (:mod:`._reaper`, run as a
script), started at its first bash call, in a session of its own. The helper's stdin is a
pipe whose only write end is in the process it guards, which writes ``+PGID`` when a
command's group starts and ``-PGID`` once it has killed it: one small write each. When the
pipe reaches end-of-file — the guarded process has ended, however it died — the helper kills
every group still registered with SIGKILL, and exits: it never outlives that process.

The helper runs with ``-I -S`` (nothing from the environment, no site packages) and an empty
environment (the server's keys are not in its ``/proc/<pid>/environ``); on Linux it makes
itself non-dumpable, so the commands, which run as the same user, cannot open its pipe
through ``/proc``; it keeps none of the server's descriptors.

A forked child closes its copy of the parent's pipe (the parent's reaper must see
end-of-file when the parent dies) and starts a reaper of its own for its commands. A reaper
that cannot be started is logged as a warning and the commands run unguarded, as before. A
reaper that was killed is noticed at the next write and replaced by one told of every group
still running.

bash registers a command's group before the command runs: bash waits on a pipe until
then (see ``bash._spawn``), and exits without running it if the process died first. Not
covered: a command that leaves its group (``setsid``), as on a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("wingspan.tools")

#: Seconds before starting a reaper is tried again after it failed to start (or exited
#: with an error of its own, rather than being killed).
RETRY_AFTER = 60.0


class Reaper:
    """Kills registered process groups when this process ends (see the module's docstring).

    Thread-safe, and cheap: registering writes a few bytes to a pipe.

    :param program: the command that runs the helper (default: :mod:`._reaper`, by the
        running interpreter); for tests and unusual installations.
    """

    def __init__(self, program: Sequence[str] | None = None) -> None:
        self._program = tuple(program) if program is not None else None
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._owner = os.getpid()
        #: The write end of the helper's stdin, and the helper's pid, while it runs.
        self._fd: int | None = None
        self._helper: int | None = None
        #: When a start may be tried next.
        self._next_start = 0.0

    @property
    def helper_pid(self) -> int | None:
        """The pid of the running helper of this process, ``None`` before the first command
        (or when it could not be started)."""
        return self._helper if self._owner == os.getpid() else None

    @property
    def groups(self) -> frozenset[int]:
        """The process groups it guards now."""
        with self._lock:
            return frozenset(self._groups) if self._owner == os.getpid() else frozenset()

    def register(self, pgid: int) -> None:
        """Guard the process group ``pgid`` (a command just started): it is killed if this
        process ends before :meth:`unregister`. Starts the helper the first time."""
        with self._lock:
            if self._owner != os.getpid():
                self._forget()
            self._groups.add(pgid)
            if self._fd is None:
                self._start()  # tells it every group, this one included
            else:
                self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        """Stop guarding ``pgid``: its group was killed (call it before the group's leader
        is reaped, while its pid cannot be given to another process)."""
        with self._lock:
            if self._owner != os.getpid():
                self._forget()
                return
            self._groups.discard(pgid)
            if self._fd is not None:
                self._send(b"-%d\n" % pgid)

    def after_fork_in_child(self) -> None:
        """Let go of the parent's helper in a forked child (see ``os.register_at_fork``)."""
        self._lock = threading.Lock()  # another thread may have held it during the fork
        self._forget()

    def _forget(self) -> None:
        # The descriptor and the groups are the parent's: close our copy of its pipe (the
        # parent's reaper must see end-of-file when the parent ends) and start afresh.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = self._helper = None
        self._groups = set()
        self._owner = os.getpid()
        self._next_start = 0.0

    def _send(self, line: bytes, *, restart: bool = True) -> None:
        assert self._fd is not None
        try:
            os.write(self._fd, line)
        except BlockingIOError:  # 64 KiB of unread lines: the helper is stopped or stuck
            log.warning(
                "the reaper (pid %s) is not reading; a command may outlive this process if "
                "it is killed", self._helper,
            )
        except OSError as exc:  # the helper died
            status = self._discard_helper()
            if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status):
                # It failed by itself, and would again: not restarted at every call.
                self._next_start = time.monotonic() + RETRY_AFTER
                log.warning("the reaper exited with status %d; commands run unguarded",
                            os.WEXITSTATUS(status))
            else:  # killed: start another, told of every group
                log.warning("the reaper is gone (%s); starting another", exc.strerror or exc)
            if restart and self._groups:
                self._start()

    def _start(self) -> None:
        now = time.monotonic()
        if now < self._next_start:
            return
        try:
            self._helper, self._fd = _spawn(self._program or _default_program())
        except (OSError, ValueError, NotImplementedError) as exc:
            self._next_start = now + RETRY_AFTER
            log.warning(
                "could not start the reaper that kills bash commands when this process dies "
                "(%s); commands run unguarded: one may outlive this process if it is killed",
                exc,
            )
            return
        if self._groups:
            self._send(b"".join(b"+%d\n" % pgid for pgid in self._groups), restart=False)

    def _discard_helper(self) -> int | None:
        """Close the pipe of a dead helper and reap it: its wait status, when known."""
        status = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._helper is not None:
            with contextlib.suppress(ChildProcessError):  # someone else reaped it
                pid, status = os.waitpid(self._helper, os.WNOHANG)
                if pid == 0:  # still exiting
                    status = None
        self._fd = self._helper = None
        return status


def _default_program() -> tuple[str, ...]:
    """The helper, :mod:`._reaper`, as a script. -I: no ``PYTHON*`` variables, no user
    site, not its directory on ``sys.path``; -S: no site packages. It needs three modules of
    the standard library, and starts in a few milliseconds."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper.py")
    if not sys.executable:
        raise ValueError("no Python interpreter to run it with (sys.executable is empty)")
    if not os.path.isfile(script):
        raise ValueError(f"{script} is not a file")
    return (sys.executable, "-I", "-S", script)


def _spawn(program: tuple[str, ...]) -> tuple[int, int]:
    """Start the helper with a new pipe as its stdin: ``(pid, write end)``."""
    read, write = os.pipe()  # neither end is inherited by anything else this process starts
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, read, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        try:
            # Its own session: not in this process's group, so a signal sent to the group
            # (Ctrl-C, a supervisor's kill) leaves it to do its work.
            pid = os.posix_spawn(program[0], program, {}, file_actions=actions, setsid=True,
                                 setsigmask=())
        except NotImplementedError:  # no POSIX_SPAWN_SETSID here: its own group, then
            pid = os.posix_spawn(program[0], program, {}, file_actions=actions, setpgroup=0,
                                 setsigmask=())
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    # Never block the event loop on it; a full pipe is reported instead (see _send).
    os.set_blocking(write, False)
    return pid, write


# The reaper of this process. Module state, as the process is: the helper watches this
# process's life, so there is one per process whatever runtimes it builds; a forked child
# drops it for its own.
_shared: Reaper | None = None
_shared_lock = threading.Lock()


def shared() -> Reaper:
    """This process's reaper (built at the first call; its helper starts at the first
    :meth:`Reaper.register`)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                reaper = Reaper()
                os.register_at_fork(after_in_child=reaper.after_fork_in_child)
                _shared = reaper
    return _shared
