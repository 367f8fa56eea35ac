"""The reaper's helper process (see :mod:`.reaper`), run as a script by the process it guards.

It reads ``+PGID`` and ``-PGID`` lines from stdin, a pipe whose write end only the guarded
process holds, until end-of-file: the guarded process has ended, however it died. Then it
kills every process group still registered with SIGKILL, and exits.

A few modules of the standard library only: it starts in milliseconds, stays small, and
never imports wingspan (nor anything the server's environment points at).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    """Read the registrations until end-of-file, then kill every group still registered."""
    os.chdir("/")  # hold no directory of the server's (its mount stays unmountable)
    _close_inherited()
    _make_undumpable()
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            break
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if pgid <= 1:  # 0 is the reaper's own group, 1 init's: never meant
                continue
            if line.startswith(b"+"):
                groups.add(pgid)
            elif line.startswith(b"-"):
                groups.discard(pgid)
    for pgid in groups:
        with contextlib.suppress(OSError):  # gone already
            os.killpg(pgid, signal.SIGKILL)


def _close_inherited() -> None:
    """Close every descriptor above stderr. Only one that someone made inheritable (a socket
    handed over by systemd, say) can be here, and it is not the reaper's to keep open."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            numbers = [int(name) for name in os.listdir(folder)]
        except (OSError, ValueError):
            continue
        for fd in numbers:
            if fd > 2:
                with contextlib.suppress(OSError):  # the listing's own, closed already
                    os.close(fd)
        return
    os.closerange(3, 1024)


def _make_undumpable() -> None:
    """Linux: close ``/proc/<pid>/fd`` to the commands (they run as the same user), so none
    can open the pipe's write end there and keep the reaper from ever seeing end-of-file."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


if __name__ == "__main__":
    main()
